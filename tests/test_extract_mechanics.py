"""Extraction on tiny models: numbers checked against an independent plain-torch computation."""

from __future__ import annotations

import json

import pytest
import torch
from tiny import ARCHS, L, tiny_model

from steerlab import PairSet, SteerlabError, extract
from steerlab.extraction import MAX_HELD_OUT, held_out_indices, recommend_layers
from steerlab.methods import METHODS

RECORDS = [{"prompt": f"say {i}", "positive": f"yes good {i} fine", "negative": f"no bad {i}"} for i in range(16)]


def _independent_mean_diff(model, pairs: PairSet, layer: int) -> torch.Tensor:
    """One sequence at a time, no padding, read from output_hidden_states: nothing shared with steerlab.capture."""
    tok = model.tokenizer

    def read(prompt: str, completion: str) -> torch.Tensor:
        p_ids = tok(prompt, add_special_tokens=True)["input_ids"]
        c_ids = tok(completion, add_special_tokens=False)["input_ids"]
        with torch.inference_mode():
            hs = model.hf_model(torch.tensor([p_ids + c_ids]), output_hidden_states=True).hidden_states
        return hs[layer + 1][0, len(p_ids) :].mean(0)

    pos = torch.stack([read(p.positive.user, p.positive.completion) for p in pairs.pairs])
    neg = torch.stack([read(p.negative.user, p.negative.completion) for p in pairs.pairs])
    return pos.mean(0) - neg.mean(0)


@pytest.mark.parametrize("arch", ARCHS)
def test_mean_diff_equals_independent_computation(arch: str) -> None:
    model = tiny_model(arch)
    pairs = PairSet.from_records(RECORDS)
    vec = extract(model, pairs, batch_size=5, progress=False)
    assert vec.layers == list(range(L))
    # hidden_states[L] is after the final norm, so the independent check covers blocks 0..L-2.
    for layer in range(L - 1):
        want = _independent_mean_diff(model, pairs, layer)
        torch.testing.assert_close(vec.directions[layer], want, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("arch", ["llama", "gpt2", "mixtral"])
def test_left_and_right_padding_give_the_same_vector(arch: str) -> None:
    model = tiny_model(arch)
    pairs = PairSet.from_records(RECORDS)
    left = extract(model, pairs, batch_size=4, padding_side="left", progress=False)
    right = extract(model, pairs, batch_size=4, padding_side="right", progress=False)
    for layer in left.layers:
        torch.testing.assert_close(left.directions[layer], right.directions[layer], atol=1e-4, rtol=1e-4)


def test_batch_size_does_not_change_the_vector() -> None:
    model = tiny_model("qwen2")
    pairs = PairSet.from_records(RECORDS)
    one = extract(model, pairs, batch_size=1, progress=False)
    many = extract(model, pairs, batch_size=24, progress=False)
    for layer in one.layers:
        torch.testing.assert_close(one.directions[layer], many.directions[layer], atol=1e-5, rtol=1e-5)


def test_no_block_runs_past_the_deepest_layer_and_no_lm_head() -> None:
    model = tiny_model("llama")
    calls: list[str] = []
    handles = [model.layers[i].register_forward_hook(lambda *_a, i=i: calls.append(f"block{i}")) for i in range(L)]
    handles.append(model.hf_model.lm_head.register_forward_hook(lambda *_a: calls.append("lm_head")))
    try:
        vec = extract(model, PairSet.from_records(RECORDS), layers=[0, 1], progress=False)
    finally:
        for handle in handles:
            handle.remove()
    assert vec.layers == [0, 1]
    assert set(calls) == {"block0", "block1"}


def test_card_records_provenance_and_diagnostics() -> None:
    model = tiny_model("llama")
    pairs = PairSet.from_records(RECORDS)
    vec = extract(model, pairs, progress=False, name="tiny")
    card = vec.card
    assert (card.base_model, card.model_fingerprint, card.hidden_size) == (model.name, model.fingerprint, 32)
    assert (card.method, card.position, card.n_pairs, card.name) == ("mean_diff", "mean", 16, "tiny")
    assert card.dataset_hash == pairs.content_hash()
    assert set(card.diagnostics) == set(range(L))
    for diag in card.diagnostics.values():
        assert 0.0 <= diag["accuracy"] <= 1.0 and diag["norm"] > 0
    assert card.recommended_layers and set(card.recommended_layers) <= set(range(L))
    assert card.norms == pytest.approx(vec.norms())


def test_held_out_split_is_bounded() -> None:
    assert len(held_out_indices(10_000)) == MAX_HELD_OUT
    assert held_out_indices(14) == set()
    assert len(held_out_indices(15)) == 3
    assert len(held_out_indices(20)) == 4


def test_recommend_layers_is_a_window_around_the_most_separable_block() -> None:
    diag = {la: {"accuracy": 0.5, "separation": 0.1} for la in range(30)}
    for la in range(12, 19):
        diag[la] = {"accuracy": 1.0, "separation": 3.0 - abs(la - 15) * 0.2}
    assert recommend_layers(diag, 30) == list(range(12, 19))
    assert recommend_layers({}, 30) == []


@pytest.mark.parametrize("method", ["pca_diff", "probe"])
def test_other_methods_point_the_same_way_as_mean_diff(method: str) -> None:
    model = tiny_model("llama")
    pairs = PairSet.from_records(RECORDS)
    base = extract(model, pairs, progress=False)
    other = extract(model, pairs, method=method, progress=False)
    assert other.card.method == method
    for layer in base.layers:
        a, b = base.directions[layer], other.directions[layer]
        assert torch.dot(a, b) > 0
        # scaled to the mean difference's length along the direction
        torch.testing.assert_close(torch.dot(b, b), torch.dot(a, b / b.norm()) ** 2, atol=1e-3, rtol=1e-3)


def test_pca_diff_is_the_top_singular_vector_of_pair_differences() -> None:
    model = tiny_model("gpt2")
    pairs = PairSet.from_records(RECORDS)
    vec = extract(model, pairs, method="pca_diff", layers=[1], progress=False)
    tok = model.tokenizer

    def read(side) -> torch.Tensor:
        p_ids = tok(side.user)["input_ids"]
        c_ids = tok(side.completion, add_special_tokens=False)["input_ids"]
        with torch.inference_mode():
            hs = model.hf_model(torch.tensor([p_ids + c_ids]), output_hidden_states=True).hidden_states
        return hs[2][0, len(p_ids) :].mean(0)

    diffs = torch.stack([read(p.positive) - read(p.negative) for p in pairs.pairs]).double()
    top = torch.linalg.svd(diffs, full_matrices=False).Vh[0].float()
    got = vec.directions[1] / vec.directions[1].norm()
    assert abs(float(torch.dot(got, top))) > 0.999


def test_methods_registry_and_errors() -> None:
    assert {"mean_diff", "pca_diff", "probe"} <= set(METHODS)
    model = tiny_model("llama")
    pairs = PairSet.from_records(RECORDS)
    with pytest.raises(SteerlabError, match="unknown extraction method"):
        extract(model, pairs, method="magic", progress=False)
    with pytest.raises(SteerlabError, match="not blocks of"):
        extract(model, pairs, layers=[L + 1], progress=False)
    persona_record = {"prompt": "hi", "positive_instruction": "be kind", "negative_instruction": "be rude"}
    persona = PairSet.from_records([persona_record])
    with pytest.raises(SteerlabError, match="needs a completion"):
        extract(model, persona, position="mean", progress=False)


def test_pairset_formats_and_files(tmp_path) -> None:
    ab = {"question": "Q?\n (A) x\n (B) y", "answer_matching_behavior": "(B)", "answer_not_matching_behavior": "(A)"}
    persona = {"prompt": "Hi", "positive_instruction": "Be formal.", "negative_instruction": "Be casual."}
    sets = {
        "ab.jsonl": "\n".join(json.dumps(ab) for _ in range(3)),
        "persona.json": json.dumps([persona] * 2),
        "pairs.csv": "prompt,positive,negative\nhello,good,bad\nhey,nice,mean\n",
    }
    for name, text in sets.items():
        (tmp_path / name).write_text(text)
    ab_set = PairSet.load(tmp_path / "ab.jsonl")
    assert ab_set.kind == "ab" and ab_set.default_position == "answer"
    assert ab_set.pairs[0].positive.completion == "(B" and ab_set.pairs[0].negative.completion == "(A"
    persona_set = PairSet.load(tmp_path / "persona.json")
    assert persona_set.kind == "persona" and persona_set.pairs[0].positive.system == "Be formal."
    csv_set = PairSet.load(tmp_path / "pairs.csv")
    assert len(csv_set) == 2 and csv_set.pairs[1].negative.completion == "mean"
    (tmp_path / "bad.jsonl").write_text('{"text": "x"}\n')
    with pytest.raises(SteerlabError, match="unrecognised pair record"):
        PairSet.load(tmp_path / "bad.jsonl")
    with pytest.raises(SteerlabError, match="does not exist"):
        PairSet.load(tmp_path / "missing.jsonl")
    (tmp_path / "broken.json").write_text("[{")
    with pytest.raises(SteerlabError, match="not valid JSON"):
        PairSet.load(tmp_path / "broken.json")


def test_ab_pairs_are_read_at_the_answer_letter() -> None:
    model = tiny_model("llama")
    ab = [
        {"question": f"Q{i}?", "answer_matching_behavior": "(A)", "answer_not_matching_behavior": "(B)"}
        for i in range(5)
    ]
    vec = extract(model, PairSet.from_records(ab), layers=[0], progress=False)
    tok = model.tokenizer

    def last(text: str) -> torch.Tensor:
        with torch.inference_mode():
            hs = model.hf_model(torch.tensor([tok(text)["input_ids"]]), output_hidden_states=True).hidden_states
        return hs[1][0, -1]

    want = torch.stack([last(f"Q{i}?(A") - last(f"Q{i}?(B") for i in range(5)]).mean(0)
    torch.testing.assert_close(vec.directions[0], want, atol=1e-5, rtol=1e-5)
