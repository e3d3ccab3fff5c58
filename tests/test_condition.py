"""Conditional steering: a per-row condition read in prefill gates a kit; rows where it fails are exactly unsteered."""

from __future__ import annotations

import pytest
import torch
from tiny import H, L, byte_tokenizer, tiny_model

from steerlab import Condition, Kit, KitEntry, SteerlabError, Vector, steer
from steerlab.generation import generate_ids
from steerlab.plan import compile_row, stack_rows
from steerlab.tokens import pad_batch

SEQS = [[5, 9, 14, 3, 22, 7], [11, 4, 8], [30, 31, 2, 6, 40], [7, 7, 7, 7]]


def _vector(seed: int = 1) -> Vector:
    gen = torch.Generator().manual_seed(seed)
    return Vector({la: torch.randn(H, generator=gen) for la in range(L)})


def _split_condition(model, layer: int = 1, reading: str = "mean") -> Condition:
    """A condition whose threshold falls between the rows' unsteered scores: rows 0 and 2 hold, 1 and 3 do not."""
    gen = torch.Generator().manual_seed(7)
    direction = torch.randn(H, generator=gen)
    probe = Condition(direction / direction.norm(), layer, 0.0, reading)  # type: ignore[arg-type]
    scores = _scores(model, probe)
    order = scores.argsort(descending=True).tolist()
    threshold = float(scores[order[1]] + scores[order[2]]) / 2
    cond = Condition(probe.direction, layer, threshold, reading)  # type: ignore[arg-type]
    return cond


def _scores(model, condition: Condition) -> torch.Tensor:
    ids, mask, pos, _ = pad_batch(SEQS, 0, "left", model.device)
    with torch.inference_mode():
        out = model.hf_model(input_ids=ids, attention_mask=mask, position_ids=pos, output_hidden_states=True)
    valid = mask.unsqueeze(-1).float()
    return condition.scores(out.hidden_states[condition.layer + 1], valid)


def _batch_logits(model, what) -> tuple[torch.Tensor, object]:
    ids, mask, pos, _ = pad_batch(SEQS, 0, "left", model.device)
    with torch.inference_mode(), steer(model, what) as plan:
        logits = model.hf_model(input_ids=ids, attention_mask=mask, position_ids=pos).logits
    return logits, plan


def _unsteered_logits(model) -> torch.Tensor:
    ids, mask, pos, _ = pad_batch(SEQS, 0, "left", model.device)
    with torch.inference_mode():
        return model.hf_model(input_ids=ids, attention_mask=mask, position_ids=pos).logits


@pytest.mark.parametrize("reading", ["mean", "last"])
def test_rows_where_the_condition_fails_are_bit_identical(reading: str) -> None:
    model = tiny_model("llama")
    cond = _split_condition(model, reading=reading)
    holds = cond.holds(_scores(model, cond)).tolist()
    assert sum(holds) == 2
    kit = Kit([KitEntry(_vector(), 2.0), KitEntry(_vector(2), 0.5, [2], mode="add_keep_norm")]).when(cond)
    base = _unsteered_logits(model)
    steered, plan = _batch_logits(model, kit)
    for r, held in enumerate(holds):
        assert torch.equal(base[r], steered[r]) != held, f"row {r}: holds={held}"
    report = plan.report()  # type: ignore[attr-defined]
    assert [row["conditions"][0]["holds"] for row in report] == holds
    assert [row["steered"] for row in report] == holds


def test_a_row_that_holds_is_steered_from_the_condition_block_on() -> None:
    """In prefill the decision is made at block `layer`'s output: that block and later ones are steered, earlier
    ones are not (they ran before the decision). Same as the row alone, steered unconditionally from that block."""
    model = tiny_model("qwen2")
    cond = _split_condition(model, layer=1)
    vec = _vector()
    steered, _ = _batch_logits(model, Kit([KitEntry(vec, 1.5)]).when(cond))
    reference, _ = _batch_logits(model, [Kit([KitEntry(vec, 1.5, [1, 2, 3])]), None, None, None])
    mask = pad_batch(SEQS, 0, "left", model.device)[1]
    real = mask[0].bool()
    torch.testing.assert_close(steered[0][real], reference[0][real], atol=1e-5, rtol=1e-5)


def test_each_row_decides_alone_in_one_batch() -> None:
    model = tiny_model("llama")
    cond = _split_condition(model)
    kit = Kit([KitEntry(_vector(), 2.0)]).when(cond)
    _, plan = _batch_logits(model, kit)
    batched = [row["conditions"][0]["score"] for row in plan.report()]  # type: ignore[attr-defined]
    for r, seq in enumerate(SEQS):
        with torch.inference_mode(), steer(model, kit) as alone:
            model.hf_model(torch.tensor([seq]))
        assert alone.report()[0]["conditions"][0]["score"] == pytest.approx(batched[r], abs=1e-4)


def test_generation_rows_that_fail_equal_unsteered_and_details_record_decisions() -> None:
    model = tiny_model("llama")
    cond = _split_condition(model)
    holds = cond.holds(_scores(model, cond)).tolist()
    kit = Kit([KitEntry(_vector(), 3.0)]).when(cond)
    base = generate_ids(model, SEQS, max_new_tokens=6, eos_token_id=None)
    details: list[dict] = []
    steered = generate_ids(model, SEQS, steering=kit, max_new_tokens=6, eos_token_id=None, details=details)
    assert [d["conditions"][0]["holds"] for d in details] == holds
    for r, held in enumerate(holds):
        assert (steered[r] == base[r]) != held, f"row {r}"


def test_entry_conditions_and_kit_conditions_both_have_to_hold() -> None:
    model = tiny_model("llama")
    cond = _split_condition(model)
    never = Condition(cond.direction, cond.layer, 1e6)
    always = _vector()
    kit = Kit([KitEntry(always, 1.0), KitEntry(_vector(2), 2.0, when=never)])
    base_kit, _ = _batch_logits(model, Kit([KitEntry(always, 1.0)]))
    steered, _ = _batch_logits(model, kit)
    assert torch.equal(steered, base_kit), "an entry whose condition never holds must add nothing"
    both, _ = _batch_logits(model, Kit([KitEntry(always, 1.0, when=never)]).when(cond))
    assert torch.equal(both, _unsteered_logits(model))


def test_decode_plans_seeded_with_prefill_decisions_keep_them() -> None:
    """The server's path: prefill decides, the decode step's plan is re-stacked from the rows and the decisions."""
    model = tiny_model("llama")
    cond = _split_condition(model)
    row = compile_row(model, Kit([KitEntry(_vector(), 2.0)]).when(cond))
    prefill = stack_rows(model, [row] * len(SEQS))
    ids, mask, pos, _ = pad_batch(SEQS, 0, "left", model.device)
    from steerlab.steering import apply_plan

    with torch.inference_mode(), apply_plan(model, prefill):
        model.hf_model(input_ids=ids, attention_mask=mask, position_ids=pos)
    decisions = prefill.decisions()
    decode = stack_rows(model, [row] * len(SEQS), decisions=decisions)
    assert decode.decisions() == decisions
    add = decode.ops[2][1].add
    assert add is not None
    for r, d in enumerate(decisions):
        assert bool(add[r].abs().sum() > 0) == d[cond.key]
    undecided = stack_rows(model, [row] * len(SEQS))
    assert undecided.ops[2][1].add is None, "a row with no decision is not steered"


def test_condition_save_load_is_bit_exact_and_bad_files_are_clear(tmp_path) -> None:
    model = tiny_model("llama")
    cond = _split_condition(model, reading="last")
    cond.card.name = "cooking"
    path = cond.save(tmp_path / "cooking.safetensors")
    back = Condition.load(path)
    assert torch.equal(back.direction, cond.direction)
    assert back.settings() == cond.settings() and back.key == cond.key and back.name == "cooking"
    (tmp_path / "junk.safetensors").write_bytes(b"not a file")
    with pytest.raises(SteerlabError, match="not a readable safetensors condition"):
        Condition.load(tmp_path / "junk.safetensors")
    _vector().save(tmp_path / "vec.safetensors")
    with pytest.raises(SteerlabError, match="is not a condition"):
        Condition.load(tmp_path / "vec.safetensors")
    with pytest.raises(SteerlabError, match="does not exist"):
        Condition.load(tmp_path / "missing.safetensors")


def test_bad_conditions_are_refused_clearly() -> None:
    model = tiny_model("llama")
    with pytest.raises(SteerlabError, match="unknown condition reading"):
        Condition(torch.ones(H), 1, 0.0, "max")  # type: ignore[arg-type]
    with pytest.raises(SteerlabError, match="threshold must be finite"):
        Condition(torch.ones(H), 1, float("nan"))
    with pytest.raises(SteerlabError, match="hidden size"), steer(model, Kit([KitEntry(_vector())]).when(
        Condition(torch.ones(H + 1), 1, 0.0)
    )):
        pass
    with pytest.raises(SteerlabError, match="reads block"), steer(model, Kit([KitEntry(_vector())]).when(
        Condition(torch.ones(H), L + 2, 0.0)
    )):
        pass
    with pytest.raises(SteerlabError, match=r"takes a steerlab\.Condition"):
        Kit([KitEntry(_vector())]).when("cooking")  # type: ignore[arg-type]


def test_fit_reports_held_out_accuracy_on_separable_prompts() -> None:
    model = tiny_model("llama")
    model.tokenizer = byte_tokenizer()
    positive = [f"{'a' * (3 + i % 4)} {'b' * (i % 3)}" for i in range(12)]
    negative = [f"{'x' * (3 + i % 4)} {'y' * (i % 3)}" for i in range(12)]
    cond = Condition.fit(model, positive, negative, chat=False, name="ab")
    assert cond.accuracy is not None and cond.accuracy >= 0.75
    assert set(cond.card.metadata["accuracy"]) == {"fit", "tune", "test"}
    assert cond.card.metadata["split"]["positive"] == {"fit": 6, "tune": 3, "test": 3}
    assert 0 <= cond.layer < L and sorted(cond.card.diagnostics) == list(range(L))
    fixed = Condition.fit(model, positive, negative, layer=2, chat=False)
    assert fixed.layer == 2 and list(fixed.card.diagnostics) == [2]
    with pytest.raises(SteerlabError, match=r"at least 3 positive"):
        Condition.fit(model, positive[:2], negative, chat=False)


@pytest.mark.parametrize("suffix", [".json", ".toml"])
def test_kit_files_carry_conditions_by_path_and_hash(tmp_path, suffix: str) -> None:
    from steerlab import kitfile

    model = tiny_model("llama")
    cond = _split_condition(model)
    cond.card.name = "topic"
    other = Condition(cond.direction, 2, cond.threshold)
    kit = Kit([KitEntry(_vector(), 2.0), KitEntry(_vector(2), 1.0, when=other)]).when(cond)
    path = kitfile.save_kit(kit, tmp_path / f"gated{suffix}")
    assert (tmp_path / "topic.condition.safetensors").is_file()
    back = kitfile.load_kit(path, model)
    assert back.condition is not None and back.condition.key == cond.key
    assert back.entries[0].when is None and back.entries[1].when is not None
    assert back.entries[1].when.key == other.key
    assert torch.equal(_batch_logits(model, back)[0], _batch_logits(model, kit)[0])
    (tmp_path / "topic.condition.safetensors").write_bytes(Condition(-cond.direction, 1, 0.0).to_bytes())
    with pytest.raises(SteerlabError, match=r"condition file .* has changed"):
        kitfile.load_kit(path)


def test_kit_new_when_writes_a_conditional_kit(tmp_path) -> None:
    from typer.testing import CliRunner

    from steerlab import kitfile
    from steerlab.cli.app import app

    model = tiny_model("llama")
    cond = _split_condition(model)
    cond.save(tmp_path / "topic.safetensors")
    _vector().save(tmp_path / "v.safetensors")
    out = tmp_path / "k.json"
    vec, topic = str(tmp_path / "v.safetensors"), str(tmp_path / "topic.safetensors")
    args = ["kit", "new", "k", "--vector", vec, "--when", topic]
    result = CliRunner().invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "steering only where" in result.output
    kit = kitfile.load_kit(out)
    assert kit.condition is not None and kit.condition.key == cond.key
    document = kitfile.read_document(out)
    assert document["when"]["file"] == "topic.safetensors"
    shown = CliRunner().invoke(app, ["kit", "show", str(out)], env={"COLUMNS": "200"})
    assert shown.exit_code == 0 and f"when condition@{cond.layer}: block {cond.layer}, mean" in shown.output
    bad = CliRunner().invoke(app, [*args[:-1], vec, "--out", str(out)])
    assert bad.exit_code != 0 and "is not a condition" in str(bad.exception)


def test_kit_schema_refuses_bad_when() -> None:
    from steerlab.kitschema import check_document

    entry = {"vector": "v.safetensors"}
    for bad, message in [
        ("topic.safetensors", "must be an object"),
        ({"file": "t.safetensors", "extra": 1}, "unknown fields"),
        ({"file": "t.safetensors", "sha256": "xyz"}, "64 lower-case hex"),
    ]:
        with pytest.raises(SteerlabError, match=message):
            check_document({"entries": [entry], "when": bad})
        with pytest.raises(SteerlabError, match=message):
            check_document({"entries": [{**entry, "when": bad}]})
    with pytest.raises(SteerlabError, match="inside the kit's folder"):
        check_document({"entries": [entry], "when": {"file": "../t.safetensors"}}, portable=True)
