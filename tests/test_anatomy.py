"""Anatomy is found structurally for every supported architecture; unknown models get a clear error."""

from __future__ import annotations

import pytest
import torch
from tiny import ARCHS, MOE_ARCHS, H, L, tiny_model
from torch import nn

from steerlab import SteerlabError, wrap_model
from steerlab.anatomy import find_anatomy


@pytest.mark.parametrize("arch", ARCHS)
def test_anatomy_of_every_architecture(arch: str) -> None:
    model = tiny_model(arch)
    anatomy = model.anatomy
    assert (anatomy.hidden_size, anatomy.n_layers) == (H, L)
    assert anatomy.layers is model.hf_model.get_submodule(anatomy.layer_path)
    assert anatomy.is_moe == (arch in MOE_ARCHS)
    if anatomy.is_moe:
        router = next(iter(anatomy.routers.values()))
        assert any(p.shape[0] == 4 for p in router.parameters()), "router must score the 4 experts"
    assert len(model.fingerprint) == 16


def test_fingerprint_differs_across_architectures_and_not_across_seeds() -> None:
    assert tiny_model("llama", seed=0).fingerprint == tiny_model("llama", seed=1).fingerprint
    assert tiny_model("llama").fingerprint != tiny_model("qwen2").fingerprint


class _Odd(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))


def test_unknown_model_error_names_what_was_looked_for() -> None:
    with pytest.raises(SteerlabError, match=r"model\.layers.*layer_path="):
        find_anatomy(_Odd())


def test_explicit_layer_path() -> None:
    model = tiny_model("llama")
    wrapped = wrap_model(model.hf_model, model.tokenizer, layer_path="model.layers")
    assert wrapped.anatomy.layer_path == "model.layers"
    with pytest.raises(SteerlabError, match="could not find"):
        wrap_model(model.hf_model, model.tokenizer, layer_path="model.nothing")


def test_moe_router_is_called_with_steered_input() -> None:
    """Steering block N changes what block N+1's router sees: routing follows the steered residual stream."""
    from steerlab import Vector, steer

    model = tiny_model("qwen3_moe")
    seen: list[torch.Tensor] = []
    router = model.anatomy.routers[1]
    handle = router.register_forward_hook(lambda _m, args, _o: seen.append(args[0].clone()))
    ids = torch.tensor([[3, 4, 5, 6]])
    try:
        with torch.inference_mode():
            model.hf_model(ids)
            with steer(model, Vector({0: torch.ones(H) * 3}), layers=[0]):
                model.hf_model(ids)
    finally:
        handle.remove()
    assert not torch.allclose(seen[0], seen[1])
