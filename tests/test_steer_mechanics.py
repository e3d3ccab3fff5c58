"""Hook mechanics on tiny random models of every supported architecture."""

from __future__ import annotations

import pytest
import torch
from tiny import ARCHS, H, L, tiny_model

from steerlab import Kit, KitEntry, SteerlabError, Vector, steer
from steerlab.tokens import pad_batch


def _vector(seed: int = 1, layers: range = range(L)) -> Vector:
    gen = torch.Generator().manual_seed(seed)
    return Vector({la: torch.randn(H, generator=gen) for la in layers})


def _hidden(model, ids: torch.Tensor) -> tuple[torch.Tensor, ...]:
    with torch.inference_mode():
        return model.hf_model(ids, output_hidden_states=True).hidden_states


IDS = torch.tensor([[5, 9, 14, 3, 22, 7]])


@pytest.mark.parametrize("arch", ARCHS)
def test_hook_adds_exactly_scale_times_v_at_block_output(arch: str) -> None:
    model = tiny_model(arch)
    vec, layer, scale = _vector(), 1, 1.5
    base = _hidden(model, IDS)
    with steer(model, vec, scale=scale, layers=[layer]):
        steered = _hidden(model, IDS)
    for i in range(layer + 1):
        assert torch.equal(base[i], steered[i]), f"hidden_states[{i}] changed before block {layer}"
    delta = steered[layer + 1] - base[layer + 1]
    expected = (scale * vec.directions[layer]).expand_as(delta)
    torch.testing.assert_close(delta, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
def test_logits_bit_identical_after_exit_and_after_exception(arch: str) -> None:
    model = tiny_model(arch)
    with torch.inference_mode():
        before = model.hf_model(IDS).logits
        with steer(model, _vector(), scale=3.0):
            during = model.hf_model(IDS).logits
        after = model.hf_model(IDS).logits
        with pytest.raises(RuntimeError, match="boom"), steer(model, _vector(), scale=3.0):
            raise RuntimeError("boom")
        after_error = model.hf_model(IDS).logits
    assert not torch.equal(before, during)
    assert torch.equal(before, after)
    assert torch.equal(before, after_error)
    assert all(not layer._forward_hooks for layer in model.layers)
    assert not model.hf_model._forward_pre_hooks


def _row_logits(model, seqs: list[list[int]], what, side: str = "left") -> list[torch.Tensor]:
    ids, mask, pos, offsets = pad_batch(seqs, 0, side, model.device)  # type: ignore[arg-type]
    with torch.inference_mode(), steer(model, what):
        logits = model.hf_model(input_ids=ids, attention_mask=mask, position_ids=pos).logits
    return [logits[r, off : off + len(seq)] for r, (seq, off) in enumerate(zip(seqs, offsets, strict=True))]


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("side", ["left", "right"])
def test_per_row_steering_matches_each_row_alone(arch: str, side: str) -> None:
    model = tiny_model(arch)
    seqs = [[5, 9, 14, 3, 22, 7], [11, 4, 8], [30, 31, 2, 6, 40]]
    kit = Kit([KitEntry(_vector(2), 0.7, [0, 2]), KitEntry(_vector(3), -1.2, [1], mode="add_keep_norm")])
    rows = [_vector(1) * 2.0, None, kit]
    batched = _row_logits(model, seqs, rows, side)
    for seq, what, got in zip(seqs, rows, batched, strict=True):
        alone = torch.tensor([seq])
        with torch.inference_mode():
            if what is None:
                want = model.hf_model(alone).logits[0]
            else:
                with steer(model, what):
                    want = model.hf_model(alone).logits[0]
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_nested_contexts_add_up() -> None:
    model = tiny_model("llama")
    vec = _vector()
    with torch.inference_mode():
        with steer(model, vec, scale=1.0), steer(model, vec, scale=0.5):
            nested = model.hf_model(IDS).logits
        with steer(model, vec, scale=1.5):
            single = model.hf_model(IDS).logits
    torch.testing.assert_close(nested, single, atol=1e-5, rtol=1e-5)


def test_ablate_removes_the_direction_at_that_block() -> None:
    model = tiny_model("qwen2")
    vec, layer = _vector(), 2
    with steer(model, vec, layers=[layer], mode="ablate"):
        steered = _hidden(model, IDS)
    unit = vec.directions[layer] / vec.directions[layer].norm()
    base_proj = (_hidden(model, IDS)[layer + 1] @ unit).abs().max()
    assert base_proj > 1e-3
    assert (steered[layer + 1] @ unit).abs().max() < 1e-4


def test_add_keep_norm_keeps_each_token_norm() -> None:
    model = tiny_model("gemma3")
    vec, layer = _vector(), 1
    base = _hidden(model, IDS)[layer + 1]
    with steer(model, vec, scale=5.0, layers=[layer], mode="add_keep_norm"):
        steered = _hidden(model, IDS)[layer + 1]
    torch.testing.assert_close(steered.norm(dim=-1), base.norm(dim=-1), atol=1e-4, rtol=1e-4)
    assert not torch.allclose(steered, base)


def _decode_step_logits(model, positions: str | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Prefill unsteered, then one cached decode step, steering only in the step; returns (prefill, step) logits."""
    from transformers import DynamicCache

    vec = _vector() * 2.0
    ctx = steer(model, vec, positions=positions) if positions else None  # type: ignore[arg-type]
    with torch.inference_mode():
        cache = DynamicCache(config=model.hf_model.config)
        if ctx:
            with ctx:
                prefill = model.hf_model(IDS, cache=cache, use_cache=True).logits
                step = model.hf_model(torch.tensor([[17]]), cache=cache, use_cache=True).logits
        else:
            prefill = model.hf_model(IDS, cache=cache, use_cache=True).logits
            step = model.hf_model(torch.tensor([[17]]), cache=cache, use_cache=True).logits
    return prefill, step


def test_positions_prompt_and_generated_split_prefill_from_decode() -> None:
    model = tiny_model("llama")
    base_prefill, base_step = _decode_step_logits(model, None)
    gen_prefill, gen_step = _decode_step_logits(model, "generated")
    prompt_prefill, prompt_step = _decode_step_logits(model, "prompt")
    assert torch.equal(gen_prefill, base_prefill)
    assert not torch.allclose(gen_step, base_step)
    assert not torch.allclose(prompt_prefill, base_prefill)
    assert not torch.allclose(prompt_step, base_step)  # the cache holds steered prompt keys


def test_padding_positions_are_not_steered() -> None:
    model = tiny_model("llama")
    ids, mask, pos, _ = pad_batch([[5, 9, 14, 3], [11, 4]], 0, "left", model.device)

    def block0_output(vec: Vector | None) -> torch.Tensor:
        with torch.inference_mode():
            if vec is None:
                out = model.hf_model(input_ids=ids, attention_mask=mask, position_ids=pos, output_hidden_states=True)
            else:
                with steer(model, vec, layers=[0]):
                    out = model.hf_model(
                        input_ids=ids, attention_mask=mask, position_ids=pos, output_hidden_states=True
                    )
        return out.hidden_states[1]

    base, steered = block0_output(None), block0_output(_vector())
    assert torch.equal(base[1, :2], steered[1, :2]), "left padding of row 1 was steered"
    assert not torch.equal(base[1, 2:], steered[1, 2:])


def test_wrong_hidden_size_and_layers_are_clear_errors() -> None:
    model = tiny_model("llama")
    wide = Vector({1: torch.randn(H * 2)})
    with pytest.raises(SteerlabError, match=f"hidden size {2 * H}.*has {H}"), steer(model, wide):
        pass
    deep = Vector({L + 3: torch.randn(H)})
    with pytest.raises(SteerlabError, match="blocks 0"), steer(model, deep):
        pass
    with pytest.raises(SteerlabError, match="only has layers"), steer(model, _vector(layers=range(2)), layers=[3]):
        pass
    with pytest.raises(SteerlabError, match="unknown steering mode"), steer(model, _vector(), mode="multiply"):  # type: ignore[arg-type]
        pass


def test_vector_made_for_another_architecture_is_refused() -> None:
    llama, qwen = tiny_model("llama"), tiny_model("qwen3")
    vec = _vector()
    vec.card.model_fingerprint, vec.card.base_model = llama.fingerprint, llama.name
    with steer(llama, vec):
        pass
    with pytest.raises(SteerlabError, match="architectures differ"), steer(qwen, vec):
        pass


def test_per_row_list_must_match_batch() -> None:
    model = tiny_model("llama")
    with pytest.raises(SteerlabError, match="built for 2 rows"), steer(model, [_vector(), None]):
        model.hf_model(torch.tensor([[1, 2], [3, 4], [5, 6]]))
    assert not model.hf_model._forward_pre_hooks


def test_a_card_calibrated_on_generated_tokens_steers_them_when_positions_are_left_out(tmp_path) -> None:
    """What a caller leaves out comes from the card: a vector calibrated on generated tokens leaves the prefill alone,
    after a save and load too; an explicit `positions` still wins."""
    model = tiny_model("llama")
    vec = _vector()
    vec.card.recommended_positions = "generated"
    vec = Vector.load(vec.save(tmp_path / "v.safetensors"))
    assert vec.card.recommended_positions == "generated"
    assert KitEntry.from_card(vec).positions == "generated"
    assert KitEntry.from_card(vec, positions="all").positions == "all"
    with torch.inference_mode():
        base = model.hf_model(IDS).logits
        with steer(model, vec, scale=2.0):
            left_out = model.hf_model(IDS).logits
        with steer(model, vec, scale=2.0, positions="all"):
            everywhere = model.hf_model(IDS).logits
    assert torch.equal(left_out, base)
    assert not torch.allclose(everywhere, base)


def test_a_card_with_unknown_positions_is_a_clear_error() -> None:
    vec = _vector()
    vec.card.recommended_positions = "middle"
    with pytest.raises(SteerlabError, match="unknown positions 'middle'"):
        KitEntry.from_card(vec)
