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
    assert all(len(specs) == bench_vllm.CONCURRENT for specs in conditions.values())
    assert conditions["unsteered"] == [None] * 16 and len(set(conditions["one kit"])) == 1
    assert len(set(conditions["K=4 kits"])) == 4 and len(set(conditions["K=16 kits"])) == 16
    multi = conditions["multi-vector kit"][0]
    assert len(multi) == 3 and all(spec.endswith("@0-29") for spec in multi)


def test_ratios_are_paired_by_round_and_judged_against_the_targets() -> None:
    """Throughput ratio = unsteered time / steered time per round; TTFT ratio = steered / unsteered."""
    names = ["unsteered", "one kit", "K=4 kits", "K=16 kits", "multi-vector kit"]
    seconds = {n: [1.0, 2.0, 1.0] for n in names}
    seconds["K=16 kits"] = [2.0, 4.0, 2.0]  # half the throughput in every round
    first = {n: [0.5, 0.5, 0.5] for n in names}
    first["multi-vector kit"] = [0.5, 0.55, 0.6]
    d = bench_vllm.details({"seconds": seconds, "first_token_seconds": first}, bench_vllm.Settings(8, 3))
    assert d["tokens_per_s"]["unsteered"] == 16 * 8 / 1.0
    assert d["throughput_vs_unsteered"]["K=16 kits"]["ratio"] == 0.5
    assert d["ttft_vs_unsteered"]["multi-vector kit"]["ratio"] == pytest.approx(1.1)
    rows = {row["metric"]: _judge(row) for row in bench_vllm.headline(d)}
    assert rows["output tok/s, K=16 kits / unsteered"]["verdict"] == "not met"
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
    measured = bench_vllm.measure(bench_vllm.job(folder, prompts, model.n_layers, tiny))
    d = bench_vllm.details(measured, tiny)
    assert set(d["tokens_per_s"]) == set(bench_vllm.conditions(model.n_layers))
    assert all(v > 0 for v in d["tokens_per_s"].values())
    assert len(bench_vllm.headline(d)) == 8
