"""The store under stress, over HTTP against `steerlab hub serve` subprocesses: kill -9 during pushes, and
concurrent pushes and pulls. Every check reads back what the server says and what `steerlab hub verify` says."""

from __future__ import annotations

import hashlib
import random
import threading
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import torch

from bench.reliability_procs import ServerProcess, hub_server, hub_verify
from steerlab import Card, Vector
from steerlab.hub.protocol import API
from steerlab.hub.store import LocalStore

CHUNK = 16 * 1024
CREATED = "2026-01-01T00:00:00+00:00"  # fixed, so that a seed gives the same bytes on every run


def payload(seed: int, hidden: int = 256, n_layers: int = 8) -> bytes:
    gen = torch.Generator().manual_seed(seed)
    directions = {layer: torch.randn(hidden, generator=gen) for layer in range(n_layers)}
    card = Card(name=f"v{seed}", description=f"reliability payload {seed}", n_layers=n_layers, created_at=CREATED)
    return Vector(directions, card).to_bytes()


def new_store(root: Path, catalog_url: str | None, namespace: str) -> str:
    """Create the store (its store.json names the catalogue for the server) and a write token for `namespace`."""
    store = LocalStore(root, catalog_url=catalog_url)
    try:
        return store.create_token(namespace)
    finally:
        store.close()


def push(url: str, token: str, ref: str, content: bytes | Iterator[bytes]) -> httpx.Response:
    namespace_name, _, version = ref.partition("@")
    params = {"version": version} if version else {}
    headers = {"authorization": f"Bearer {token}"}
    # generous: 32 uploads at once on two shared cores take seconds each
    return httpx.post(
        f"{url}{API}/entries/{namespace_name}", params=params, content=content, headers=headers, timeout=300
    )


def entries(url: str, namespace: str) -> list[dict[str, Any]]:
    params: dict[str, Any] = {"namespace": namespace, "all_versions": True}
    response = httpx.get(f"{url}{API}/entries", params=params, timeout=300)
    response.raise_for_status()
    return list(response.json()["entries"])


def content(url: str, ref: str) -> httpx.Response:
    base, _, version = ref.partition("@")
    return httpx.get(f"{url}{API}/entries/{base}/{version or 'latest'}/content", timeout=300)


def audit_store(url: str, root: Path, workdir: Path, namespace: str, expected: Mapping[str, bytes]) -> dict[str, Any]:
    """What the server lists under `namespace`, against the names pushed (name -> bytes): each listed entry's
    content must hash to its row and equal what was pushed under that name, once; plus `hub verify`."""
    listed = entries(url, namespace)
    names = [e["ref"].split("@")[0] for e in listed]
    wrong = 0
    for entry in listed:
        got = content(url, entry["ref"])
        want = expected.get(entry["ref"].split("@")[0])
        if got.status_code != 200 or hashlib.sha256(got.content).hexdigest() != entry["sha256"] or got.content != want:
            wrong += 1
    rc, report = hub_verify(root, workdir)
    return {
        "listed": len(listed),
        "missing": len(set(expected) - set(names)),
        "duplicated": len(names) - len(set(names)),
        "unexpected_or_wrong": wrong + len(set(names) - set(expected)),
        "verify_clean": rc == 0,
        "verify_report": report.splitlines()[-1] if report else "",
        "unfinished_upload_notes": report.count("unfinished upload"),
    }


def _killing_body(data: bytes, server: ServerProcess, rng: random.Random, landed: list[str]) -> Iterator[bytes]:
    """Stream `data`; kill -9 the server either mid-body or a few ms after the last byte (while it validates,
    writes the blob or commits the row)."""
    chunks = [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)]
    kill_at = rng.randrange(1, len(chunks) + 1)  # == len(chunks): after the body
    for k, chunk in enumerate(chunks):
        if k == kill_at:
            server.kill9()
            landed.append("mid-body")
        yield chunk
    if kill_at == len(chunks):
        timer = threading.Timer(rng.uniform(0.0, 0.05), server.kill9)
        timer.start()
        landed.append("after-body")


def crash_run(workdir: Path, catalog_url: str | None, pushes: int, kills: int, seed: int) -> dict[str, Any]:
    """`pushes` pushes (auto versions, one name each), `kills` of them with a kill -9 of the server on the way;
    after each kill: restart, audit, and push again only what is not there."""
    root, namespace = workdir / "store", "crash"
    token = new_store(root, catalog_url, namespace)
    rng = random.Random(seed)
    kill_at = set(rng.sample(range(pushes), kills))
    pushed: dict[str, bytes] = {}
    after_kills: list[dict[str, Any]] = []
    refused = 0
    with hub_server(root, workdir) as server:
        for i in range(pushes):
            name, data = f"{namespace}/v{i:03d}", payload(seed * 10_000 + i, hidden=1024, n_layers=16)
            if i not in kill_at:
                refused += push(server.url, token, name, data).status_code != 201
                pushed[name] = data
                continue
            landed: list[str] = []
            try:
                answer = push(server.url, token, name, _killing_body(data, server, rng, landed)).status_code
            except httpx.TransportError:
                answer = None
            server.wait_exit()  # the after-body timer may still be on its way
            restart_s = server.start()
            check = audit_store(server.url, root, workdir, namespace, {**pushed, name: data})
            committed = check["listed"] == len(pushed) + 1
            check.update(kill=landed[0] if landed else "?", answer=answer, committed=committed, restart_s=restart_s)
            check["missing"] -= not committed  # the killed push may or may not have landed; both are consistent
            after_kills.append(check)
            if not committed:
                refused += push(server.url, token, name, data).status_code != 201
            pushed[name] = data
        final = audit_store(server.url, root, workdir, namespace, pushed)
    return {"pushes": pushes, "kills": kills, "refused_pushes": refused, "after_kills": after_kills, "final": final}


def concurrency_run(workdir: Path, catalog_url: str | None, clients: int, rounds: int, seed: int) -> dict[str, Any]:
    """Per round: `clients` pushes and `clients` pulls on a pool of `clients` threads, shuffled. Half the pushes race
    for auto versions of one name, half go to names of their own; half the pulls read a fixed entry, half the
    racing name's latest (which must be exactly the bytes pushed as the version the server names)."""
    root, namespace = workdir / "store", "conc"
    token = new_store(root, catalog_url, namespace)
    rng = random.Random(seed)
    totals = {"pushes": 0, "pushes_ok": 0, "pulls": 0, "pulls_ok": 0, "pulls_before_first": 0}
    totals.update(lost=0, duplicated=0, mixed_up=0)
    with hub_server(root, workdir) as server:
        fixed = payload(seed)
        assert push(server.url, token, f"{namespace}/fixed@1.0.0", fixed).status_code == 201
        for r in range(rounds):
            _one_round(server.url, token, namespace, fixed, clients, r, rng, totals)
        final = audit_store(server.url, root, workdir, namespace, {})
    totals["verify_clean"] = final["verify_clean"]
    totals["listed_at_end"] = final["listed"]
    return totals


def _one_round(
    url: str, token: str, ns: str, fixed: bytes, clients: int, r: int, rng: random.Random, totals: dict[str, Any]
) -> None:
    racing = f"{ns}/race{r}"
    datas = {i: payload(r * 1000 + i + 1) for i in range(clients)}
    jobs = [("push", i) for i in range(clients)] + [("pull", i) for i in range(clients)]
    rng.shuffle(jobs)

    def job(kind: str, i: int) -> tuple[str, int, int, str, bytes]:
        if kind == "push":
            ref = racing if i % 2 == 0 else f"{ns}/own{r}-{i}@1.0.0"
            answer = push(url, token, ref, datas[i])
            return kind, i, answer.status_code, answer.json().get("ref", ""), b""
        answer = content(url, f"{ns}/fixed@1.0.0" if i % 2 == 0 else racing)
        return kind, i, answer.status_code, answer.headers.get("x-steerlab-ref", ""), answer.content

    with ThreadPoolExecutor(clients) as pool:
        done = list(pool.map(lambda j: job(*j), jobs))
    by_ref = {ref: datas[i] for kind, i, status, ref, _ in done if kind == "push" and status == 201}
    pushes = [d for d in done if d[0] == "push"]
    totals["pushes"] += len(pushes)
    totals["pushes_ok"] += sum(d[2] == 201 for d in pushes)
    for _kind, i, status, ref, data in (d for d in done if d[0] == "pull"):
        totals["pulls"] += 1
        if i % 2 == 0:
            totals["pulls_ok"] += status == 200 and data == fixed
        elif status == 404 and not ref:  # pulled before the first racing push had committed
            totals["pulls_before_first"] += 1
            totals["pulls_ok"] += 1
        else:
            totals["pulls_ok"] += status == 200 and by_ref.get(ref) == data
            totals["mixed_up"] += status == 200 and by_ref.get(ref) != data
    racers = sum(1 for _k, i, *_ in pushes if i % 2 == 0)
    versions = [e["version"] for e in httpx.get(f"{url}{API}/entries/{racing}", timeout=300).json()["versions"]]
    totals["duplicated"] += len(versions) - len(set(versions))
    totals["lost"] += racers - len(set(versions))
    for ref, data in by_ref.items():  # every acknowledged version reads back as exactly its own bytes
        totals["mixed_up"] += content(url, ref).content != data
    totals["lost"] += (clients - racers) - sum(1 for ref in by_ref if "/own" in ref)
