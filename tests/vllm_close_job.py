"""Closes a `steerlab serve --engine vllm` engine while vLLM is still starting, and prints JSON: what start() raised
and which of vLLM's child processes outlived the close. Run in .venv-vllm by tests/test_vllm_close.py.
Usage: .venv-vllm/bin/python tests/vllm_close_job.py MODEL_DIR SPEC_DIR
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import psutil


def main(model: str, spec_folder: str) -> None:
    from steerlab.vllm.serving import VllmEngine, VllmOptions, serving_target

    options = VllmOptions(max_num_seqs=2, max_model_len=256, enforce_eager=True)
    engine = VllmEngine(model, serving_target(model, options.dtype), options, Path(spec_folder))
    raised: list[str] = []

    def start() -> None:
        try:
            engine.start()
        except Exception as exc:  # what start() says when it was closed under it
            raised.append(f"{type(exc).__name__}: {exc}")

    me = psutil.Process()
    thread = threading.Thread(target=start)
    thread.start()
    deadline = time.monotonic() + 600
    while not me.children(recursive=True) and time.monotonic() < deadline:  # vLLM's engine core is starting
        time.sleep(0.1)
    children = me.children(recursive=True)
    engine.close(timeout=5)  # far shorter than a start-up: close gives up waiting, start-up must clean up itself
    thread.join(900)
    # multiprocessing's resource tracker lives as long as this process by design (it exits with it); vLLM's own
    # processes must be gone once close() and start-up are done.
    vllm = [p for p in children if not _is_resource_tracker(p)]
    _, alive = psutil.wait_procs(vllm, timeout=120)
    report = {"children": len(vllm), "alive": [p.pid for p in alive], "raised": raised}
    print(json.dumps({**report, "stuck": thread.is_alive()}))


def _is_resource_tracker(proc: psutil.Process) -> bool:
    try:
        return any("resource_tracker" in part for part in proc.cmdline())
    except psutil.NoSuchProcess:
        return False


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
