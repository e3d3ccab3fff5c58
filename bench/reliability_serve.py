"""The OpenAI-compatible server under many concurrent clients, malformed bodies mixed in: `steerlab serve` as a
subprocess on a tiny random model folder (the tests' tests/tiny.py) with a kits folder of random vectors."""

from __future__ import annotations

import json
import random
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import torch

from bench.reliability_procs import ServerProcess
from steerlab import Card, Vector

TESTS = Path(__file__).resolve().parents[1] / "tests"
MAX_TOKENS, N_VECTORS = 8, 8
MODEL_ID = "tiny-llama"


def make_model_folder(root: Path) -> tuple[Path, Path]:
    """A tiny random llama (32 wide, 4 layers, character tokenizer) and N_VECTORS random vectors for it."""
    sys.path.insert(0, str(TESTS))  # one definition of the tiny model, shared with the tests
    from tiny import tiny_model

    model = tiny_model("llama")
    folder, kits = root / MODEL_ID, root / "kits"
    model.hf_model.save_pretrained(folder)
    model.tokenizer.save_pretrained(folder)
    gen = torch.Generator().manual_seed(1)
    for k in range(N_VECTORS):
        directions = {layer: torch.randn(32, generator=gen) * 2 for layer in range(4)}
        Vector(directions, Card(name=f"v{k}")).save(kits / f"v{k}.safetensors")
    return folder, kits


def client_request(i: int) -> dict[str, Any]:
    """Client i's own request: its own prompt (of its own length), and its own steering (every 8th unsteered)."""
    prompt = f"client {i} asks" + " more" * (i % 5) + "?"
    body: dict[str, Any] = {"model": MODEL_ID, "prompt": prompt, "max_tokens": MAX_TOKENS, "temperature": 0}
    body["ignore_eos"] = True
    if i % 8:
        scale = (-1) ** i * (0.5 + (i % 3) * 0.5)
        body["steering"] = [{"vector": f"v{i % N_VECTORS}", "scale": scale}]
        if i % 3 == 0:
            body["steering"].append({"vector": f"v{(i + 3) % N_VECTORS}", "scale": 0.5, "layers": [1, 2]})
    return body


def malformed(rng: random.Random, i: int) -> tuple[str, str, bytes, dict[str, str]]:
    """(label, path, raw body, headers) of one bad request: broken JSON, wrong types, out-of-range numbers,
    unknown or oversized steering, wrong content-types."""
    good = client_request(i)
    json_type = {"content-type": "application/json"}

    def edit(**changes: Any) -> bytes:
        return json.dumps({**good, **changes}, allow_nan=True).encode()

    cases: dict[str, tuple[str, bytes, dict[str, str]]] = {
        "not json": ("/v1/completions", b'{"model": "tiny-llama", "prompt": ', json_type),
        "empty body": ("/v1/completions", b"", json_type),
        "json list": ("/v1/completions", b"[1, 2, 3]", json_type),
        "bad utf-8": ("/v1/completions", b'{"prompt": "\xff\xfe"}', json_type),
        "no prompt": ("/v1/completions", json.dumps({"model": MODEL_ID}).encode(), json_type),
        "prompt a number": ("/v1/completions", edit(prompt=12345), json_type),
        "max_tokens negative": ("/v1/completions", edit(max_tokens=-5), json_type),
        "max_tokens huge": ("/v1/completions", edit(max_tokens=10**9), json_type),
        "max_tokens string": ("/v1/completions", edit(max_tokens="many"), json_type),
        "temperature NaN": ("/v1/completions", edit(temperature=float("nan")), json_type),
        "unknown vector": ("/v1/completions", edit(steering=[{"vector": "nope", "scale": 1}]), json_type),
        "scale over the cap": ("/v1/completions", edit(steering=[{"vector": "v1", "scale": 1e9}]), json_type),
        "scale Infinity": ("/v1/completions", edit(steering=[{"vector": "v1", "scale": float("inf")}]), json_type),
        "layer out of range": ("/v1/completions", edit(steering=[{"vector": "v1", "layers": [999]}]), json_type),
        "steering a number": ("/v1/completions", edit(steering=42), json_type),
        "path in vector": ("/v1/completions", edit(steering=[{"vector": "../../etc/passwd"}]), json_type),
        "deep nesting": ("/v1/completions", b'{"prompt": ' + b"[" * 50_000 + b"]" * 50_000 + b"}", json_type),
        "form body": (
            "/v1/completions",
            b"prompt=hi&max_tokens=4",
            {"content-type": "application/x-www-form-urlencoded"},
        ),
        "chat without messages": ("/v1/chat/completions", json.dumps({"model": MODEL_ID}).encode(), json_type),
        "chat bad role": (
            "/v1/chat/completions",
            json.dumps({"model": MODEL_ID, "messages": [{"role": 7, "content": None}]}).encode(),
            json_type,
        ),
    }
    label = rng.choice(sorted(cases))
    path, body, headers = cases[label]
    return label, path, body, headers


def serve_run(workdir: Path, clients: int, rounds: int, seed: int) -> dict[str, Any]:
    """Each of `clients` threads sends its own request `rounds` times with a malformed request before each, all at
    once; every good answer must be the text that request gets when it is alone on the server."""
    folder, kits = make_model_folder(workdir)
    args = ["serve", "--model", str(folder), "--kits", str(kits), "--max-batch", "16", "--max-scale", "4"]
    server = ServerProcess(args, workdir / "serve.log", workdir / "home")
    with server:
        http = httpx.Client(base_url=server.url, timeout=600)
        alone = [_answer(http.post("/v1/completions", json=client_request(i))) for i in range(clients)]
        rngs = [random.Random(seed * 1000 + i) for i in range(clients)]
        with ThreadPoolExecutor(clients) as pool:
            per_client = list(pool.map(lambda i: _client(server.url, i, rounds, rngs[i]), range(clients)))
        health = httpx.get(f"{server.url}/health").status_code
    good = [a for c in per_client for a in c["good"]]
    bad = [b for c in per_client for b in c["bad"]]
    return {
        "clients": clients,
        "rounds": rounds,
        "distinct_answers_alone": len(set(alone)),
        "good_requests": len(good),
        "good_ok": sum(status == 200 for status, _ in good),
        "good_own_answer": sum(
            status == 200 and text == alone[i] for i, c in enumerate(per_client) for status, text in c["good"]
        ),
        "malformed_requests": len(bad),
        "malformed_4xx_with_error": sum(400 <= s < 500 and has_error for _l, s, has_error in bad),
        "malformed_5xx": sum(s >= 500 for _l, s, _e in bad),
        "malformed_status": _histogram(s for _l, s, _e in bad),
        "malformed_not_refused": sorted({f"{label}: {s}" for label, s, e in bad if not (400 <= s < 500 and e)}),
        "health_after": health,
    }


def _answer(response: httpx.Response) -> str:
    response.raise_for_status()
    return str(response.json()["choices"][0]["text"])


def _client(url: str, i: int, rounds: int, rng: random.Random) -> dict[str, list[Any]]:
    good: list[tuple[int, str]] = []
    bad: list[tuple[str, int, bool]] = []
    with httpx.Client(base_url=url, timeout=600) as http:
        for _ in range(rounds):
            label, path, body, headers = malformed(rng, i)
            refused = http.post(path, content=body, headers=headers)
            bad.append((label, refused.status_code, _has_error(refused)))
            answer = http.post("/v1/completions", json=client_request(i))
            good.append((answer.status_code, answer.json()["choices"][0]["text"] if answer.status_code == 200 else ""))
    return {"good": good, "bad": bad}


def _has_error(response: httpx.Response) -> bool:
    """A clear refusal: a JSON body whose error message is a sentence, not a bare code."""
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        return False
    message = error.get("message") if isinstance(error, dict) else error
    return isinstance(message, str) and len(message) >= 15


def _histogram(statuses: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for status in statuses:
        counts[str(status)] = counts.get(str(status), 0) + 1
    return dict(sorted(counts.items()))
