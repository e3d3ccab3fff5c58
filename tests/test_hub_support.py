"""Shared pieces of the hub tests: a throwaway PostgreSQL cluster, a catalogue URL per backend, a real uvicorn server.

The hub test modules import these fixtures (as `*_fixture`; pytest knows them by their `name`);
the tests at the bottom check the fixtures themselves.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Self

import pytest
import torch

from bench.reliability_procs import new_database, postgres_bindir, postgres_cluster
from steerlab.hub.store import LocalStore
from steerlab.vector import Card, Vector

BASE_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_vector(
    seed: int = 0, hidden: int = 576, n_layers: int = 30, name: str = "test", fingerprint: str = "fp-test"
) -> Vector:
    """A random vector with a complete card, shaped like one for the default model."""
    gen = torch.Generator().manual_seed(seed)
    directions = {layer: torch.randn(hidden, generator=gen) for layer in range(n_layers)}
    diagnostics = {layer: {"accuracy": 0.5 + layer / 100, "separation": 1.0, "norm": 1.0} for layer in range(n_layers)}
    card = Card(
        base_model=BASE_MODEL,
        model_fingerprint=fingerprint,
        hidden_size=hidden,
        n_layers=n_layers,
        method="mean_diff",
        n_pairs=10,
        diagnostics=diagnostics,
        recommended_layers=[min(10, n_layers - 1)],
        name=name,
        description=f"random test vector {name}",
        license="MIT",
        author="tests",
    )
    vector = Vector(directions, card)
    card.norms = vector.norms()
    return vector


def store_state(store: LocalStore) -> tuple[list[tuple[str, str]], list[str], list[str]]:
    """Everything visible about a store: its entries (all versions), its blobs, its leftover temp files."""
    entries = sorted((info.ref, info.sha256) for info in store.list(all_versions=True))
    return entries, sorted(store.blobs.digests()), [p.name for p in store.blobs.leftovers()]


# ----- PostgreSQL: a real server from the Debian binaries, on loopback, for this test session only -----
# (one implementation, shared with the reliability benchmark)
@pytest.fixture(scope="session", name="postgres_server")
def postgres_server_fixture() -> Iterator[str]:
    external = os.environ.get("STEERLAB_TEST_POSTGRES_URL")  # e.g. postgresql+psycopg://postgres@127.0.0.1:5432
    if external:
        yield external.rstrip("/")
        return
    if postgres_bindir() is None:
        message = "PostgreSQL is not installed (Debian package postgresql; `make postgres` installs it)"
        if IN_CI:
            pytest.fail(message + " - under CI the PostgreSQL suite must run")
        pytest.skip(message)
    with postgres_cluster() as url:
        yield url


_fresh_database = new_database


@pytest.fixture(params=["sqlite", "postgresql"], name="catalog_url")
def catalog_url_fixture(request: pytest.FixtureRequest) -> str | None:
    """None means the default (SQLite next to the blobs); otherwise a fresh database on the PostgreSQL server."""
    if request.param == "sqlite":
        return None
    return _fresh_database(request.getfixturevalue("postgres_server"))


@pytest.fixture(name="store")
def store_fixture(tmp_path: Path, catalog_url: str | None) -> Iterator[LocalStore]:
    opened = LocalStore(tmp_path / "store", catalog_url=catalog_url)
    yield opened
    opened.close()


# ----- a real uvicorn server in a thread, on a free loopback port -----
class AppServer:
    """Any ASGI app (a store's, or a test's lying proxy) served by uvicorn on loopback."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Self:
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


class ThreadServer(AppServer):
    """`steerlab hub serve` of `store`, in-process."""

    def __init__(self, store: LocalStore) -> None:
        from steerlab.hub.server import create_app

        super().__init__(create_app(store))
        self.store = store


@pytest.fixture(name="server")
def server_fixture(store: LocalStore) -> Iterator[ThreadServer]:
    with ThreadServer(store) as running:
        yield running


def wait_for(condition, timeout: float = 20.0, what: str = "condition") -> None:  # type: ignore[no-untyped-def]
    deadline = time.time() + timeout
    while not condition():
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


# ----- the fixtures' own checks -----
def test_postgres_fixture_is_a_real_server(postgres_server: str) -> None:
    import psycopg

    url = _fresh_database(postgres_server).replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url) as conn:
        version = conn.execute("SHOW server_version").fetchone()
    assert version and version[0][0].isdigit()


def test_catalog_backends_really_differ(store: LocalStore, catalog_url: str | None) -> None:
    assert store.engine.dialect.name == ("sqlite" if catalog_url is None else "postgresql")
