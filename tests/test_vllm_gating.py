"""Conditional kits on the vLLM engine, the parts that need no vLLM: the read op and the host's gating, fed a prompt
in prefill chunks beside other requests, decide exactly what `Condition.scores` / `holds` decide on the whole prompt;
the decided plan is the transformers engine's; the resolver refuses what the engine cannot run."""

from __future__ import annotations

import pytest
import torch

from steerlab.card import Card
from steerlab.condition import Condition
from steerlab.errors import SteerlabError
from steerlab.kit import Kit, KitEntry
from steerlab.plan import compile_row
from steerlab.vector import Vector
from steerlab.vllm import reads
from steerlab.vllm.gating import Gating
from steerlab.vllm.reads import ReadBuffers, ReadShape, read_
from tests.tiny import tiny_model


@pytest.fixture(scope="module")
def model():
    return tiny_model("llama")


def condition(model, seed: int, layer: int, reading: str, threshold: float = 0.0) -> Condition:
    gen = torch.Generator().manual_seed(seed)
    card = Card(base_model=model.name, model_fingerprint=model.fingerprint, n_layers=model.n_layers)
    return Condition(torch.randn(model.hidden_size, generator=gen), layer, threshold, reading, card)  # type: ignore[arg-type]


def vector(model, seed: int) -> Vector:
    gen = torch.Generator().manual_seed(seed)
    card = Card(base_model=model.name, model_fingerprint=model.fingerprint, n_layers=model.n_layers, name=f"v{seed}")
    return Vector({la: torch.randn(model.hidden_size, generator=gen) for la in range(model.n_layers)}, card)


def buffers(model) -> ReadBuffers:
    shape = ReadShape(model.n_layers, model.hidden_size, 4, 2, 32, torch.float32, torch.device("cpu"))
    return ReadBuffers(shape)


def run_step(model, gating: Gating, states: dict[str, torch.Tensor], rows: dict, step: list[tuple]) -> None:
    """One forward: per request (id, first position, token count, prompt length), its tokens' stream at every
    layer come from `states` [layers, positions, H]; the read op runs at every layer, the host collects after.
    `rows`: the compiled plans of the conditional requests."""
    gating.begin(sum(count for _, _, count, _ in step))
    offset = 0
    for index, (req_id, start, count, prompt_len) in enumerate(step):
        if req_id in rows:
            gating.read(index, req_id, rows[req_id], (start, count, offset), prompt_len)
        offset += count
    gating.end()
    for layer in range(model.n_layers):
        hidden = torch.cat([states[r][layer, s : s + c] for r, s, c, _ in step])
        residual = torch.randn_like(hidden)  # vLLM's split stream: what is read is hidden + residual
        read_(hidden - residual, residual, *gating.buffers.layer_buffers(layer), layer=layer)
    gating.collect()


@pytest.mark.parametrize("capturing", [False, True])
def test_chunked_reads_decide_as_the_whole_prompt_does(model, monkeypatch, capturing: bool) -> None:
    if capturing:  # a replayed graph runs the read at every layer, whatever the host-side flags say
        monkeypatch.setattr(reads, "capturing", lambda: True)
    mean, last = condition(model, 1, 1, "mean"), condition(model, 2, 2, "last")
    v = vector(model, 3)
    kit = Kit([KitEntry(v, 0.5, [1, 2], positions="generated", when=mean), KitEntry(v, -0.3, [2], when=last)])
    rows = dict.fromkeys(("a", "b"), compile_row(model, kit))
    gen = torch.Generator().manual_seed(0)
    states = {r: torch.randn(model.n_layers, 12, model.hidden_size, generator=gen) for r in ("a", "b", "plain")}
    gating = Gating(buffers(model))
    # a: a prompt of 9 in chunks of 4 + 5; b: a prompt of 5 in one step, then a generated token; an unconditional
    # request between them whose tokens must not count.
    run_step(model, gating, states, rows, [("plain", 0, 3, 3), ("a", 0, 4, 9), ("b", 0, 5, 5)])
    assert "a" not in gating.decided and "b" in gating.decided
    run_step(model, gating, states, rows, [("b", 5, 1, 5), ("a", 4, 5, 9), ("plain", 3, 1, 3)])
    for req_id, prompt_len in (("a", 9), ("b", 5)):
        for cond in (mean, last):
            whole = states[req_id][cond.layer, :prompt_len].unsqueeze(0)
            expected = float(cond.scores(whole)[0])
            assert gating.scores[req_id][cond.key] == pytest.approx(expected, rel=1e-4, abs=1e-4)
            assert gating.decided[req_id][cond.key] == (expected > cond.threshold)
            record = next(r for r in gating.records[req_id] if r["key"] == cond.key[:16])
            assert record == {**cond.describe(), "score": gating.scores[req_id][cond.key], "holds": record["holds"]}
            assert record["holds"] == gating.decided[req_id][cond.key]
    assert not gating.buffers.scores.any() and not gating.buffers.live.any()  # clean for the next step
    assert gating.take_decided() == ["b", "a"] and gating.take_decided() == []  # each decision handed over once
    gating.forget("a")
    assert "a" not in gating.records and "b" in gating.records


def test_recomputed_prompt_tokens_are_not_read_twice(model) -> None:
    mean = condition(model, 1, 1, "mean")
    rows = {"a": compile_row(model, Kit([KitEntry(vector(model, 3), 0.5, [1], positions="generated", when=mean)]))}
    gen = torch.Generator().manual_seed(1)
    states = {"a": torch.randn(model.n_layers, 12, model.hidden_size, generator=gen)}
    gating = Gating(buffers(model))
    run_step(model, gating, states, rows, [("a", 0, 4, 8)])
    run_step(model, gating, states, rows, [("a", 0, 8, 8)])  # preempted, then computed again from the start
    expected = float(mean.scores(states["a"][1, :8].unsqueeze(0))[0])
    assert gating.scores["a"][mean.key] == pytest.approx(expected, rel=1e-4, abs=1e-4)


def test_decided_plan_and_slot_keys(model) -> None:
    yes, no = condition(model, 1, 1, "mean", -1e9), condition(model, 2, 1, "mean", 1e9)
    v, w = vector(model, 3), vector(model, 4)
    kit = Kit(
        [
            KitEntry(v, 0.5, [2], positions="generated", when=yes),
            KitEntry(w, 0.7, [3], positions="generated", when=no),
            KitEntry(v, 0.1, [1]),
        ]
    )
    row = compile_row(model, kit)
    gating = Gating(buffers(model))
    assert gating.key("d", "r").endswith("|?") and set(gating.plan(row, "r").layers) == {1}
    gating.decided["r"] = {yes.key: True, no.key: False}
    decided = gating.plan(row, "r")
    assert set(decided.layers) == {1, 2} and decided.layers == row.effective(lambda k: k == yes.key)
    assert gating.key("d", "r") == f"d|{yes.key}"


def test_resolver_takes_when_and_refuses_what_the_engine_cannot_run(model, tmp_path) -> None:
    from steerlab.vllm.kits import KitResolver
    from steerlab.vllm.settings import Settings

    v = vector(model, 1).save(tmp_path / "v.safetensors")
    cond = condition(model, 2, 1, "mean").save(tmp_path / "c.safetensors")
    other = condition(model, 3, 1, "last").save(tmp_path / "d.safetensors")
    resolver = KitResolver(Settings(), model)
    plain = resolver.for_request({"steering": {"address": f"{v}:0.5@1", "positions": "generated"}})
    gated = resolver.for_request({"steering": {"address": f"{v}:0.5@1", "positions": "generated", "when": str(cond)}})
    assert plain is not None and gated is not None and gated.conditional and not plain.conditional
    assert gated.digest != plain.digest  # a condition is part of what a slot holds
    with pytest.raises(SteerlabError, match="generated tokens only"):
        resolver.for_request({"steering": {"address": f"{v}:0.5@1", "when": str(cond)}})
    two = [{"address": f"{v}:0.1@1", "positions": "generated", "when": str(c)} for c in (cond, other)]
    narrow = KitResolver(Settings(max_conditions=1), model)
    with pytest.raises(SteerlabError, match="2 distinct conditions"):
        narrow.for_request({"steering": two})
    with pytest.raises(SteerlabError, match="condition file"):
        resolver.for_request({"steering": {"address": f"{v}:0.5@1", "positions": "generated", "when": 3}})


def test_conditional_kits_refused_across_pipeline_stages() -> None:
    from types import SimpleNamespace

    from steerlab.vllm.frontend import _check_single_stage

    def processor(stages: int) -> SimpleNamespace:
        return SimpleNamespace(
            vllm_config=SimpleNamespace(parallel_config=SimpleNamespace(pipeline_parallel_size=stages))
        )

    _check_single_stage(processor(1))
    with pytest.raises(SteerlabError, match="pipeline_parallel_size 1"):
        _check_single_stage(processor(2))


def test_serve_engine_says_which_conditional_kits_it_runs(model) -> None:
    from steerlab.vllm.serving import unsupported

    gate = condition(model, 1, 1, "mean")
    v = vector(model, 2)
    assert unsupported(Kit([KitEntry(v, 1.0, positions="generated")]).when(gate)) is None
    assert unsupported(Kit([KitEntry(v, 1.0), KitEntry(v, 0.5, positions="generated", when=gate)])) is None
    reason = unsupported(Kit([KitEntry(v, 1.0)]).when(gate))
    assert reason is not None and "positions 'all'" in reason and "--engine transformers" in reason
