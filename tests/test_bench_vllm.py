"""bench/bench_vllm.py: its conditions (distinct kits really distinct, the multi-vector kit on every layer), its
paired ratios and verdicts; and, with `make vllm` done, one tiny real run through vLLM (2 tokens, 1 round)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import bench_vllm
from bench.run_all import _judge
from tests.vllm_support import MARKS


def test_conditions_give_each_request_the_kit_its_condition_names() -> None:
    conditions = bench_vllm.conditions(30)
    wide = {"K=64 kits", "unsteered x64"}
    assert all(len(specs) == (64 if name in wide else 16) for name, specs in conditions.items())
    assert conditions["unsteered"] == [None] * 16 and len(set(conditions["one kit"])) == 1
    assert len(set(conditions["K=4 kits"])) == 4 and len(set(conditions["K=16 kits"])) == 16
    assert len(set(conditions["K=64 kits"])) == 64 and conditions["unsteered x64"] == [None] * 64
    assert "conditional kit" not in conditions
    gated = bench_vllm.conditions(30, Path("/g.safetensors"))["conditional kit"]
    assert len(gated) == 16 and gated[0][0]["when"] == "/g.safetensors" and gated[0][0]["positions"] == "generated"
    multi = conditions["multi-vector kit"][0]
    assert len(multi) == 3 and all(spec.endswith("@0-29") for spec in multi)


def test_ratios_are_paired_by_round_and_judged_against_the_targets() -> None:
    """Throughput ratio = unsteered time / steered time per round; TTFT ratio = steered / unsteered."""
    names = ["unsteered", "one kit", "K=4 kits", "K=16 kits", "multi-vector kit", "unsteered x64", "K=64 kits"]
    seconds = {n: [1.0, 2.0, 1.0] for n in names}
    seconds["K=16 kits"] = [2.0, 4.0, 2.0]  # half the throughput in every round
    seconds["unsteered x64"] = [4.0, 8.0, 4.0]
    seconds["K=64 kits"] = [4.4, 8.8, 4.4]  # paired with the 64 unsteered requests, not the 16
    first = {n: [0.5, 0.5, 0.5] for n in names}
    first["multi-vector kit"] = [0.5, 0.55, 0.6]
    d = bench_vllm.details({"seconds": seconds, "first_token_seconds": first}, bench_vllm.Settings(8, 3))
    assert d["tokens_per_s"]["unsteered"] == 16 * 8 / 1.0
    assert d["throughput_vs_unsteered"]["K=16 kits"]["ratio"] == 0.5
    assert d["throughput_vs_unsteered"]["K=64 kits"]["ratio"] == pytest.approx(1 / 1.1)
    assert d["tokens_per_s"]["unsteered x64"] == 64 * 8 / 4.0 and "unsteered x64" not in d["throughput_vs_unsteered"]
    assert d["ttft_vs_unsteered"]["multi-vector kit"]["ratio"] == pytest.approx(1.1)
    rows = {row["name"]: _judge(row) for row in bench_vllm.headline(d)}
    assert rows["output tok/s, K=16 kits / unsteered"]["verdict"] == "not met"
    assert rows["output tok/s, K=64 kits / unsteered"]["verdict"] == "met"  # 0.91 >= 0.8 in every round
    assert rows["output tok/s, multi-vector kit / unsteered"]["verdict"] == "met"
    assert rows["TTFT, multi-vector kit / unsteered"]["verdict"] == "inconclusive"  # 1.0-1.2 straddles 1.1
    assert "target_min" not in rows["output tok/s, one kit / unsteered"]


def with_vllm(test):  # the real-vLLM marks (slow, long timeout, skipped without `make vllm`) on one test
    for mark in MARKS:
        test = mark(test)
    return test


@with_vllm
def test_a_tiny_real_run_times_every_condition(tmp_path: Path) -> None:
    from steerlab.defaults import DEFAULT_MODEL
    from steerlab.models import load_model, model_folder
    from steerlab.prompts import prompt_ids

    model = load_model(DEFAULT_MODEL)
    folder, _ = model_folder(DEFAULT_MODEL)
    tiny = bench_vllm.Settings(new_tokens=2, rounds=1, enforce_eager=True)
    prompts = [prompt_ids(model.tokenizer, q) for q in bench_vllm.QUESTIONS]
    gate = bench_vllm.always_holds(model, tmp_path)
    measured = bench_vllm.measure(bench_vllm.job(folder, prompts, model.n_layers, tiny, gate))
    d = bench_vllm.details(measured, tiny)
    assert set(d["tokens_per_s"]) == set(bench_vllm.conditions(model.n_layers, gate))
    assert all(v > 0 for v in d["tokens_per_s"].values())
    assert len(bench_vllm.headline(d)) == 12


def test_the_headline_renders_in_the_bench_report() -> None:
    from bench.run_all import to_markdown

    names = ["unsteered", "one kit", "K=16 kits", "unsteered x64", "K=64 kits"]
    seconds = {n: [1.0, 1.1, 0.9] for n in names}
    d = bench_vllm.details({"seconds": seconds, "first_token_seconds": seconds}, bench_vllm.Settings(8, 3))
    headline = [_judge(row) for row in bench_vllm.headline(d)]
    text = to_markdown({"module": "vllm", "title": "vLLM", "headline": headline, "notes": [], "details": d})
    assert "output tok/s, K=64 kits / unsteered" in text and "TTFT, K=16 kits / unsteered" in text
