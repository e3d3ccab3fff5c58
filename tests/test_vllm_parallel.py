"""Tensor parallelism on vLLM's CPU backend: three ranks (the default model has 9 attention heads and 3 KV heads, so
3 is the only split above 1), each with its own worker, op and slot tables, against steerlab's own hooks on one
process. What this checks is the distributed design: every rank applies the op to the same all-reduced stream, fills
its tables from the same scheduler output in step, and decides a condition alike. A rank out of step would steer
its shard of the next layer with another kit, or not at all, and the answers would part from the hooks'.

1. Plain kits (addition, stacked vectors, ablation, norm-keeping): the first token's log-prob shift correlates with
   the hooks' at > 0.99, and a batch mixing them (and unsteered requests) gives the hooks' greedy answers.
2. The conditional kit of tests/test_vllm_compiled.py (two gated entries): greedy answers equal the transformers
   engine's for all prompts but one.

Real vLLM in .venv-vllm (`make vllm`), eager mode. The ranks run unbound (`VLLM_CPU_OMP_THREADS_BIND=nobind`, one
OpenMP thread each): the CPU backend's automatic binding wants a NUMA node per rank, and this machine has one.

Opt-in (`make test-vllm-parallel`, or STEERLAB_TEST_TP=1): it passed in a working checkout, but in a fresh clone's
`make test` the three-rank engine failed to start (its root cause was cut from the captured log), so it stays out
of `make test` until that is understood. Each rank's KV cache is held to 1 GiB here, the first suspect.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

from tests.test_vllm_compiled import TOKENS, assert_shifts_match_hooks, gated, prompts  # noqa: F401 (fixtures)
from tests.test_vllm_engine import KITS, cut, hf_greedy, kit_of, request, run_job
from tests.vllm_support import MARKS

pytestmark = [
    *MARKS,
    pytest.mark.skipif(
        os.environ.get("STEERLAB_TEST_TP") != "1",
        reason="opt-in: `make test-vllm-parallel` (or STEERLAB_TEST_TP=1); see the module docstring",
    ),
]

RANKS = 3
ENGINE = {"tensor_parallel_size": RANKS, "distributed_executor_backend": "mp", "max_num_seqs": 8}
ENV = {"VLLM_CPU_OMP_THREADS_BIND": "nobind", "OMP_NUM_THREADS": "1", "VLLM_CPU_KVCACHE_SPACE": "1"}
PLAIN = [KITS["add"], KITS["stack"], KITS["ablate"], KITS["keep_norm"]]
MIXED = [None, *PLAIN, KITS["generated"], None, KITS["add"]]


@pytest.fixture(scope="module")
def model(default_model):
    return default_model


@pytest.fixture(scope="module")
def parallel_runs(prompts, gated, tmp_path_factory) -> dict[str, Any]:  # noqa: F811 (fixtures)
    sections: dict[str, list[list[dict[str, Any]]]] = {
        "base": [[request(p, None, 1, -1) for p in prompts[:4]]],
        "plain": [[request(p, spec, 1, -1) for p in prompts[:4]] for spec in PLAIN],
        "mixed": [[request(prompts[k], spec, 8) for k, spec in enumerate(MIXED)]],
        "gated": [[request(p, gated, TOKENS) for p in prompts]],
    }
    runs = [run for section in sections.values() for run in section]
    result = run_job(tmp_path_factory.mktemp("parallel"), runs, ENGINE, env=ENV, timeout=2400)
    out, at = {}, 0
    for name, section in sections.items():
        out[name] = result["runs"][at : at + len(section)]
        at += len(section)
    return out


def test_every_rank_steers_in_step_with_the_hooks(model, prompts, parallel_runs) -> None:  # noqa: F811
    assert_shifts_match_hooks(model, prompts, PLAIN, parallel_runs)
    same = 0
    for k, (spec, out) in enumerate(zip(MIXED, parallel_runs["mixed"][0]["outputs"], strict=True)):
        kit = None if spec is None else kit_of(model, spec)
        same += cut(model, out["token_ids"]) == hf_greedy(model, prompts[k], kit, 8)
    assert same >= len(MIXED) - 1, f"{same} of {len(MIXED)} greedy answers equal the hooks'"


def test_a_condition_is_decided_alike_on_every_rank(model, prompts, gated, parallel_runs) -> None:  # noqa: F811
    from steerlab.generation import generate_ids
    from steerlab.vllm.kits import KitResolver
    from steerlab.vllm.settings import Settings

    kit = KitResolver(Settings(), model).for_request({"steering": gated})
    assert kit is not None and kit.conditional
    steered = [o["token_ids"] for o in parallel_runs["gated"][0]["outputs"]]
    same = sum(
        cut(model, mine) == generate_ids(model, [ids], steering=kit.kit, max_new_tokens=TOKENS)[0]
        for ids, mine in zip(prompts, steered, strict=True)
    )
    assert same >= len(prompts) - 1, f"{same} of {len(prompts)} greedy answers equal the transformers engine's"
