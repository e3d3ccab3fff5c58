"""`steerlab hub serve --protect starter/refusal --safety-policy flag|refuse`: a real store server on loopback screens
vector uploads against the starter pack's refusal direction (model-free, with the shipped reference norms)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import httpx
import pytest
from test_hub_support import AppServer

from steerlab import SteerlabError, Vector, resolve
from steerlab.guard.uploads import FLAG_TAG, UploadScreen
from steerlab.hub import open_store
from steerlab.hub.server import create_app
from steerlab.hub.store import LocalStore


def _renamed(vector: Vector, name: str, description: str) -> Vector:
    card = dataclasses.replace(vector.card, name=name, description=description)
    return Vector(dict(vector.directions), card)


@pytest.fixture(scope="module")
def vectors() -> dict[str, Vector]:
    refusal = resolve("starter/refusal").entries[0].vector
    anti = _renamed(-refusal, "sunny", "A sunny, upbeat mood.")
    return {
        "sunny": anti,  # the negated refusal direction under a benign name
        "faint": _renamed(anti * 0.01, "faint", "Barely anything."),  # the same direction, tiny stored norm
        "happy": resolve("starter/happy").entries[0].vector,
        "refusal": refusal,  # the protected direction itself strengthens refusal: it passes
    }


def _serve(tmp_path: Path, policy: str) -> tuple[AppServer, LocalStore, str]:
    store = LocalStore(tmp_path / policy)
    screen = UploadScreen.build(["starter/refusal"], policy)
    return AppServer(create_app(store, screen)), store, store.create_token("ns")


def _upload(url: str, name: str, vector: Vector, token: str) -> httpx.Response:
    return httpx.post(
        f"{url}/api/v1/entries/ns/{name}?version=1.0.0",
        content=vector.to_bytes(),
        headers={"authorization": f"Bearer {token}"},
        timeout=60,
    )


def test_flag_policy_stores_with_a_visible_warning(tmp_path: Path, vectors: dict[str, Vector]) -> None:
    server, _store, token = _serve(tmp_path, "flag")
    with server:
        for name, vector in vectors.items():
            assert _upload(server.url, name, vector, token).status_code == 201, name
        remote = open_store(server.url)
        flagged = {info.name for info in remote.search(tag=FLAG_TAG)}
        assert flagged == {"sunny", "faint"}
        shown = remote.show("ns/sunny")
        assert shown.description.startswith("WARNING: cancels protected direction 'refusal'")
        assert shown.description.endswith("A sunny, upbeat mood.") and FLAG_TAG in shown.tags
        assert not remote.show("ns/happy").description.startswith("WARNING")
        assert FLAG_TAG not in remote.show("ns/refusal").tags


def test_refuse_policy_stores_nothing(tmp_path: Path, vectors: dict[str, Vector]) -> None:
    server, store, token = _serve(tmp_path, "refuse")
    with server:
        for name in ("sunny", "faint"):
            response = _upload(server.url, name, vectors[name], token)
            assert response.status_code == 400, name
            message = response.json()["error"]
            assert "protected direction 'refusal'" in message and "layer" in message
        assert _upload(server.url, "happy", vectors["happy"], token).status_code == 201
        assert [info.name for info in store.list(namespace="ns")] == ["happy"]
        blobs = [p for p in (tmp_path / "refuse" / "blobs").rglob("*") if p.is_file()]
        assert [p.parent.name + p.name for p in blobs] == [store.show("ns/happy").sha256]  # no refused bytes kept


def test_bad_policies_and_kits(tmp_path: Path) -> None:
    with pytest.raises(SteerlabError, match="--safety-policy"):
        UploadScreen.build(["starter/refusal"], "warn")
    screen = UploadScreen.build(["starter/refusal"], "refuse")
    assert screen.screen(b'{"entries": []}', "kit") is None  # kits are screened where they are applied
