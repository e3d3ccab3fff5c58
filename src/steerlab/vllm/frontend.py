"""In vLLM's front process (the `LLM` object or the API server): steering checked at admission, and prefix caching
kept apart per kit.

`InputProcessor.process_inputs` is wrapped (a method, not a file): a request whose `steering` cannot be resolved,
is incompatible with the model or breaks a limit is refused there with vLLM's own validation error (HTTP 400 from
`vllm serve`), before it reaches the engine. A steered request gets the kit's digest in its `cache_salt`, which vLLM
hashes into every KV block of the request: steered and unsteered requests (or two different kits) never share prefix
blocks, while requests with the same kit still do. A conditional kit's request does not read the prefix cache at
all: its condition is read on every prompt token as it is computed (steerlab.vllm.reads), and a cached token is not.
"""

from __future__ import annotations

from typing import Any

from steerlab.errors import SteerlabError
from steerlab.vllm.kits import KitResolver
from steerlab.vllm.settings import Settings
from steerlab.vllm.target import build_target

SALT_PREFIX = "steerlab:"
ATTR = "_steerlab_resolver"


def salt_for(digest: str, salt: str | None) -> str:
    """The cache salt of a steered request: the kit's digest, then the caller's own salt, if any."""
    return f"{SALT_PREFIX}{digest}" + (f"|{salt}" if salt else "")


def _resolver(processor: Any) -> KitResolver:
    found = getattr(processor, ATTR, None)
    if found is None:
        import torch

        config = processor.model_config
        target = build_target(config.hf_config, config.model, torch.device("cpu"), config.dtype)
        found = KitResolver(Settings.from_env(), target)
        setattr(processor, ATTR, found)
    return found


def admit(processor: Any, request: Any) -> Any:
    """Check a request's steering and salt its prefix-cache key; raise vLLM's validation error when it is bad."""
    params = getattr(request, "sampling_params", None)
    if params is None:
        return request
    try:
        steering = _resolver(processor).for_request(params.extra_args)
        if steering is not None and steering.conditional:
            _check_single_stage(processor)
    except SteerlabError as exc:
        from vllm.exceptions import VLLMValidationError

        raise VLLMValidationError(f"steering: {exc}") from exc
    if steering is not None:
        request.cache_salt = salt_for(steering.digest, request.cache_salt)
        if steering.conditional:
            params.skip_reading_prefix_cache = True
    return request


def _check_single_stage(processor: Any) -> None:
    """A condition is decided by the worker that holds its block; under pipeline parallelism the stages holding the
    gated layers would never learn the decision, so conditional kits need a single stage."""
    stages = int(processor.vllm_config.parallel_config.pipeline_parallel_size)
    if stages > 1:
        raise SteerlabError(
            f"conditional kits ('when') need pipeline_parallel_size 1 (this engine has {stages} stages): a condition "
            "is decided on the stage that holds its block, and the other stages cannot see it. Tensor parallelism "
            "is fine."
        )


def patch_frontend() -> None:
    from vllm.v1.engine.input_processor import InputProcessor

    process = InputProcessor.__dict__["process_inputs"]
    if getattr(process, "_steerlab", False):
        return

    def process_inputs(self: Any, *args: Any, **kwargs: Any) -> Any:
        return admit(self, process(self, *args, **kwargs))

    process_inputs._steerlab = True  # type: ignore[attr-defined]
    InputProcessor.process_inputs = process_inputs  # type: ignore[method-assign]
