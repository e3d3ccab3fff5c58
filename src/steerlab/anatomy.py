"""Where a decoder keeps its blocks, found structurally rather than by a table of class names."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from steerlab.errors import SteerlabError
from steerlab.router import find_router, get_path

# Paths tried before the structural search; the search covers anything else that holds its blocks in a ModuleList.
KNOWN_LAYER_PATHS = (
    "model.layers",
    "model.language_model.layers",
    "language_model.model.layers",
    "transformer.h",
    "gpt_neox.layers",
    "model.decoder.layers",
    "transformer.layers",
)


@dataclass(frozen=True)
class Anatomy:
    """How to reach a model's decoder blocks, its width and, for Mixture-of-Experts, its routers (block index ->
    the module that scores the experts; steerlab.router finds them)."""

    layer_path: str
    layers: nn.ModuleList = field(repr=False)
    hidden_size: int
    n_layers: int
    model_type: str
    routers: dict[int, nn.Module] = field(default_factory=dict, repr=False)

    @property
    def is_moe(self) -> bool:
        return bool(self.routers)


def _text_config(config: Any) -> Any:
    getter = getattr(config, "get_text_config", None)
    return getter() if callable(getter) else config


def _config_int(config: Any, *names: str) -> int | None:
    for name in names:
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    return None


def _structural_search(model: nn.Module, n_layers: int | None) -> str | None:
    """The longest ModuleList of identical blocks whose length matches the configured layer count."""
    best: tuple[int, str] | None = None
    for name, module in model.named_modules():
        if not isinstance(module, nn.ModuleList) or len(module) == 0:
            continue
        if len({type(block) for block in module}) != 1:
            continue
        if n_layers is not None and len(module) != n_layers:
            continue
        if best is None or len(module) > best[0]:
            best = (len(module), name)
    return best[1] if best else None


def find_anatomy(model: nn.Module, layer_path: str | None = None, router_path: str | None = None) -> Anatomy:
    """Blocks at `layer_path` (else found structurally); routers at `router_path` inside each block (e.g.
    "mlp.gate"; else found structurally). A router_path that matches no block is an error."""
    config = _text_config(getattr(model, "config", None))
    n_cfg = _config_int(config, "num_hidden_layers", "n_layer", "num_layers")
    hidden = _config_int(config, "hidden_size", "n_embd", "d_model")
    path = layer_path or _find_layer_path(model, n_cfg)
    layers = get_path(model, path) if path else None
    if not isinstance(layers, nn.ModuleList):
        raise SteerlabError(
            f"could not find the decoder blocks of {type(model).__name__}: looked for a ModuleList at "
            f"{', '.join(KNOWN_LAYER_PATHS)} and for any ModuleList of {n_cfg} identical blocks. "
            "Pass the path explicitly, e.g. load_model(..., layer_path='model.layers')."
        )
    if hidden is None:
        raise SteerlabError(
            f"could not read the hidden size of {type(model).__name__} from its config "
            "(looked for hidden_size, n_embd, d_model)."
        )
    return Anatomy(
        layer_path=path or "",
        layers=layers,
        hidden_size=hidden,
        n_layers=len(layers),
        model_type=str(getattr(config, "model_type", "unknown")),
        routers=_find_routers(layers, hidden, router_path),
    )


def _find_layer_path(model: nn.Module, n_layers: int | None) -> str | None:
    for path in KNOWN_LAYER_PATHS:
        found = get_path(model, path)
        if isinstance(found, nn.ModuleList) and (n_layers is None or len(found) == n_layers):
            return path
    return _structural_search(model, n_layers)


def _find_routers(layers: nn.ModuleList, hidden: int, router_path: str | None) -> dict[int, nn.Module]:
    routers: dict[int, nn.Module] = {}
    for index, block in enumerate(layers):
        router = find_router(block, hidden, router_path)
        if router is not None:
            routers[index] = router
    if router_path is not None and not routers:
        raise SteerlabError(
            f"router_path {router_path!r} names no module with a [n_experts, {hidden}] weight in any block; "
            "give the path inside one decoder block, e.g. 'mlp.gate'."
        )
    return routers


def fingerprint(model: nn.Module) -> str:
    """A hash of the architecture's parameter names and shapes: equal for fine-tunes of one base, not across bases."""
    digest = hashlib.sha256()
    config = _text_config(getattr(model, "config", None))
    digest.update(str(getattr(config, "model_type", "")).encode())
    for name, param in sorted(model.state_dict().items()):
        digest.update(f"{name}:{tuple(param.shape)};".encode())
    return digest.hexdigest()[:16]
