"""`steerlab serve --engine vllm`: the served model and engine on vLLM, with the flags' clear errors first."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import typer

ENGINES = ("transformers", "vllm")


def check_engine(engine: str, device: str | None) -> None:
    """The engine flags' errors, before anything heavy is imported."""
    if engine not in ENGINES:
        raise typer.BadParameter(f"--engine {engine!r}: use {' or '.join(ENGINES)}.")
    if engine != "vllm":
        return
    if importlib.util.find_spec("vllm") is None:
        raise typer.BadParameter(
            f"--engine vllm needs vLLM in this Python ({sys.executable}), which has none. `make vllm` installs it "
            "in .venv-vllm: run .venv-vllm/bin/steerlab serve --engine vllm ... (or pip install vllm here)."
        )
    if device is not None:
        raise typer.BadParameter("--device is for --engine transformers; vLLM places the model itself.")


def vllm_engine(
    model: str,
    dtype: str | None,
    max_batch: int,
    max_steering_slots: int | None,
    max_model_len: int,
    enforce_eager: bool,
    max_scale: float,
    max_vectors: int,
) -> tuple[Any, Any]:
    """(the model as the registry sees it, the engine, not started yet)."""
    from steerlab.defaults import steerlab_home
    from steerlab.models import model_folder
    from steerlab.vllm.serving import VllmEngine, VllmOptions, serving_target

    folder, _ = model_folder(model)
    options = VllmOptions(
        max_num_seqs=max_batch,
        max_model_len=max_model_len,
        max_steering_slots=max_steering_slots,
        dtype=dtype or "float32",
        enforce_eager=enforce_eager,
        max_scale=max_scale,
        max_vectors=max_vectors,
    )
    target = serving_target(str(folder), options.dtype)
    engine = VllmEngine(str(folder), target, options, Path(steerlab_home()) / "vllm-serve-vectors")
    return target, engine  # started by the server, after the registry has checked its kits and default
