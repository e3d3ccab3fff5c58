"""`steerlab hub audit REF --from URL --attach --token T`: the audit report is filed with the entry on a real
`hub serve` (loopback) through its authenticated audit route, and `hub show --from URL` prints it. A tiny random
model keeps the generation cheap; hostile and unauthorised attach requests are refused and write nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import torch
from test_hub_support import ThreadServer
from tiny import tiny_model

from steerlab import Card, Vector
from steerlab.guard.attach import MAX_RECORD_BYTES
from steerlab.hub.store import LocalStore, Publication

HARMFUL = Path(__file__).parent / "data" / "datasets" / "refusal-direction" / "splits" / "harmful_test.json"


@dataclass
class Served:
    url: str
    store: LocalStore
    tokens: dict[str, str]
    model: Path
    protective: Path


def _vector(model, name: str, seed: int) -> Vector:  # type: ignore[no-untyped-def]
    gen = torch.Generator().manual_seed(seed)
    directions = {layer: torch.randn(model.hidden_size, generator=gen) * 4 for layer in range(model.n_layers)}
    card = Card(name=name, hidden_size=model.hidden_size, n_layers=model.n_layers)
    card.model_fingerprint = model.fingerprint
    return Vector(directions, card)


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("audit-attach")
    model = tiny_model("llama")
    model.hf_model.save_pretrained(root / "tiny-llama")
    model.tokenizer.save_pretrained(root / "tiny-llama")
    protective = _vector(model, "guard", 1).save(root / "guard.safetensors")
    store = LocalStore(root / "served")
    for name, seed in (("warm", 2), ("cold", 3)):
        store.publish(_vector(model, name, seed).to_bytes(), Publication(f"team/{name}@1.0.0"))
    tokens = {
        "write": store.create_token("team"),
        "admin": store.create_token("team", scope="admin", principal="boss"),
        "read": store.create_token("team", scope="read", principal="reader"),
        "other": store.create_token("elsewhere"),
    }
    with ThreadServer(store) as server:
        yield Served(server.url, store, tokens, root / "tiny-llama", protective)
    store.close()


def _hub(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "steerlab", "hub", *args], capture_output=True, text=True, timeout=600)


def _audits(store: LocalStore) -> list[Path]:
    return sorted((store.root / "audits").glob("*")) if (store.root / "audits").exists() else []


def test_an_audit_is_attached_on_the_server_and_shown(served: Served, tmp_path: Path) -> None:
    out = tmp_path / "audit"
    done = _hub(
        "audit", "team/warm:2", "--model", str(served.model), "--from", served.url, "--attach",
        "--token", served.tokens["write"], "--protective", str(served.protective), "--prompts", str(HARMFUL),
        "--n", "2", "--max-new-tokens", "4", "--out", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"attached to team/warm@1.0.0 in RemoteStore('{served.url}')" in done.stdout
    written = json.loads((out / "audit.json").read_text())
    sha256 = served.store.show("team/warm").sha256
    assert _audits(served.store) == [served.store.root / "audits" / f"{sha256}.json"]
    assert json.loads(_audits(served.store)[0].read_text()) == written  # the server holds exactly the report
    shown = _hub("show", "team/warm", "--from", served.url)
    assert shown.returncode == 0, shown.stderr
    assert "refusal audit on tiny-llama (2 harmful requests): refuses unsteered" in shown.stdout.replace("\n", " ")
    assert "refusal audit" not in _hub("show", "team/cold", "--from", served.url).stdout
    assert httpx.get(f"{served.url}/api/v1/entries/team/warm/1.0.0/audit").json()["audit"] == written


def test_attach_requests_without_the_right_or_with_a_bad_record_are_refused(served: Served) -> None:
    route = f"{served.url}/api/v1/entries/team/cold/1.0.0/audit"
    before = _audits(served.store)
    record = json.loads(_audits(served.store)[0].read_text()) if before else {"model": "m", "prompts": []}
    record = {**record, "rates": {"unsteered": [0.5, 0.0, 1.0]}, "effects": {"vector": [0.0, -1.0, 1.0]}}

    def put(token: str | None, **kwargs) -> httpx.Response:  # type: ignore[no-untyped-def]
        headers = {"authorization": f"Bearer {token}"} if token else {}
        return httpx.put(kwargs.pop("url", route), headers=headers, timeout=60, **kwargs)

    refused = {
        "no token": (put(None, json=record), 401, "needs its token"),
        "read token": (put(served.tokens["read"], json=record), 403, "may only read"),
        "other namespace": (put(served.tokens["other"], json=record), 403, "not 'team'"),
        "not JSON": (put(served.tokens["write"], content=b"{nope"), 400, "not JSON"),
        "not a record": (put(served.tokens["write"], json={"model": 3, "rates": []}), 400, "'model' must be"),
        "NaN rate": (
            put(served.tokens["write"], content=json.dumps({**record, "rates": {"x": [float("nan"), 0, 1]}})),
            400,
            "'rates' must map",
        ),
        "too large": (put(served.tokens["write"], content=b" " * (MAX_RECORD_BYTES + 10)), 413, "over the limit"),
        "no such entry": (put(served.tokens["write"], json=record, url=route.replace("cold", "gone")), 404, "no entry"),
    }
    for what, (response, status, message) in refused.items():
        assert response.status_code == status, (what, response.text)
        assert message in response.json()["error"], (what, response.text)
    assert _audits(served.store) == before  # nothing was written

    assert put(served.tokens["admin"], json=record).status_code == 200  # an admin token may attach too
    assert httpx.get(route).json()["audit"] == record


def test_attach_to_a_server_needs_a_token_before_any_generation(served: Served) -> None:
    done = _hub("audit", "team/warm", "--model", "no-such-model", "--from", served.url, "--attach")
    assert done.returncode != 0 and "needs a write or admin token for namespace 'team'" in done.stderr
