"""method="preference" (BiPO): the gradient path, determinism, early stopping, the card, the frozen model; and on the
default model, that the trained vector moves held-out A/B answers more than mean-diff at the same relative dose."""

from __future__ import annotations

import json

import pytest
import torch
from tiny import FAST_PREFERENCE as FAST
from tiny import preference_pairs as _pairs
from tiny import tiny_model

from steerlab import PairSet, Vector, extract, steer
from steerlab.errors import SteerlabError
from steerlab.methods import get_method, method_names
from steerlab.pair_scoring import pair_logps, prepare, tokenize_pairs
from steerlab.preference import bipo_loss
from steerlab.residual_norms import measure_residual_norms


@pytest.fixture(scope="module")
def tiny():
    return tiny_model("llama")


def test_gradient_matches_central_finite_differences() -> None:
    model = tiny_model("llama")
    model.hf_model.double()
    batch = prepare(model, tokenize_pairs(model, _pairs(3), chat=False))
    with torch.no_grad():
        reference = pair_logps(model, batch)
    gen = torch.Generator().manual_seed(0)
    base = {layer: 0.3 * torch.randn(32, generator=gen, dtype=torch.float64) for layer in (1, 2)}
    directions = {k: t.clone().requires_grad_(True) for k, t in base.items()}
    loss, _ = bipo_loss(model, directions, batch, reference, beta=1.0)
    loss.backward()
    eps = 1e-3  # float32 parts of the model (rotary tables) make smaller steps noisy; the truncation error is ~eps^2
    for layer in (1, 2):
        for i in range(0, 32, 3):
            bumped = []
            for sign in (1.0, -1.0):
                probe = {k: t.clone() for k, t in base.items()}
                probe[layer][i] += sign * eps
                with torch.no_grad():
                    bumped.append(float(bipo_loss(model, probe, batch, reference, beta=1.0)[0]))
            numeric = (bumped[0] - bumped[1]) / (2 * eps)
            grad = directions[layer].grad
            assert grad is not None
            assert abs(float(grad[i]) - numeric) <= 1e-6 + 1e-3 * abs(numeric), (layer, i)
    assert all(float(d.grad.abs().sum()) > 0 for d in directions.values())  # type: ignore[union-attr]


def test_cached_scoring_equals_plain_forwards(tiny) -> None:
    """Padding, the cached prompt block and the shared A/B rows change nothing: each side scored alone agrees."""
    rows = [{"prompt": "Q" * (1 + 3 * i), "positive": "yes" * (i + 1), "negative": "n"} for i in range(4)]
    ab = [
        {"question": f"Pick {i}?", "answer_matching_behavior": "(A)", "answer_not_matching_behavior": "(B)"}
        for i in (1, 22)
    ]
    for pairs in (PairSet.from_records(rows), PairSet.from_records(ab)):
        tokenized = tokenize_pairs(tiny, pairs, chat=False)
        with torch.no_grad():
            batched = pair_logps(tiny, prepare(tiny, tokenized))
            for p, pair in enumerate(tokenized):
                for s, side in enumerate((pair.positive, pair.negative)):
                    ids = torch.tensor([[*side.prefix, *side.suffix]])
                    logprobs = torch.log_softmax(tiny.hf_model(input_ids=ids).logits[0].float(), dim=-1)
                    span = logprobs[-len(side.completion) :]
                    alone = span.gather(-1, torch.tensor(side.completion).unsqueeze(-1)).sum()
                    assert float(batched[p, s]) == pytest.approx(float(alone), abs=1e-4)
    assert len(prepare(tiny, tokenized).ids) == 2  # the two A/B pairs' letters share a row each


def test_bipo_margins_are_the_steered_shift_of_the_preference(tiny) -> None:
    batch = prepare(tiny, tokenize_pairs(tiny, _pairs(2), chat=False))
    vector = Vector({1: 0.2 * torch.ones(32)})
    with torch.no_grad():
        reference = pair_logps(tiny, batch)
        _, margins = bipo_loss(tiny, vector.directions, batch, reference, beta=1.0)
        with steer(tiny, vector, scale=-1.0):
            shifted = pair_logps(tiny, batch) - reference
    assert torch.allclose(margins[1], shifted[:, 0] - shifted[:, 1])


def test_model_is_frozen_and_unchanged(tiny) -> None:
    before = {k: v.clone() for k, v in tiny.hf_model.state_dict().items()}
    flags = [p.requires_grad for p in tiny.hf_model.parameters()]
    extract(tiny, _pairs(12), layers=[1, 2], method="preference", chat=False, **FAST)
    after = tiny.hf_model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in tiny.hf_model.parameters())
    assert [p.requires_grad for p in tiny.hf_model.parameters()] == flags


def test_same_seed_gives_bit_identical_vectors(tiny) -> None:
    runs = [
        extract(tiny, _pairs(12), layers=[1, 2], method="preference", chat=False, seed=s, **FAST) for s in (5, 5, 6)
    ]
    assert all(torch.equal(runs[0].directions[la], runs[1].directions[la]) for la in (1, 2))
    assert not torch.equal(runs[0].directions[1], runs[2].directions[1])


def test_early_stopping_keeps_the_best_direction(tiny) -> None:
    # The held-out pairs want the opposite of the training pairs: every step on the training loss makes the
    # held-out loss worse, so training stops after `patience` evaluations and returns the starting direction.
    train, validation = _pairs(12), _pairs(6, flip=True, start=100)
    options = {**FAST, "epochs": 20, "patience": 2, "lr": 0.05}
    vector = extract(tiny, train, layers=[1, 2], method="preference", chat=False, validation=validation, **options)
    training = vector.card.metadata["training"]
    assert training["stopped_early"] and training["best_step"] == 0
    assert training["steps"] == 2 * 2 < 20 * 3
    losses = [e["held_out_loss"] for e in training["history"]]
    assert losses[1] > losses[0] and losses[2] > losses[0]
    start = extract(tiny, train, layers=[1, 2], chat=False, progress=False)
    for layer in (1, 2):
        cosine = torch.nn.functional.cosine_similarity(vector.directions[layer], start.directions[layer], dim=0)
        assert float(cosine) > 0.9999


def test_training_improves_the_held_out_loss_without_early_stop(tiny) -> None:
    options = {**FAST, "epochs": 3, "lr": 0.02}
    vector = extract(tiny, _pairs(16), layers=[1, 2], method="preference", chat=False, **options)
    training = vector.card.metadata["training"]
    assert training["held_out_loss"] < training["init_held_out_loss"]
    assert training["best_step"] > 0


def test_card_records_the_training(tiny, tmp_path) -> None:
    vector = extract(tiny, _pairs(15), layers=[2, 1], method="preference", chat=False, seed=4, name="yes", **FAST)
    card = Vector.load(vector.save(tmp_path / "v.safetensors")).card  # what the hub and the server will read
    training = card.metadata["training"]
    assert card.method == "preference" and card.name == "yes" and card.n_pairs == 15
    assert card.recommended_layers == [1, 2] == vector.layers == training["layers"]
    assert card.recommended_scale == 1.0
    assert training["seed"] == 4 and training["n_train"] + training["n_held_out"] == 15 and training["n_held_out"] == 3
    assert training["steps"] == 2 * 3  # two epochs of ceil(12 / 4) steps
    for key in ("train_loss", "held_out_loss", "held_out_accuracy", "held_out_accuracy_negative"):
        assert isinstance(training[key], float)
    assert 0.0 <= training["held_out_accuracy"] <= 1.0
    json.dumps(card.metadata)  # the card stays JSON
    # The relative dose |v_l| / h_l summed over the layers is the configured dose (0.5).
    doses = [card.norms[la] / training["residual_norms"][str(la)] for la in vector.layers]
    assert sum(doses) == pytest.approx(0.5, rel=1e-4)


def test_residual_norms_skip_padding_and_the_first_token(tiny) -> None:
    ids = torch.tensor([[0, 0, 5, 6, 7], [3, 4, 5, 6, 7]])
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    with measure_residual_norms(tiny, [1]) as meter, torch.no_grad():
        out = tiny.hf_model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    hidden = out.hidden_states[2].float().norm(dim=-1)  # block 1's output
    expected = torch.cat([hidden[0, 3:], hidden[1, 1:]]).mean()
    assert meter.means()[1] == pytest.approx(float(expected), rel=1e-5)


def test_bad_inputs_are_clear_errors(tiny) -> None:
    persona = PairSet.from_records(
        [{"prompt": "hi", "completion": "ok", "positive_instruction": "be kind", "negative_instruction": "be rude"}] * 4
    )
    with pytest.raises(SteerlabError, match="persona pairs"):
        extract(tiny, persona, layers=[1], method="preference", chat=False, progress=False)
    with pytest.raises(SteerlabError, match=r"unknown option.*beta"):
        extract(tiny, _pairs(6), layers=[1], method="preference", chat=False, progress=False, betta=1.0)
    with pytest.raises(SteerlabError, match="takes no options"):
        extract(tiny, _pairs(6), layers=[1], chat=False, progress=False, beta=1.0)
    with pytest.raises(SteerlabError, match="positive dose"):
        extract(tiny, _pairs(6), layers=[1], method="preference", chat=False, progress=False, dose=0.0)


def test_registry_names_the_trained_method() -> None:
    assert "preference" in method_names()
    with pytest.raises(SteerlabError, match="preference"):
        get_method("nope")


@pytest.mark.slow
def test_trained_vector_beats_mean_diff_at_the_same_dose(default_model, datasets) -> None:
    """On held-out CAA corrigibility A/B questions, +v raises P(matching answer) more than mean-diff does
    when both add the same relative dose at every layer."""
    from steerlab.pairs import read_records

    records = read_records(datasets / "caa" / "generate" / "corrigible-neutral-HHH" / "generate_dataset.json")
    train, test = PairSet.from_records(records[:40]), PairSet.from_records(records[64:96])
    layers = [12, 13, 14]
    # The preference objective alone (no fluency anchor): one epoch of the anchored default does not yet beat
    # mean-diff on this slice (+0.011 against +0.012), and the anchor has tests of its own.
    trained = extract(
        default_model, train, layers=layers, method="preference", seed=0, progress=False, epochs=1, fluency_weight=0.0
    )
    mean_diff = extract(default_model, train, layers=layers, progress=False)
    # The same norm as the trained vector at every layer: the same relative dose, whatever h is.
    matched = Vector(
        {la: mean_diff.directions[la] * trained.norms()[la] / mean_diff.norms()[la] for la in layers}, mean_diff.card
    )
    batch = prepare(default_model, tokenize_pairs(default_model, test))

    def p_positive(vector: Vector | None) -> torch.Tensor:
        with torch.no_grad():
            if vector is None:
                logps = pair_logps(default_model, batch)
            else:
                with steer(default_model, vector):
                    logps = pair_logps(default_model, batch)
        return torch.sigmoid(logps[:, 0] - logps[:, 1])

    base = p_positive(None)
    gain_trained = float((p_positive(trained) - base).mean())
    gain_mean_diff = float((p_positive(matched) - base).mean())
    print(
        f"P(positive) gain on {len(test)} held-out pairs: trained {gain_trained:+.4f}, mean-diff {gain_mean_diff:+.4f}"
    )
    assert gain_trained > gain_mean_diff
    assert gain_trained > 0


def test_cli_extract_method_preference(tmp_path) -> None:
    from typer.testing import CliRunner

    from steerlab.cli.app import app

    model = tiny_model("llama")
    model.hf_model.save_pretrained(tmp_path / "m")
    model.tokenizer.save_pretrained(tmp_path / "m")
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(
        "\n".join(json.dumps(r) for r in [{"prompt": f"Q{i}", "positive": "yes", "negative": "no"} for i in range(10)])
    )
    out = tmp_path / "v.safetensors"
    args = ["extract", str(pairs), "--model", str(tmp_path / "m"), "--out", str(out), "--layers", "1-2"]
    res = CliRunner().invoke(app, [*args, "--method", "preference", "--seed", "7"])
    assert res.exit_code == 0, res.output
    card = Vector.load(out).card
    assert card.method == "preference" and card.metadata["training"]["seed"] == 7 and card.recommended_layers == [1, 2]
