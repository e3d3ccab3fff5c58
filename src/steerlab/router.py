"""Mixture-of-Experts routers, found structurally, and the two things steerlab does inside them.

A router is the module of a decoder block that scores the experts: a submodule named `gate` or `router` (or the one
at `router_path`) holding a 2-D weight [n_experts, hidden]. Every transformers MoE router computes its logits as
`F.linear(tokens, weight[, bias])` and then selects experts its own way (softmax or sigmoid, grouped or not, top-k,
correction biases). steerlab assumes nothing past that linear: no number of experts, no top-k, no output shape.

- `RoutedTokens` adds per-row offsets to that linear's result, inside the router, so that selection and routing
  weights both follow: steerlab.steering's router pre-hook hands the router its input wrapped in this tensor
  subclass, which carries the offsets through the router's reshapes and casts to its first F.linear with the
  router's weight shape, and returns plain logits + offsets from there (so only the ops before that linear pay
  for Python dispatch).
- `RouterLogits` reads that linear's result (the logits), for expert extraction: a torch function mode, active
  only while the router runs.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from steerlab.errors import SteerlabError

ROUTER_NAMES = ("gate", "router")


def get_path(root: nn.Module, path: str) -> Any:
    """The attribute at a dotted path, or None."""
    obj: Any = root
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def router_weight(module: nn.Module, hidden: int) -> nn.Parameter | None:
    """The router's expert-scoring weight: its first 2-D parameter [n_experts >= 2, hidden]."""
    for param in module.parameters():
        if param.ndim == 2 and param.shape[1] == hidden and param.shape[0] >= 2:
            return param
    return None


def find_router(block: nn.Module, hidden: int, path: str | None = None) -> nn.Module | None:
    """The block's router: the module at `path`, else the shallowest submodule named gate/router with a weight
    [n_experts, hidden]. A dense MLP's gate is `gate_proj`, never `gate`, so dense blocks have none."""
    if path is not None:
        found = get_path(block, path)
        return found if isinstance(found, nn.Module) and router_weight(found, hidden) is not None else None
    candidates = [
        (name.count("."), name, module)
        for name, module in block.named_modules()
        if name.rsplit(".", 1)[-1].lower() in ROUTER_NAMES
        and not isinstance(module, nn.ModuleList)
        and router_weight(module, hidden) is not None
    ]
    return min(candidates, key=lambda c: (c[0], c[1]))[2] if candidates else None


def n_experts(router: nn.Module, hidden: int) -> int:
    weight = router_weight(router, hidden)
    if weight is None:
        raise SteerlabError(f"{type(router).__name__} has no [n_experts, {hidden}] weight; it is not a router.")
    return int(weight.shape[0])


def unreachable(router: nn.Module, weight_shape: torch.Size) -> None:
    raise SteerlabError(
        f"router {type(router).__name__} computed no F.linear with its [{weight_shape[0]}, {weight_shape[1]}] "
        "weight from its input, so steerlab cannot reach its logits. Pass router_path= to load_model to name the "
        "module that scores the experts."
    )


def _linear_weight(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if func is not F.linear:
        return None
    return args[1] if len(args) > 1 else kwargs.get("weight")


class _RouterLinear(TorchFunctionMode):
    """Finds the first F.linear with the router's weight shape while the router runs; `seen` says it happened."""

    def __init__(self, weight_shape: torch.Size) -> None:
        super().__init__()
        self.weight_shape = weight_shape
        self.seen = False

    def on_logits(self, logits: torch.Tensor) -> torch.Tensor:
        return logits

    def __torch_function__(self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        weight = _linear_weight(func, args, kwargs)
        if not self.seen and isinstance(weight, torch.Tensor) and weight.shape == self.weight_shape:
            self.seen = True
            return self.on_logits(out)
        return out

    def finish(self, router: nn.Module) -> None:
        if not self.seen:
            unreachable(router, self.weight_shape)


class Offsets:
    """What one router call adds: `offsets` [1, E] for every token or [B, E] per batch row (tokens in row-major
    order, as every MoE block flattens [B, T, H] before routing); `seen` once they were added."""

    def __init__(self, weight_shape: torch.Size, offsets: torch.Tensor) -> None:
        self.weight_shape = weight_shape
        self.offsets = offsets
        self.seen = False

    def finish(self, router: nn.Module) -> None:
        if not self.seen:
            unreachable(router, self.weight_shape)


class RoutedTokens(torch.Tensor):
    """A router's input carrying `Offsets` to its logits (see the module's docstring). Use `RoutedTokens.wrap`."""

    offsets: Offsets

    @staticmethod
    def wrap(tokens: torch.Tensor, offsets: Offsets) -> RoutedTokens:
        wrapped = tokens.as_subclass(RoutedTokens)
        wrapped.offsets = offsets
        return wrapped

    @classmethod
    def __torch_function__(cls, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        carried = next((a.offsets for a in args if isinstance(a, RoutedTokens)), None)
        with torch._C.DisableTorchFunctionSubclass():
            out = func(*args, **kwargs)
        if carried is None or carried.seen:
            return out
        weight = _linear_weight(func, args, kwargs)
        if isinstance(weight, torch.Tensor) and weight.shape == carried.weight_shape:
            carried.seen = True
            return add_offsets(out.as_subclass(torch.Tensor), carried.offsets)
        if isinstance(out, torch.Tensor) and not isinstance(out, RoutedTokens):
            return RoutedTokens.wrap(out, carried)  # a reshape or cast on the way to the linear
        return out


class RouterLogits(_RouterLinear):
    """Keeps the router's logits of the current call."""

    def __init__(self, weight_shape: torch.Size) -> None:
        super().__init__(weight_shape)
        self.logits: torch.Tensor | None = None

    def on_logits(self, logits: torch.Tensor) -> torch.Tensor:
        self.logits = logits
        return logits


def add_offsets(logits: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    experts = offsets.shape[-1]
    if logits.shape[-1] != experts:
        raise SteerlabError(f"router logits score {logits.shape[-1]} experts, the expert offsets {experts}.")
    offsets = offsets.to(dtype=logits.dtype, device=logits.device)
    if offsets.shape[0] == 1:
        return logits + offsets[0]
    rows = offsets.shape[0]
    if logits.numel() % (rows * experts):
        raise SteerlabError(
            f"router logits {tuple(logits.shape)} cannot be split into {rows} batch rows; per-row expert "
            "steering needs every row's tokens routed together."
        )
    return (logits.reshape(rows, -1, experts) + offsets[:, None, :]).reshape(logits.shape)


def selected_experts(output: Any, logits: torch.Tensor, top_k: int | None) -> torch.Tensor:
    """[N, k] expert indices the router chose for its N tokens: the integer tensor it returns (transformers 5
    routers return their indices), else the top-k of its logits when the block selects outside the router."""
    tokens, experts = logits.reshape(-1, logits.shape[-1]).shape
    found = [t for t in (output if isinstance(output, tuple) else (output,)) if isinstance(t, torch.Tensor)]
    indices = [t for t in found if not t.is_floating_point() and t.numel() % tokens == 0 and t.numel() >= tokens]
    if indices:
        chosen = indices[-1].reshape(tokens, -1)
        if int(chosen.max()) < experts and int(chosen.min()) >= 0:
            return chosen
    if top_k is None:
        raise SteerlabError(
            "the router returned no expert indices and the config names no num_experts_per_tok (or top_k): "
            "steerlab cannot tell which experts it selected."
        )
    return logits.reshape(tokens, experts).topk(top_k, dim=-1).indices
