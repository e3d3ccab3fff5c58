"""The fluency anchor of preference training (tiny random model): its KL is zero unsteered, positive steered, checked
against an independent per-row computation, and a heavy weight keeps training from moving away from unsteered."""

from __future__ import annotations

import math

import pytest
import torch
from tiny import FAST_PREFERENCE as FAST
from tiny import preference_pairs as _pairs
from tiny import tiny_model

from steerlab import Vector, extract, steer
from steerlab.errors import SteerlabError
from steerlab.preference_anchor import anchor_kl, build_anchor


@pytest.fixture(scope="module")
def tiny():
    return tiny_model("llama")


def _vector(scale: float) -> Vector:
    gen = torch.Generator().manual_seed(5)
    return Vector({la: scale * torch.randn(32, generator=gen) for la in (1, 2)})


def _independent_kl(model, prompt: list[int], continuation: list[int], vector: Vector) -> float:
    """KL(unsteered || steered) per continuation token from two plain forwards; the vector steers the prompt's last
    token and the continuation (the positions after the cached prompt block), as the anchor's scoring does."""
    ids = torch.tensor([prompt + continuation[:-1]])
    with torch.no_grad():
        plain = torch.log_softmax(model.hf_model(ids).logits[0].float(), -1)
        hooks = []
        for layer, direction in vector.directions.items():

            def add(_m, _a, out, d=direction):
                hidden = out[0] if isinstance(out, tuple) else out
                shift = torch.zeros_like(hidden)
                shift[:, len(prompt) - 1 :] = d
                return (hidden + shift, *out[1:]) if isinstance(out, tuple) else hidden + shift

            hooks.append(model.hf_model.model.layers[layer].register_forward_hook(add))
        try:
            steered = torch.log_softmax(model.hf_model(ids).logits[0].float(), -1)
        finally:
            for h in hooks:
                h.remove()
    span = slice(len(prompt) - 1, len(prompt) - 1 + len(continuation))
    return float((plain[span].exp() * (plain[span] - steered[span])).sum(-1).mean())


def test_anchor_kl_is_zero_unsteered_and_matches_an_independent_computation(tiny) -> None:
    anchor = build_anchor(tiny, _pairs(3), count=1, tokens=5, chat=False)
    assert anchor is not None and int(anchor.mask.sum()) >= 1
    with torch.no_grad():
        assert float(anchor_kl(tiny, anchor)) == pytest.approx(0.0, abs=1e-6)
        vec = _vector(2.0)
        with steer(tiny, vec, scale=1.0, positions="all"):
            got = float(anchor_kl(tiny, anchor))
    target = anchor.batch.pairs[0].positive
    prompt = [*target.prefix, target.suffix[0]]
    assert got > 0
    assert got == pytest.approx(_independent_kl(tiny, prompt, list(target.completion), vec), rel=1e-4, abs=1e-6)


def test_anchor_kl_has_a_gradient(tiny) -> None:
    anchor = build_anchor(tiny, _pairs(4), count=2, tokens=4, chat=False)
    assert anchor is not None
    directions = {la: t.clone().requires_grad_(True) for la, t in _vector(1.0).directions.items()}
    with steer(tiny, Vector(directions), scale=1.0, positions="all"):
        anchor_kl(tiny, anchor).backward()
    assert all(float(t.grad.abs().sum()) > 0 for t in directions.values())  # type: ignore[union-attr]


def test_a_heavy_anchor_keeps_the_trained_vector_near_unsteered(tiny) -> None:
    pairs = _pairs(15)
    opts = {**FAST, "epochs": 4, "lr": 0.05, "dose": 2.0}
    free = extract(tiny, pairs, layers=[1, 2], method="preference", chat=False, seed=1, fluency_weight=0.0, **opts)
    held = extract(tiny, pairs, layers=[1, 2], method="preference", chat=False, seed=1, fluency_weight=1000.0, **opts)
    training = held.card.metadata["training"]
    assert training["fluency_weight"] == 1000.0
    assert training["anchor_kl"] <= training["init_anchor_kl"] + 1e-9  # the best step never drifts further
    assert math.isnan(free.card.metadata["training"]["anchor_kl"] or math.nan)  # no anchor, nothing measured
    assert all(isinstance(e["anchor_kl"], float) for e in training["history"])


def test_bad_anchor_settings_are_clear_errors(tiny) -> None:
    with pytest.raises(SteerlabError, match="fluency_weight"):
        extract(tiny, _pairs(6), layers=[1], method="preference", chat=False, fluency_weight=-1.0, **FAST)
