"""Helpers shared by the serve tests (no tests here): vectors on the default model, a kits folder, a live server."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch

from steerlab import Kit, KitEntry, PairSet, Vector, extract
from steerlab.kit import KitCard
from steerlab.models import LoadedModel
from steerlab.serve.server import BackgroundServer, build_service

LAYERS = list(range(8, 21))
HAPPY_SCALE = 0.5


_VECTORS: dict[tuple[int, Path], Vector] = {}


def emotion_vector(model: LoadedModel, datasets: Path) -> Vector:
    """happy - sad, extracted once per session on the default model."""
    key = (id(model), datasets)
    if key not in _VECTORS:
        _VECTORS[key] = _extract_emotion(model, datasets)
    return _VECTORS[key]


def _extract_emotion(model: LoadedModel, datasets: Path) -> Vector:
    folder = datasets / "repe" / "emotions"
    happy = json.loads((folder / "happiness.json").read_text())[:16]
    sad = json.loads((folder / "sadness.json").read_text())[:16]
    records = [
        {"prompt": "Describe how you feel in one sentence.", "positive": h, "negative": s}
        for h, s in zip(happy, sad, strict=True)
    ]
    vector = extract(model, PairSet.from_records(records), layers=LAYERS, progress=False, name="happy")
    vector.card.recommended_layers = list(range(10, 19))
    vector.card.recommended_scale = HAPPY_SCALE
    vector.card.description = "happy vs sad (RepE emotion scenarios, 16 pairs)"
    return vector


def random_vector(model: LoadedModel, like: Vector, name: str, seed: int) -> Vector:
    """A random direction with `like`'s per-layer norms and a proper card: a second, unrelated axis."""
    gen = torch.Generator().manual_seed(seed)
    directions = {}
    for layer, direction in like.directions.items():
        noise = torch.randn(direction.shape[0], generator=gen)
        directions[layer] = noise / noise.norm() * direction.float().norm()
    card = dataclasses.replace(like.card, name=name, description=f"random direction (seed {seed})", diagnostics={})
    vector = Vector(directions, card)
    vector.card.norms = vector.norms()
    return vector


def make_kits_dir(folder: Path, model: LoadedModel, datasets: Path) -> Path:
    """happy.safetensors, noise.safetensors, a two-axis kit mood.json, and a vector for another model (wide)."""
    from steerlab import kitfile

    folder.mkdir(parents=True, exist_ok=True)
    happy = emotion_vector(model, datasets)
    noise = random_vector(model, happy, "noise", seed=3)
    happy.save(folder / "happy.safetensors")
    noise.save(folder / "noise.safetensors")
    kit = Kit(
        [KitEntry(happy, 0.6, list(range(10, 19))), KitEntry(noise, 0.3, list(range(12, 16)))],
        KitCard(name="mood", description="happiness plus a random axis"),
    )
    kitfile.save_kit(
        kit, folder / "mood.json", vector_files=[folder / "happy.safetensors", folder / "noise.safetensors"]
    )
    card = dataclasses.replace(happy.card, name="wide", hidden_size=64, diagnostics={}, recommended_layers=[10])
    wide = Vector({10: torch.ones(64)}, card)
    wide.save(folder / "wide.safetensors")
    return folder


@contextmanager
def served(model: LoadedModel, kits_dir: Path | None, **options: Any) -> Iterator[BackgroundServer]:
    service = build_service(model, kits_dir=kits_dir, model_id=options.pop("model_id", "smollm2-135m"), **options)
    with BackgroundServer(service) as server:
        yield server


def client(server: BackgroundServer) -> Any:
    import openai

    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=300)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serve_process(args: list[str], env: Mapping[str, str] | None = None) -> Iterator[str]:
    """`steerlab serve ARGS` as a user runs it, a subprocess on a free loopback port; yields its URL once /health
    answers, and stops it with Ctrl-C afterwards. `env`: variables set on top of this process's."""
    port = free_port()
    command = [sys.executable, "-m", "steerlab", "serve", *args, "--port", str(port)]
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, **(env or {})}
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_up(proc, url)
        yield url
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()


def _wait_up(proc: subprocess.Popen[str], url: str) -> None:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"steerlab serve exited with {proc.returncode}: {proc.stdout.read() if proc.stdout else ''}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.3)
    pytest.fail("steerlab serve did not answer /health within 300 s")
