"""Serving throughput with per-request steering: does giving every client its own kit cost throughput?

A real server (uvicorn on loopback, in this process) serves the default model; 8 concurrent HTTP clients each send
R chat requests of exactly T new tokens (greedy, `ignore_eos`), in three conditions alternated round by round:
all unsteered, all the same kit, all different kits (one per client). One client sending the same requests one at
a time gives the sequential baseline. Throughput = generated tokens / wall time of the whole condition.
Headline: different-kits / unsteered throughput (target >= 0.9), and what batching buys over one-at-a-time.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import torch

from bench import choose_threads, interleave, ratio, spread_text, summary
from steerlab import PairSet, Vector, extract, load_model
from steerlab.errors import SteerlabError
from steerlab.evaluate.data import datasets_root
from steerlab.models import LoadedModel
from steerlab.serve.server import BackgroundServer, build_service

REPO = Path(__file__).resolve().parents[1]
MODEL = "smollm2-135m"
CLIENTS = 8
LAYERS = list(range(10, 21))
PROMPTS = [
    "Describe your morning.",
    "What do you think about the weather in spring?",
    "Tell me about your favourite place.",
    "How was your week?",
    "Write a short note to a neighbour about the noise last night.",
    "What did you have for lunch?",
    "Describe a walk in the park.",
    "What is on your mind right now?",
]


@dataclass(frozen=True)
class Settings:
    new_tokens: int
    requests_per_client: int
    rounds: int
    warmup_tokens: int  # one short request per client and condition before timing (plans compiled, memory warm)
    sequential_requests: int


FULL = Settings(new_tokens=32, requests_per_client=2, rounds=4, warmup_tokens=8, sequential_requests=12)
QUICK = Settings(new_tokens=16, requests_per_client=1, rounds=2, warmup_tokens=4, sequential_requests=8)


def happy_vector(model: LoadedModel) -> Vector:
    """A real vector: happy vs sad on 16 RepE emotion pairs, blocks 10-20."""
    folder = datasets_root(("repe",)) / "repe" / "emotions"
    happy = json.loads((folder / "happiness.json").read_text())[:16]
    sad = json.loads((folder / "sadness.json").read_text())[:16]
    records = [
        {"prompt": "Describe how you feel in one sentence.", "positive": h, "negative": s}
        for h, s in zip(happy, sad, strict=True)
    ]
    return extract(model, PairSet.from_records(records), layers=LAYERS, progress=False, name="happy")


def random_vector(like: Vector, seed: int) -> Vector:
    """A second axis: a random direction with the happy vector's per-layer norms."""
    gen = torch.Generator().manual_seed(seed)
    directions = {}
    for layer, direction in like.directions.items():
        noise = torch.randn(direction.shape[0], generator=gen)
        directions[layer] = noise / noise.norm() * direction.float().norm()
    return Vector(directions)


def kits(folder: Path, model: LoadedModel) -> dict[str, list[Any]]:
    """Steering per client for each condition; every client's kit in 'different' is its own (scale, axes)."""
    happy = happy_vector(model)
    happy.save(folder / "happy.safetensors")
    random_vector(happy, seed=1).save(folder / "noise.safetensors")
    same = [{"vector": "happy", "scale": 0.5, "layers": LAYERS}]
    different = []
    for i in range(CLIENTS):
        kit = [{"vector": "happy", "scale": round(-0.6 + 0.15 * i, 2), "layers": LAYERS}]
        if i % 2:
            kit.append({"vector": "noise", "scale": 0.1 * i, "layers": [12, 13, 14, 15, 16]})
        different.append(kit)
    return {"unsteered": [[]] * CLIENTS, "same kit": [same] * CLIENTS, "different kits": different}


class Load:
    """Sends the requests of one condition and keeps the last answers for a sanity check."""

    def __init__(self, url: str, settings: Settings) -> None:
        self.url = url
        self.settings = settings
        self.answers: dict[str, list[str]] = {}

    def ask(self, http: httpx.Client, steering: list[Any], prompt: str) -> str:
        body = {
            "model": MODEL,
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": self.settings.new_tokens,
            "temperature": 0,
            "ignore_eos": True,  # exactly new_tokens per request, whatever the steering does to the text
            "steering": steering,
        }
        response = http.post(f"{self.url}/v1/chat/completions", json=body, timeout=600)
        response.raise_for_status()
        data = response.json()
        if data["usage"]["completion_tokens"] != self.settings.new_tokens:
            raise SteerlabError(
                f"a request made {data['usage']['completion_tokens']} tokens, not {self.settings.new_tokens}"
            )
        return str(data["choices"][0]["message"]["content"])

    def warm_up(self, steering: dict[str, list[list[Any]]]) -> None:
        short = Load(self.url, Settings(self.settings.warmup_tokens, 1, 1, 0, 0))
        for name, per_client in steering.items():
            short.concurrent(name, per_client)()

    def client(self, steering: list[Any], prompt: str) -> str:
        with httpx.Client() as http:
            return [self.ask(http, steering, prompt) for _ in range(self.settings.requests_per_client)][-1]

    def concurrent(self, name: str, per_client: list[list[Any]]) -> Any:
        def condition() -> None:
            with ThreadPoolExecutor(CLIENTS) as pool:
                futures = [pool.submit(self.client, s, p) for s, p in zip(per_client, PROMPTS, strict=True)]
                self.answers[name] = [f.result() for f in futures]

        return condition

    def sequential(self, per_client: list[list[Any]]) -> float:
        start = time.perf_counter()
        with httpx.Client() as http:
            for i in range(self.settings.sequential_requests):
                self.ask(http, per_client[i % CLIENTS], PROMPTS[i % CLIENTS])
        return time.perf_counter() - start


def run(results_dir: Path, quick: bool) -> dict[str, Any]:
    settings = QUICK if quick else FULL
    threads, why = choose_threads(torch.get_num_threads())
    torch.set_num_threads(threads)
    model = load_model(MODEL)
    with tempfile.TemporaryDirectory(prefix="steerlab-bench-serve-") as tmp:
        steering = kits(Path(tmp), model)
        service = build_service(model, kits_dir=tmp, max_batch=CLIENTS, model_id=MODEL)
        with BackgroundServer(service) as server:
            load = Load(server.url, settings)
            conditions = {name: load.concurrent(name, per_client) for name, per_client in steering.items()}
            load.warm_up(steering)
            times = interleave(conditions, settings.rounds, warmup=0)
            batching = service.batcher.stats.as_dict()  # the concurrent conditions only
            sequential = load.sequential(steering["different kits"])
    details = _details(settings, times, sequential, load.answers, batching, threads, why)
    (results_dir / "serve_samples.json").write_text(json.dumps(details, indent=2) + "\n")
    return {
        "environment": {"torch_threads": threads, "threads_chosen_because": why},
        "title": "Serve: throughput with per-request steering (SmolLM2-135M, CPU, 8 concurrent clients)",
        "headline": _headline(details),
        "notes": _notes(details),
        "details": details,
    }


def _details(
    settings: Settings,
    times: dict[str, list[float]],
    sequential: float,
    answers: dict[str, list[str]],
    batching: dict[str, Any],
    threads: int,
    why: str,
) -> dict[str, Any]:
    tokens = CLIENTS * settings.requests_per_client * settings.new_tokens
    throughput = {name: tokens / statistics.median(samples) for name, samples in times.items()}
    throughput["sequential (different kits)"] = settings.sequential_requests * settings.new_tokens / sequential
    return {
        "settings": asdict(settings),
        "clients": CLIENTS,
        "threads": {"torch_threads": threads, "why": why},
        "tokens_per_condition": tokens,
        "seconds": times,
        "summary": {name: summary(samples) for name, samples in times.items()},
        "sequential_seconds": sequential,
        "tokens_per_s": throughput,
        # time(control) / time(treated) per round = throughput(treated) / throughput(control)
        "different_vs_unsteered": ratio(times["unsteered"], times["different kits"]),
        "same_vs_unsteered": ratio(times["unsteered"], times["same kit"]),
        "batched_vs_sequential": throughput["different kits"] / throughput["sequential (different kits)"],
        "batcher": batching,
        "steering_changed_text": answers["different kits"] != answers["unsteered"],
        "sample": {"prompt": PROMPTS[0], **{name: texts[0] for name, texts in answers.items()}},
    }


def _headline(details: dict[str, Any]) -> list[dict[str, Any]]:
    diff, same = details["different_vs_unsteered"], details["same_vs_unsteered"]
    tps = details["tokens_per_s"]
    return [
        {
            "name": "throughput, 8 clients: different kits / unsteered",
            "value": diff["ratio"],
            "unit": "x",
            "target_min": 0.9,
            "spread": spread_text(diff),
            "note": f"{tps['different kits']:.1f} vs {tps['unsteered']:.1f} tokens/s",
        },
        {
            "name": "throughput, 8 clients: same kit / unsteered",
            "value": same["ratio"],
            "unit": "x",
            "spread": spread_text(same),
            "note": f"{tps['same kit']:.1f} tokens/s",
        },
        {
            "name": "throughput: 8 clients batched / one at a time (different kits)",
            "value": details["batched_vs_sequential"],
            "unit": "x",
            "note": f"sequential {tps['sequential (different kits)']:.1f} tokens/s",
        },
    ]


def _notes(details: dict[str, Any]) -> list[str]:
    s = details["settings"]
    rows = details["batcher"]["mean_rows"]
    sample = details["sample"]
    return [
        f"Each condition: {details['clients']} clients x {s['requests_per_client']} requests x {s['new_tokens']} "
        f"tokens, greedy with ignore_eos; {s['rounds']} rounds alternating the conditions (ABBA). "
        f"The batcher ran {rows} rows per decode step on average over the concurrent conditions. "
        f"Sequential: {s['sequential_requests']} requests one after another.",
        f"Steering changed the text: {details['steering_changed_text']}. Sample for “{sample['prompt']}”: "
        f"unsteered “{sample.get('unsteered', '')}”; different kits (client 0, happy -0.6) "
        f"“{sample.get('different kits', '')}”.",
    ]
