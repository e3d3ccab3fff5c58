"""`steerlab serve --store URL` as a user runs it (a subprocess, a tiny model folder) against a real `hub serve` on
loopback: content signed by a trusted (pinned) key is served; unsigned content and content signed by an untrusted
key are refused with a 403 naming why, unless --allow-unsigned; a pin still holds then; a refusal writes nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from test_hub_support import ThreadServer, make_vector, store_state
from test_serve_support import serve_process
from tiny import tiny_model

from steerlab.hub import signing
from steerlab.hub.publish import sign_publication
from steerlab.hub.store import LocalStore, Publication

MODEL = "tiny-llama"


@dataclass
class Hub:
    url: str
    store: LocalStore
    home: Path  # the serving machine's STEERLAB_HOME, whose trust file pins alice
    model: Path
    audit: Path


def _publish(store: LocalStore, ref: str, seed: int, fits: dict, key: Path | None) -> None:
    data = make_vector(seed, name=ref.split("/")[1], **fits).to_bytes()
    pub = Publication(f"{ref}@1.0.0")
    if key is not None:
        sign_publication(data, pub, key)
    store.publish(data, pub)


@pytest.fixture(scope="module")
def hub(tmp_path_factory) -> Iterator[Hub]:
    root = tmp_path_factory.mktemp("serve-store")
    model = tiny_model("llama")
    model.hf_model.save_pretrained(root / MODEL)
    model.tokenizer.save_pretrained(root / MODEL)
    fits = {"hidden": model.hidden_size, "n_layers": model.n_layers, "fingerprint": model.fingerprint}
    alice, mallory = root / "alice.pem", root / "mallory.pem"
    store = LocalStore(root / "served")
    _publish(store, "alice/calm", 1, fits, alice)  # signed by the pinned key
    _publish(store, "alice/forged", 2, fits, mallory)  # in alice's namespace, signed by another key
    _publish(store, "mal/evil", 3, fits, mallory)  # signed, by a key nobody trusts
    _publish(store, "bob/plain", 4, fits, None)  # unsigned
    home = root / "home"
    public = signing.public_key_b64(signing.load_or_create_key(alice))
    pinned = subprocess.run(
        [sys.executable, "-m", "steerlab", "hub", "trust", "alice", public],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "STEERLAB_HOME": str(home)},
    )
    assert pinned.returncode == 0, pinned.stderr
    with ThreadServer(store) as server:
        yield Hub(server.url, store, home, root / MODEL, root / "audit.jsonl")
    store.close()


def _serving(hub: Hub, *extra: str):  # type: ignore[no-untyped-def]
    args = ["--model", str(hub.model), "--store", hub.url, "--audit-log", str(hub.audit), *extra]
    return serve_process(args, env={"STEERLAB_HOME": str(hub.home)})


def _steer(url: str, ref: str) -> httpx.Response:
    body = {"model": MODEL, "prompt": "hello", "max_tokens": 4, "temperature": 0, "steering": ref}
    return httpx.post(f"{url}/v1/completions", json=body, timeout=120)


def _home(hub: Hub) -> dict[str, bytes]:
    return {str(p.relative_to(hub.home)): p.read_bytes() for p in sorted(hub.home.rglob("*")) if p.is_file()}


def test_only_trusted_signed_content_is_served(hub: Hub) -> None:
    with _serving(hub) as url:
        served = _steer(url, "alice/calm")
        assert served.status_code == 200 and served.json()["steering"]["kit"] == "alice/calm"
        home, hub_state = _home(hub), store_state(hub.store)
        refusals = {
            "bob/plain": "is not signed, and only content signed by a trusted key is accepted here",
            "mal/evil": "no key is trusted for namespace 'mal'",
            "alice/forged": "namespace 'alice' is pinned to",
        }
        for ref, why in refusals.items():
            refused = _steer(url, ref)
            error = refused.json()["error"]
            assert refused.status_code == 403 and error["code"] == "untrusted_steering", ref
            assert why in error["message"] and ref in error["message"]
        assert "--allow-unsigned" in _steer(url, "bob/plain").json()["error"]["message"]
        assert _home(hub) == home and store_state(hub.store) == hub_state  # nothing written, here or there


def test_allow_unsigned_takes_unsigned_content_but_pins_still_hold(hub: Hub) -> None:
    with _serving(hub, "--allow-unsigned") as url:
        for ref in ("bob/plain", "mal/evil", "alice/calm"):
            assert _steer(url, ref).status_code == 200, ref
        home = _home(hub)
        forged = _steer(url, "alice/forged")
        assert forged.status_code == 403 and "pinned to" in forged.json()["error"]["message"]
        assert _home(hub) == home
