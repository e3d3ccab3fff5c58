"""The `vllm.general_plugins` entry point. vLLM calls `register` in each of its processes before it builds a model:
it defines the op, and wraps the front end's admission and the model runner's load and input preparation."""

from __future__ import annotations


def register() -> None:
    from steerlab.vllm import frontend, op, worker

    op.register()
    frontend.patch_frontend()
    worker.patch_runner()
