"""Isolation under load: 16 concurrent clients, each with its own kit (or none), greedy, for a bounded time."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from test_serve_support import client, make_kits_dir, served

pytestmark = pytest.mark.slow
SECONDS = 12.0  # clients keep sending until then (each sends at least once)
MAX_TOKENS = 8
R = list(range(10, 19))
CLIENTS = [  # (steering, prompt): all different; prompts of different lengths so rows are padded differently
    (None, "Hi!"),
    ([{"vector": "happy", "scale": 0.5, "layers": R}], "Tell me about your weekend."),
    ([{"vector": "happy", "scale": -0.5, "layers": R}], "Tell me about your weekend."),
    ("mood", "How is the weather today?"),
    ([{"vector": "mood:happy", "scale": 1.0}], "Describe a cat in one sentence."),
    ([{"vector": "noise", "scale": 0.8, "layers": [12, 13, 14]}], "What should I cook tonight?"),
    ("happy", "Give me a short piece of advice about work and life balance."),
    ([{"vector": "happy", "scale": 0.3, "layers": [8, 9, 10]}, {"vector": "noise", "scale": -0.4}], "Hi!"),
    (None, "Write a haiku about the sea."),
    ([{"vector": "happy", "scale": 0.8, "layers": [15, 16, 17, 18, 19, 20]}], "What is your favourite colour?"),
    ([{"vector": "noise", "scale": 1.2, "layers": R}], "Tell me about your weekend."),
    ([{"vector": "mood:noise", "scale": -1.0}, {"vector": "mood:happy", "scale": 0.4}], "How do I learn to swim?"),
    ([{"vector": "happy", "scale": 0.2}], "Say something kind."),
    ([{"vector": "happy", "scale": -0.9, "layers": [10, 11, 12]}], "How was school today, honey? Did anything happen?"),
    ([], "Describe a cat in one sentence."),
    ([{"vector": "happy", "scale": 0.6, "layers": R}, {"vector": "happy", "scale": -0.1, "layers": [20]}], "Hello"),
]


@pytest.fixture(scope="module")
def server(default_model, datasets, tmp_path_factory):
    kits = make_kits_dir(tmp_path_factory.mktemp("kits"), default_model, datasets)
    with served(
        default_model, kits, max_batch=16, audit_path=Path(tmp_path_factory.mktemp("audit")) / "a.jsonl"
    ) as srv:
        yield srv


def _ask(api, steering, prompt: str) -> str:
    out = api.chat.completions.create(
        model="smollm2-135m",
        messages=[{"role": "user", "content": prompt}],
        max_tokens=MAX_TOKENS,
        temperature=0,
        extra_body={"steering": steering},
    )
    return out.choices[0].message.content


def _keep_asking(api, steering, prompt: str, deadline: float) -> list[str]:
    answers = [_ask(api, steering, prompt)]
    while time.monotonic() < deadline:
        answers.append(_ask(api, steering, prompt))
    return answers


def test_sixteen_clients_each_get_their_own_answer(server) -> None:
    api = client(server)
    deadline = time.monotonic() + SECONDS
    with ThreadPoolExecutor(len(CLIENTS)) as pool:
        futures = [pool.submit(_keep_asking, api, steering, prompt, deadline) for steering, prompt in CLIENTS]
        answers = [f.result(timeout=900) for f in futures]  # raises if any request failed
    stats = server.service.batcher.stats.as_dict()
    alone = [_ask(api, steering, prompt) for steering, prompt in CLIENTS]  # nothing else in flight now
    assert stats["max_rows"] >= 8 and stats["mean_rows"] > 2, stats  # the load really was batched
    for i, (got, want) in enumerate(zip(answers, alone, strict=True)):
        assert set(got) == {want}, f"client {i} ({CLIENTS[i][0]!r}): {got} != {want!r}"
    # Steering really differed between clients: the same prompt gives different answers under different kits.
    weekend = {alone[i] for i, (_, prompt) in enumerate(CLIENTS) if prompt == "Tell me about your weekend."}
    assert len(weekend) == 3
    assert sum(len(a) for a in answers) >= len(CLIENTS)
