"""Runs inside .venv-vllm (real vLLM with the steerlab plugin) for bench/bench_vllm.py and writes what it timed.

Usage: .venv-vllm/bin/python bench/vllm_driver.py JOB.json OUT.json. A job: {"model", "engine" (LLM keyword
arguments), "prompts" (token id lists, cycled over each condition's requests), "tokens" (new tokens per request),
"rounds", "conditions": {name: [steering spec or null, one per request]}}. Each condition is one `LLM.generate` call
of all its requests together (one continuous batch): timed with `tokens` new tokens (throughput) and with 1 (time
to first token of the batch), conditions alternated round by round (bench.interleave), one untimed warm-up round
first.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import interleave


def main(job_path: str, out_path: str) -> None:
    from vllm import LLM, SamplingParams, TokensPrompt

    job = json.loads(Path(job_path).read_text())
    started = time.perf_counter()
    llm = LLM(model=job["model"], **job["engine"])
    loaded = time.perf_counter() - started

    def condition(specs: list[Any], tokens: int) -> Any:
        ids = job["prompts"]
        prompts = [TokensPrompt(prompt_token_ids=ids[i % len(ids)]) for i in range(len(specs))]
        params = [
            SamplingParams(
                temperature=0.0,
                max_tokens=tokens,
                ignore_eos=True,
                extra_args=None if spec is None else {"steering": spec},
            )
            for spec in specs
        ]
        return lambda: llm.generate(prompts, params, use_tqdm=False) and None

    conditions = job["conditions"]
    throughput = interleave({n: condition(s, job["tokens"]) for n, s in conditions.items()}, job["rounds"])
    first = interleave({n: condition(s, 1) for n, s in conditions.items()}, job["rounds"])
    out = {"load_seconds": loaded, "seconds": throughput, "first_token_seconds": first}
    Path(out_path).write_text(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
