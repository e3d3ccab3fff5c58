"""The `vllm.general_plugins` entry point. vLLM calls `register` in each of its processes before it builds a model:
it defines the op, and wraps the front end's admission, the scheduler's admission of waiting requests (a kit without
a free slot waits) and the model runner's load and input preparation."""

from __future__ import annotations


def register() -> None:
    from steerlab.vllm import frontend, op, waiting, worker

    op.register()
    frontend.patch_frontend()
    waiting.patch_scheduler()
    worker.patch_runner()
