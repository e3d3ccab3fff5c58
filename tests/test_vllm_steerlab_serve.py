"""`steerlab serve --engine vllm` (real vLLM in .venv-vllm, a real server on loopback) against `steerlab serve` on
transformers (the default engine, in this virtualenv): the same OpenAI routes, `steering` body, limits, 4xx errors,
audit log, page and --protect guard, and the same greedy answers for most requests. With 2 steering slots for up to
8 sequences, concurrent requests with more distinct kits than slots all complete, each equal to the same request
served alone.
Skipped, saying why, only when `make vllm` has not installed vLLM."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch

from tests.vllm_support import MARKS, ROOT, STARTER, VLLM_PY, free_port, stop, wait_up
from tests.vllm_support import QUESTIONS as ALL_QUESTIONS

pytestmark = MARKS
QUESTIONS = ALL_QUESTIONS[:4]
STEERINGS: list[Any] = [
    None,
    "happy",
    [{"vector": "happy", "scale": 1.0, "layers": list(range(8, 21))}],
    [{"vector": "happy", "scale": 0.8, "layers": list(range(10, 19))}, {"vector": "angry", "scale": -0.6}],
    "mix",  # a kit file: add and ablate
    "gated",  # a conditional kit file: steers generated tokens of the questions its condition holds for
]


@pytest.fixture(scope="module")
def kits(tmp_path_factory) -> Path:
    from steerlab.card import Card
    from steerlab.vector import Vector

    folder = tmp_path_factory.mktemp("kits")
    for name in ("happy", "angry", "formal", "refusal"):
        shutil.copy(STARTER / f"{name}.safetensors", folder / f"{name}.safetensors")
    Vector({3: torch.randn(64)}, Card(name="tiny", hidden_size=64, base_model="tiny-llama")).save(
        folder / "tiny.safetensors"
    )
    from steerlab.kit import Kit, KitCard, KitEntry
    from steerlab.kitfile import save_kit

    happy, formal = (Vector.load(folder / f"{name}.safetensors") for name in ("happy", "formal"))
    mix = [KitEntry(happy, 1.2, list(range(8, 19))), KitEntry(formal, 1.0, list(range(6, 21)), mode="ablate")]
    files = [folder / "happy.safetensors", folder / "formal.safetensors"]
    save_kit(Kit(mix, KitCard(name="mix")), folder / "mix.json", vector_files=files, names=["happy", "formal"])
    save_gated_kit(folder, happy)
    return folder


def save_gated_kit(folder: Path, happy) -> None:
    """`gated.json`: happy on generated tokens, when a condition holds that splits QUESTIONS in half (its file in a
    subfolder, so the kits folder lists no condition as a vector)."""
    import steerlab
    from steerlab.kit import Kit, KitCard, KitEntry
    from steerlab.kitfile import save_kit
    from steerlab.prompts import prompt_ids
    from tests.test_vllm_compiled import midpoint_condition

    model = steerlab.load_model("smollm2-135m")
    prompts = [prompt_ids(model.tokenizer, q) for q in QUESTIONS]
    condition = midpoint_condition(model, prompts, [], "happy", 12, "mean")
    (folder / "conditions").mkdir()
    when = condition.save(folder / "conditions" / "questions.condition.safetensors")
    entry = KitEntry(happy, 1.5, list(range(8, 21)), positions="generated")
    kit = Kit([entry], KitCard(name="gated")).when(condition)
    save_kit(kit, folder / "gated.json", vector_files=[folder / "happy.safetensors"], names=["happy"], when_file=when)


@pytest.fixture(scope="module")
def vllm_server(kits: Path, tmp_path_factory) -> Iterator[tuple[str, Path]]:
    from steerlab.defaults import steerlab_home

    port = free_port()
    tmp = tmp_path_factory.mktemp("vllm-steerlab-serve")
    audit = tmp / "audit.jsonl"
    args = [
        str(VLLM_PY),
        "-m",
        "steerlab",
        "serve",
        "--engine",
        "vllm",
        "--model",
        str(steerlab_home() / "models" / "smollm2-135m"),
        "--kits",
        str(kits),
        "--port",
        str(port),
        "--max-batch",
        "8",
        "--max-steering-slots",
        "2",
        "--max-model-len",
        "512",
        "--enforce-eager",
        "--audit-log",
        str(audit),
        "--protect",  # doses against the norms shipped for the default model (vLLM's model runs no forward here)
        str(kits / "refusal.safetensors"),
    ]
    env = {**os.environ, "VLLM_LOGGING_LEVEL": "WARNING", "VLLM_CPU_KVCACHE_SPACE": "1"}
    log = (tmp / "server.log").open("w")
    proc = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_up(proc, url, tmp / "server.log")
        yield url, audit
    finally:
        stop(proc)
        log.close()


@pytest.fixture(scope="module")
def hf_audit(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("hf-audit") / "audit.jsonl"


@pytest.fixture(scope="module")
def hf_server(kits: Path, hf_audit: Path) -> Iterator[str]:
    import steerlab
    from steerlab.serve.server import BackgroundServer, build_service

    model = steerlab.load_model("smollm2-135m")
    protect = [str(kits / "refusal.safetensors")]
    service = build_service(model, kits_dir=kits, max_batch=8, protect=protect, audit_path=hf_audit)
    with BackgroundServer(service) as server:
        yield server.url


def chat(url: str, question: str, steering: Any = None, **extra: Any) -> httpx.Response:
    body: dict[str, Any] = {
        "model": "",
        "messages": [{"role": "user", "content": question}],
        "max_tokens": 12,
        "temperature": 0.0,
        **extra,
    }
    if steering is not None:
        body["steering"] = steering
    return httpx.post(f"{url}/v1/chat/completions", json=body, timeout=600)


def answer(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    return str(response.json()["choices"][0]["message"]["content"])


def test_greedy_answers_equal_the_transformers_engine_for_most_requests(vllm_server, hf_server, hf_audit) -> None:
    """Every (steering, question) pair, sent to both servers at once (each batches them; a row's answer does not
    depend on its batch): the same kit label and hash, and the same greedy text for most of them. The conditional
    kit's audit records hold the same condition scores and decisions."""
    url, audit = vllm_server
    asks = [(steering, question) for steering in STEERINGS for question in QUESTIONS]

    def both(ask: tuple[Any, str]) -> tuple[httpx.Response, httpx.Response]:
        return chat(url, ask[1], ask[0]), chat(hf_server, ask[1], ask[0])

    with ThreadPoolExecutor(8) as pool:
        pairs = list(pool.map(both, asks))
    for mine, theirs in pairs:
        assert mine.json()["steering"] == theirs.json()["steering"]  # the same kit label and hash
    same = sum(answer(mine) == answer(theirs) for mine, theirs in pairs)
    print(f"vllm == transformers for {same} of {len(pairs)} steered and unsteered chat requests")
    assert same >= 0.75 * len(pairs)
    assert len({answer(mine) for mine, _ in pairs}) > len(QUESTIONS) * 2  # steering changed the answers
    # The conditional kit: the same answers as the transformers engine's, and its gate open for some questions
    # (a changed answer) and shut for others (the unsteered answer, exactly).
    plain = {q: answer(mine) for (steering, q), (mine, _) in zip(asks, pairs, strict=True) if steering is None}
    gated = [(q, answer(m), answer(t)) for (st, q), (m, t) in zip(asks, pairs, strict=True) if st == "gated"]
    assert sum(mine == theirs for _, mine, theirs in gated) >= len(QUESTIONS) - 1, gated
    opened = [mine != plain[q] for q, mine, _ in gated]
    assert any(opened) and not all(opened), (gated, plain)
    ids = [(m.json()["id"], t.json()["id"]) for (st, _), (m, t) in zip(asks, pairs, strict=True) if st == "gated"]
    assert_same_condition_records(audit, hf_audit, ids)


def assert_same_condition_records(audit: Path, hf_audit: Path, ids: list[tuple[str, str]]) -> None:
    """Each gated request's audit record: the condition's score and decision, made inside vLLM's worker, equal the
    transformers engine's for the same question."""
    mine, theirs = (_audit_by_id(path) for path in (audit, hf_audit))
    for vllm_id, hf_id in ids:
        [[a]], [[b]] = mine[vllm_id.split("-", 1)[1]]["conditions"], theirs[hf_id.split("-", 1)[1]]["conditions"]
        assert {k: v for k, v in a.items() if k != "score"} == {k: v for k, v in b.items() if k != "score"}
        assert a["score"] == pytest.approx(b["score"], rel=1e-3, abs=1e-4)
    assert {mine[v.split("-", 1)[1]]["conditions"][0][0]["holds"] for v, _ in ids} == {True, False}


def _audit_by_id(path: Path) -> dict[str, dict[str, Any]]:
    records = (json.loads(line) for line in path.read_text().splitlines())
    return {r["request_id"]: r for r in records if r.get("request_id")}


def test_more_distinct_kits_than_slots_wait_and_each_gets_its_own(vllm_server) -> None:
    """8 concurrent requests, 6 distinct kits and 2 unsteered, on 2 slots: all complete, each equal to itself
    served alone (so none ran with another's kit or without its own)."""
    url, _ = vllm_server
    specs: list[Any] = [[{"vector": "happy" if k % 2 else "angry", "scale": 0.5 + 0.2 * k}] for k in range(6)]
    specs += [None, None]
    alone = [answer(chat(url, QUESTIONS[k % 4], s)) for k, s in enumerate(specs)]
    with ThreadPoolExecutor(len(specs)) as pool:
        together = list(pool.map(lambda ks: answer(chat(url, QUESTIONS[ks[0] % 4], ks[1])), enumerate(specs)))
    assert together == alone
    assert len(set(alone)) > 4


def test_bad_input_gets_the_same_4xx_and_the_engine_keeps_serving(vllm_server, hf_server) -> None:
    url, audit = vllm_server
    before = answer(chat(url, QUESTIONS[0], "happy"))
    bad: list[tuple[Any, int, str]] = [
        ("nope", 404, "unknown"),
        ([{"vector": "tiny"}], 400, "incompatible_vector"),
        ([{"vector": "happy", "scale": 99}], 400, "scale_too_large"),
        ([{"vector": "happy", "layers": [999]}], 400, "invalid_layers"),
        ([{"vector": "happy", "weight": 1}], 400, "malformed_body"),
        (42, 400, "malformed_body"),
        # --protect on both engines: -4 x refusal over blocks 12-24 is a relative dose far above the 0.2 threshold.
        ([{"vector": "refusal", "scale": -4.0, "layers": list(range(12, 25))}], 400, "protected_direction"),
    ]
    for steering, status, code in bad:
        mine, theirs = chat(url, QUESTIONS[0], steering), chat(hf_server, QUESTIONS[0], steering)
        assert (mine.status_code, theirs.status_code) == (status, status), (steering, mine.text, theirs.text)
        assert mine.json()["error"]["code"] == theirs.json()["error"]["code"], (mine.text, theirs.text)
        assert code in mine.text, mine.text
    broken = httpx.post(
        f"{url}/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"}, timeout=60
    )
    assert broken.status_code == 400, broken.text
    long = chat(url, "word " * 600)
    assert long.status_code == 400 and "context" in long.text, long.text
    assert chat(url, QUESTIONS[0], max_tokens=10**6).status_code == 400
    assert answer(chat(url, QUESTIONS[0], "happy")) == before  # still serving, the same answer
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    assert {"ok", "rejected"} <= {r["status"] for r in records}
    steered = [r for r in records if r["status"] == "ok" and r["kit"] == "happy"]
    assert steered and steered[-1]["steering_hash"] and steered[-1]["vectors"][0]["sha256"]


def test_streaming_page_and_catalogue_are_the_servers_own(vllm_server) -> None:
    url, _ = vllm_server
    body = {
        "model": "",
        "prompt": QUESTIONS[1],
        "max_tokens": 8,
        "temperature": 0.0,
        "stream": True,
        "steering": "happy",
    }
    with httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=600) as response:
        assert response.status_code == 200
        chunks = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert chunks[-1] == "[DONE]"
    streamed = "".join(json.loads(c)["choices"][0]["text"] for c in chunks[:-1] if json.loads(c)["choices"])
    plain = httpx.post(f"{url}/v1/completions", json={**body, "stream": False}, timeout=600)
    assert streamed == plain.json()["choices"][0]["text"]
    page = httpx.get(f"{url}/", timeout=60)
    assert page.status_code == 200 and "<html" in page.text.lower()
    catalogue = httpx.get(f"{url}/v1/steering", timeout=60).json()
    assert {"happy", "angry", "mix"} <= {item["id"] for item in catalogue["data"]}
