"""The Store Protocol: LocalStore and RemoteStore both satisfy it, parameter for parameter, and one function that
knows only Store works through a local store and through a live server on loopback."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import torch
from test_hub_support import ThreadServer, make_vector

from steerlab.hub import open_store
from steerlab.hub.blobs import BlobStore
from steerlab.hub.client import RemoteStore
from steerlab.hub.protocol import Publication, Store
from steerlab.hub.store import LocalStore

METHODS = sorted(name for name, value in vars(Store).items() if callable(value) and not name.startswith("_"))


@pytest.mark.parametrize("implementation", [LocalStore, RemoteStore])
def test_each_store_takes_every_protocol_call_as_the_protocol_states_it(implementation: type) -> None:
    assert {"publish", "get_bytes", "get_vector", "get_kit", "show", "list", "search", "remove"} <= set(METHODS)
    for name in METHODS:
        wanted = list(inspect.signature(getattr(Store, name)).parameters.values())
        given = list(inspect.signature(getattr(implementation, name)).parameters.values())
        assert [(p.name, p.kind, p.default) for p in given[: len(wanted)]] == [
            (p.name, p.kind, p.default) for p in wanted
        ], f"{implementation.__name__}.{name}"
        extra = given[len(wanted) :]
        assert all(p.default is not inspect.Parameter.empty for p in extra), f"{implementation.__name__}.{name}"


def exercise(store: Store) -> None:
    """Publish, read back and withdraw through nothing but the Protocol's calls."""
    calm = make_vector(3, name="calm")
    first = store.publish(calm.to_bytes(), Publication("proto/calm", tags=["mood"], description="steady"))
    store.publish(make_vector(4, name="calm").to_bytes(), Publication("proto/calm"))
    assert first.ref == "proto/calm@1.0.0"
    assert [i.version for i in store.versions("proto/calm")] == ["1.0.0", "1.0.1"]
    assert store.show("proto/calm").version == "1.0.1"
    info, data = store.get_bytes("proto/calm@1.0.0")
    assert info.sha256 == first.sha256 and data == calm.to_bytes()
    back = store.get_vector("proto/calm@1.0.0")
    assert all(torch.equal(back.directions[k], calm.directions[k]) for k in calm.directions)
    assert [i.ref for i in store.search("calm", tag="mood", all_versions=True)] == ["proto/calm@1.0.0"]
    assert [i.ref for i in store.list(namespace="proto")] == ["proto/calm@1.0.1"]
    assert store.remove("proto/calm@1.0.1").ref == "proto/calm@1.0.1"
    assert [i.ref for i in store.list(namespace="proto", all_versions=True)] == ["proto/calm@1.0.0"]


def test_one_function_typed_with_store_runs_on_a_local_and_a_remote_store(tmp_path: Path) -> None:
    local = LocalStore(tmp_path / "local")
    served = LocalStore(tmp_path / "served")
    try:
        assert isinstance(local, Store)
        assert not isinstance(BlobStore(tmp_path / "blobs"), Store)  # a part of a store is not one
        exercise(local)
        with ThreadServer(served) as server:
            remote = open_store(server.url, token=served.create_token("proto"))
            assert isinstance(remote, RemoteStore) and isinstance(remote, Store)
            try:
                exercise(remote)
            finally:
                remote.close()
        assert [i.ref for i in served.list(all_versions=True)] == ["proto/calm@1.0.0"]  # it went to the server
    finally:
        local.close()
        served.close()
