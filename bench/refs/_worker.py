"""The protocol a reference worker speaks with bench_core (runs inside bench/.venv-refs, not steerlab's venv).

The worker loads the model once, then answers each `run` line on stdin with one JSON line on stdout holding the
seconds it measured around the library call itself, so neither start-up nor the pipe is counted. That lets the
parent interleave reference rounds with steerlab rounds in one run. Protocol lines start with MARK; everything the
libraries print goes to stderr.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

MARK = "@@bench "


def _send(channel: Any, message: dict[str, Any]) -> None:
    channel.write(MARK + json.dumps(message) + "\n")
    channel.flush()


def load_spec(argv: list[str]) -> dict[str, Any]:
    """The spec the parent wrote: model_dir, threads, batch_size, pairs [[positive, negative], ...], compare_layers."""
    spec = json.loads(Path(argv[1]).read_text())
    import torch

    torch.set_num_threads(int(spec["threads"]))
    return spec


def load_model(model_dir: str) -> tuple[Any, Any]:
    """Plain transformers 4.x on the safetensors cache that steerlab converted (with transformers 5) from the GGUF.

    Two things in that folder are 5.x-only and 4.x would misread: the tokenizer class `TokenizersBackend` (4.x
    refuses it, so the fast tokenizer is built straight from tokenizer.json with the same special tokens), and
    `rope_parameters` (4.x ignores it and would silently use its default rope_theta of 10000 instead of 100000).
    """
    from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

    folder = Path(model_dir)
    settings = json.loads((folder / "tokenizer_config.json").read_text())
    specials = {k: settings[k] for k in ("bos_token", "eos_token", "pad_token", "unk_token") if settings.get(k)}
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"), **specials)
    raw = json.loads((folder / "config.json").read_text())
    rope = raw.get("rope_parameters") or {}
    overrides = {"rope_theta": rope["rope_theta"]} if "rope_theta" in rope and "rope_theta" not in raw else {}
    config = AutoConfig.from_pretrained(folder, **overrides)
    model = AutoModelForCausalLM.from_pretrained(folder, config=config, dtype="float32")
    model.eval()
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def serve(
    packages: list[str],
    setup: Callable[[dict[str, Any]], Any],
    train: Callable[[Any], Any],
    describe: Callable[[Any, Any], dict[str, Any]],
) -> None:
    """setup(spec) -> state once; for each `run` line, train(state) timed here, then describe(state, result)."""
    out = sys.stdout
    sys.stdout = sys.stderr  # library prints and progress bars must not mix with protocol lines
    try:
        spec = load_spec(sys.argv)
        t0 = time.perf_counter()
        state = setup(spec)
        versions = {p: version(p) for p in packages}
        _send(out, {"ready": True, "load_s": time.perf_counter() - t0, "versions": versions})
    except Exception as exc:
        _send(out, {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()})
        raise SystemExit(1) from exc
    for line in sys.stdin:
        if line.strip() != "run":
            break
        try:
            t0 = time.perf_counter()
            result = train(state)
            seconds = time.perf_counter() - t0
            _send(out, {"seconds": seconds, **describe(state, result)})
        except Exception as exc:
            _send(out, {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()})
            raise SystemExit(1) from exc


def directions_at(directions: dict[int, Any], layers: list[int]) -> dict[str, list[float]]:
    """Block index -> direction as a list, for the parent's cosine check against steerlab's vector."""
    return {str(layer): [float(x) for x in directions[layer]] for layer in layers if layer in directions}
