"""The local store on both catalogue backends (SQLite and a real PostgreSQL): publish, find, pull, remove, verify."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from sqlalchemy import text
from test_hub_support import (  # noqa: F401  (fixtures)
    BASE_MODEL,
    catalog_url_fixture,
    make_vector,
    postgres_server_fixture,
    store_fixture,
    store_state,
)
from tiny import tiny_model

from steerlab.errors import SteerlabError
from steerlab.hub import open_store
from steerlab.hub.errors import Conflict, Forbidden, NotFound, Unauthorized
from steerlab.hub.publish import sign_publication
from steerlab.hub.store import ANONYMOUS, Access, LocalStore, Publication


def test_publish_then_pull_is_bit_exact_and_indexed(store: LocalStore) -> None:
    vec = make_vector(1, name="happy")
    info = store.publish(vec.to_bytes(), Publication("starter/happy@1.0.0", tags=["emotion", "Joy"]))
    assert info.ref == "starter/happy@1.0.0" and info.tags == ["emotion", "joy"]
    assert info.base_model == BASE_MODEL and info.fingerprint == "fp-test" and info.hidden_size == 576
    assert info.metrics["source"] == "extraction diagnostics" and info.metrics["best_layer"] == 29
    back = store.get_vector("starter/happy")
    assert back.card.to_json() == vec.card.to_json()
    assert all(torch.equal(back.directions[k], vec.directions[k]) for k in vec.directions)
    assert store.show("starter/happy").card == json.loads(vec.card.to_json())


def test_versions_are_semantic_immutable_and_never_reused(store: LocalStore) -> None:
    data = [make_vector(i).to_bytes() for i in range(4)]
    assert store.publish(data[0], Publication("ns/v")).version == "1.0.0"
    assert store.publish(data[1], Publication("ns/v")).version == "1.0.1"
    store.publish(data[2], Publication("ns/v@2.0.0-rc.1"))
    assert store.show("ns/v").version == "1.0.1"  # a pre-release does not beat a release
    store.publish(data[3], Publication("ns/v@2.0.0"))
    assert [i.version for i in store.versions("ns/v")] == ["1.0.0", "1.0.1", "2.0.0-rc.1", "2.0.0"]
    before = store_state(store)
    with pytest.raises(Conflict, match="immutable"):
        store.publish(data[0], Publication("ns/v@1.0.1"))
    assert store_state(store) == before
    store.remove("ns/v@2.0.0")
    assert store.show("ns/v").version == "1.0.1"
    assert store.show("ns/v@2.0.0-rc.1").version == "2.0.0-rc.1"
    with pytest.raises(NotFound):
        store.show("ns/v@2.0.0")
    with pytest.raises(Conflict):
        store.publish(data[3], Publication("ns/v@2.0.0"))
    assert store.publish(data[3], Publication("ns/v")).version == "2.0.1"


def test_remove_drops_unshared_blobs_only(store: LocalStore) -> None:
    shared, alone = make_vector(1).to_bytes(), make_vector(2).to_bytes()
    a = store.publish(shared, Publication("ns/a@1.0.0"))
    store.publish(shared, Publication("ns/b@1.0.0"))
    c = store.publish(alone, Publication("ns/c@1.0.0"))
    store.remove("ns/a@1.0.0")
    store.remove("ns/c@1.0.0")
    assert store.blobs.has(a.sha256) and not store.blobs.has(c.sha256)
    assert store.get_bytes("ns/b")[1] == shared
    with pytest.raises(SteerlabError, match="which version"):
        store.remove("ns/b")
    assert store.verify().ok


def test_search_by_text_tag_base_model_and_fit(store: LocalStore) -> None:
    model = tiny_model("llama")  # hidden 32, 4 layers
    fitting = make_vector(1, hidden=model.hidden_size, n_layers=model.n_layers, fingerprint=model.fingerprint)
    fitting.card.base_model = "tiny-llama"
    store.publish(fitting.to_bytes(), Publication("tiny/fits", tags=["tiny"], description="made for the tiny llama"))
    store.publish(make_vector(2).to_bytes(), Publication("starter/happy", tags=["emotion"]))
    store.publish(make_vector(3).to_bytes(), Publication("starter/formal", tags=["tone"], description="Legal register"))
    wrong_arch = make_vector(4, hidden=32, n_layers=4, fingerprint="another-architecture")
    store.publish(wrong_arch.to_bytes(), Publication("tiny/other-arch"))
    too_deep = make_vector(5, hidden=32, n_layers=12, fingerprint="")
    store.publish(too_deep.to_bytes(), Publication("tiny/too-deep"))

    def refs(found):  # type: ignore[no-untyped-def]
        return sorted(i.ref.split("@")[0] for i in found)

    assert refs(store.search("legal")) == ["starter/formal"]  # description, case-insensitive
    assert refs(store.search("EMOT")) == ["starter/happy"]  # tags are searched too
    assert refs(store.search(tag="tone")) == ["starter/formal"]
    for_default = ["starter/formal", "starter/happy", "tiny/other-arch", "tiny/too-deep"]
    assert refs(store.search(base_model=BASE_MODEL)) == for_default
    assert refs(store.search(fits=model)) == ["tiny/fits"]
    assert refs(store.search("starter", tag="emotion")) == ["starter/happy"]
    assert refs(store.list(namespace="tiny")) == ["tiny/fits", "tiny/other-arch", "tiny/too-deep"]
    assert store.search("no-such-thing") == []
    assert store.search("%") == [] and store.search("_") == []  # literal text, not SQL wildcards
    assert refs(store.search("other-arch")) == ["tiny/other-arch"]


def test_tokens_are_hashed_and_tied_to_a_namespace(store: LocalStore) -> None:
    token = store.create_token("team")
    with store.engine.connect() as conn:
        dump = " ".join(str(row) for row in conn.execute(text("SELECT * FROM hub_tokens")))
    assert token not in dump and token[4:] not in dump
    access = store.access(token)
    data = make_vector(1).to_bytes()
    assert store.publish(data, Publication("team/v"), access=access).ref == "team/v@1.0.0"
    before = store_state(store)
    with pytest.raises(Forbidden, match="'team', not 'other'"):
        store.publish(data, Publication("other/v"), access=access)
    with pytest.raises(Unauthorized, match="token"):
        store.publish(data, Publication("team/w"), access=ANONYMOUS)
    with pytest.raises(Forbidden, match="not valid"):
        store.access("stl_wrong")
    with pytest.raises(Forbidden):
        store.remove("team/v@1.0.0", access=store.access(store.create_token("other")))
    assert store_state(store) == before


def test_private_namespace_reads_need_its_token(store: LocalStore) -> None:
    token = store.create_token("secret", private=True)
    store.publish(make_vector(1).to_bytes(), Publication("secret/v"))
    store.publish(make_vector(2).to_bytes(), Publication("open/v"))
    assert [i.ref for i in store.list(access=ANONYMOUS)] == ["open/v@1.0.0"]
    with pytest.raises(NotFound, match="private"):
        store.get_bytes("secret/v", access=ANONYMOUS)
    assert [i.ref for i in store.search("v", access=store.access(token))] == ["open/v@1.0.0", "secret/v@1.0.0"]
    assert store.get_bytes("secret/v", access=Access(namespace="secret"))[0].ref == "secret/v@1.0.0"
    assert len(store.list()) == 2  # the owner of the files sees everything


def test_signatures_verified_on_publish_and_pull(store: LocalStore, tmp_path: Path) -> None:
    data = make_vector(1).to_bytes()
    pub = Publication("signed/v@1.0.0")
    sign_publication(data, pub, tmp_path / "key.pem")
    info = store.publish(data, pub)
    assert info.signed and len(info.key_id or "") == 16
    assert store.get_bytes("signed/v", require_signed=True, trusted_keys=[info.key_id])[1] == data
    with pytest.raises(SteerlabError, match="trusted"):
        store.get_bytes("signed/v", trusted_keys=["0" * 16])

    # A signature of other content is refused at publish, and nothing is stored.
    before = store_state(store)
    forged = Publication("signed/w@1.0.0", signature=pub.signature, public_key=pub.public_key)
    with pytest.raises(SteerlabError, match="bad signature"):
        store.publish(make_vector(2).to_bytes(), forged)
    with pytest.raises(SteerlabError, match="both or neither"):
        store.publish(data, Publication("signed/w@1.0.0", signature=pub.signature))
    assert store_state(store) == before

    store.publish(make_vector(3).to_bytes(), Publication("plain/v"))
    with pytest.raises(SteerlabError, match="not signed"):
        store.get_vector("plain/v", require_signed=True)


def test_tampering_is_caught_by_pull_and_verify(store: LocalStore) -> None:
    info = store.publish(make_vector(1).to_bytes(), Publication("ns/v"))
    other = store.publish(make_vector(2).to_bytes(), Publication("ns/w"))
    assert store.verify().ok
    blob = store.blobs.path(info.sha256)
    blob.chmod(0o644)
    raw = bytearray(blob.read_bytes())
    raw[-1] ^= 0xFF
    blob.write_bytes(bytes(raw))
    with pytest.raises(SteerlabError, match="content hash"):
        store.get_vector("ns/v")
    # A catalogue row edited behind the store's back (its card no longer the content's) is caught as well.
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE hub_entries SET card_json = :c WHERE sha256 = :s"), {"c": "{}", "s": other.sha256})
    report = store.verify()
    assert not report.ok and len(report.problems) == 2
    assert any("content hash" in p for p in report.problems) and any("card" in p for p in report.problems)


def test_kits_are_stored_and_validated(store: LocalStore) -> None:
    entries = [{"vector": "sha256:" + "a" * 64, "scale": 0.4}]
    kit = {"card": {"name": "calm", "base_model": BASE_MODEL}, "entries": entries}
    info = store.publish(json.dumps(kit).encode(), Publication("kits/calm", kind="kit"))
    assert info.kind == "kit" and info.base_model == BASE_MODEL
    assert store.get_kit("kits/calm") == kit
    with pytest.raises(SteerlabError, match="not a vector"):
        store.get_vector("kits/calm")
    before = store_state(store)
    for bad, message in [
        (b"{not json", "not valid JSON"),
        (b'{"entries": []}', "non-empty 'entries'"),
        (b'{"entries": [{"scale": NaN}]}', "finite"),
        (b'{"entries": [{"mode": "explode"}]}', "mode"),
        (b'{"entries": [{"layers": [-1]}]}', "layers"),
    ]:
        with pytest.raises(SteerlabError, match=message):
            store.publish(bad, Publication("kits/bad", kind="kit"))
    assert store_state(store) == before


def test_open_store_defaults_and_remembers_its_catalogue(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, catalog_url: str | None
) -> None:
    monkeypatch.setenv("STEERLAB_HOME", str(tmp_path / "home"))
    default = open_store()
    assert isinstance(default, LocalStore) and default.root == tmp_path / "home" / "store"
    first = LocalStore(tmp_path / "s", catalog_url=catalog_url)
    first.publish(make_vector(1).to_bytes(), Publication("ns/v"))
    again = open_store(tmp_path / "s")
    assert again.catalog_url == first.catalog_url and [i.ref for i in again.list()] == ["ns/v@1.0.0"]
    if catalog_url:
        with pytest.raises(SteerlabError, match="already uses catalogue postgresql"):
            LocalStore(tmp_path / "s", catalog_url=catalog_url + "x")
    with pytest.raises(Forbidden):
        open_store(tmp_path / "s", token="stl_not-a-token")
