"""`steerlab hub serve --protect starter/refusal --safety-policy flag|refuse`: a real store server on loopback screens
vector uploads against the starter pack's refusal direction (model-free, with the shipped reference norms)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from test_hub_support import AppServer

from steerlab import SteerlabError, Vector, resolve
from steerlab.guard.uploads import FLAG_TAG, UploadScreen
from steerlab.hub import open_store
from steerlab.hub.server import create_app
from steerlab.hub.store import LocalStore
from steerlab.kit import Kit, KitCard, KitEntry
from steerlab.kitfile import save_kit


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
        "half": _renamed(refusal * 0.5, "half", "Half of something."),  # also passes alone
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
        assert flagged == {"sunny", "faint"}  # half of the protected direction strengthens it too
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


def test_bad_policies(tmp_path: Path) -> None:
    with pytest.raises(SteerlabError, match="--safety-policy"):
        UploadScreen.build(["starter/refusal"], "warn")
    screen = UploadScreen.build(["starter/refusal"], "refuse")
    with pytest.raises(SteerlabError, match="screened against the store"):
        screen.screen(b'{"entries": []}', "kit")  # a kit is screened as it steers, with its vectors from a store


# ----- kit uploads: each vector passes alone; the kit, summed per layer at its scales, is what is screened -----
def _kit_bytes(folder: Path, name: str, entries: list[tuple[Vector, float]]) -> bytes:
    """A store kit (entries name their vectors by sha256) of `entries` at their scales, on every layer."""
    files = [vector.save(folder / f"{vector.card.name}.safetensors") for vector, _ in entries]
    kit = Kit([KitEntry(vector, scale) for vector, scale in entries], KitCard(name=name, description=f"kit {name}"))
    return save_kit(kit, folder / f"{name}.json", files).read_bytes()


def _upload_kit(url: str, name: str, data: bytes, token: str) -> httpx.Response:
    return httpx.post(
        f"{url}/api/v1/entries/ns/{name}?version=1.0.0&kind=kit",
        content=data,
        headers={"authorization": f"Bearer {token}", "content-type": "application/json"},
        timeout=60,
    )


@pytest.fixture(scope="module")
def kits(vectors: dict[str, Vector], tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    folder = tmp_path_factory.mktemp("kits")
    refusal, happy, half = vectors["refusal"], vectors["happy"], vectors["half"]
    return {
        "cheer": _kit_bytes(folder, "cheer", [(refusal, -0.8), (happy, 0.5)]),  # negated at the kit's scale
        "split": _kit_bytes(folder, "split", [(half, -0.8), (happy, 0.5), (refusal, -0.4)]),  # split in two
        "firm": _kit_bytes(folder, "firm", [(refusal, 0.8), (happy, 0.5)]),  # strengthens refusal: passes
    }


@contextmanager
def _kit_parts_served(tmp_path: Path, policy: str, vectors: dict[str, Vector]) -> Iterator[tuple[str, LocalStore, str]]:
    """A screening store server holding the kits' vectors (each of which passes the screen alone)."""
    server, store, token = _serve(tmp_path, policy)
    with server:
        for name in ("refusal", "happy", "half"):
            assert _upload(server.url, name, vectors[name], token).status_code == 201, name
        yield server.url, store, token


def test_flag_policy_flags_a_kit_that_cancels_refusal(
    tmp_path: Path, vectors: dict[str, Vector], kits: dict[str, bytes]
) -> None:
    with _kit_parts_served(tmp_path, "flag", vectors) as (url, _store, token):
        for name, data in kits.items():
            response = _upload_kit(url, name, data, token)
            assert response.status_code == 201, response.text
        remote = open_store(url)
        assert {info.name for info in remote.search(tag=FLAG_TAG)} == {"cheer", "split"}
        shown = remote.show("ns/cheer")
        assert shown.kind == "kit" and FLAG_TAG in shown.tags
        assert shown.description.startswith("WARNING: cancels protected direction 'refusal'")
        assert shown.description.endswith("kit cheer")
        assert not remote.show("ns/firm").description.startswith("WARNING")


def test_refuse_policy_refuses_such_a_kit_and_stores_nothing(
    tmp_path: Path, vectors: dict[str, Vector], kits: dict[str, bytes]
) -> None:
    with _kit_parts_served(tmp_path, "refuse", vectors) as (url, store, token):
        before = sorted(store.blobs.digests())
        for name in ("cheer", "split"):
            response = _upload_kit(url, name, kits[name], token)
            assert response.status_code == 400, name
            message = response.json()["error"]
            assert "protected direction 'refusal'" in message and "most at layer" in message
        assert sorted(store.blobs.digests()) == before and not store.blobs.leftovers()
        assert _upload_kit(url, "firm", kits["firm"], token).status_code == 201
        assert sorted(info.name for info in store.list(namespace="ns", kind="kit")) == ["firm"]


def test_a_kit_whose_vectors_are_not_in_the_store_cannot_be_screened(
    tmp_path: Path, vectors: dict[str, Vector], kits: dict[str, bytes]
) -> None:
    server, store, token = _serve(tmp_path, "flag")
    with server:
        response = _upload_kit(server.url, "cheer", kits["cheer"], token)
        assert response.status_code == 400
        message = response.json()["error"]
        assert "cannot screen this one" in message and "Push the kit's vectors too" in message
        assert store.list(namespace="ns") == [] and not list(store.blobs.digests())
