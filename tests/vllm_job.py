"""Runs one job on stock vLLM (in .venv-vllm) and prints JSON: what tests/test_vllm_engine.py compares against
steerlab's own hooks in the main virtualenv. Usage: .venv-vllm/bin/python tests/vllm_job.py JOB.json OUT.json

A job: {"model": DIR, "engine": {LLM keyword arguments}, "runs": [[{"prompt_ids": [...], "steering": SPEC or null,
"max_tokens": N, "logprobs": K or null}, ...], ...]}. Each run is one `LLM.generate` call (one continuous batch);
runs go in order on the same engine, so prefix caching carries over between them. A run that raises records its
error and the next run goes on on the same engine.
"""

from __future__ import annotations

import json
import sys
import time


def main(job_path: str, out_path: str) -> None:
    from vllm import LLM, SamplingParams, TokensPrompt

    with open(job_path) as handle:
        job = json.load(handle)
    started = time.perf_counter()
    llm = LLM(model=job["model"], **job.get("engine", {}))
    loaded = time.perf_counter() - started
    results = []
    for run in job["runs"]:
        prompts = [TokensPrompt(prompt_token_ids=r["prompt_ids"]) for r in run]
        params = [
            SamplingParams(
                temperature=0.0,
                max_tokens=r.get("max_tokens", 8),
                logprobs=r.get("logprobs"),
                extra_args=None if r.get("steering") is None else {"steering": r["steering"]},
            )
            for r in run
        ]
        began = time.perf_counter()
        try:
            outputs = llm.generate(prompts, params, use_tqdm=False)
        except Exception as exc:  # a refused request: the test reads the message, and the next run must still work
            results.append({"error": f"{type(exc).__name__}: {exc}"})
            continue
        seconds = time.perf_counter() - began
        results.append({"seconds": seconds, "outputs": [_output(o) for o in outputs]})
    with open(out_path, "w") as handle:
        json.dump({"load_seconds": loaded, "runs": results}, handle)


def _output(output) -> dict:
    completion = output.outputs[0]
    first = None
    if completion.logprobs:
        first = {str(tok): lp.logprob for tok, lp in completion.logprobs[0].items()}
    return {"token_ids": list(completion.token_ids), "first_logprobs": first}


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
