"""Signatures against a lying store: a proxy in front of a real `steerlab hub serve` rewrites its answers.

Every lie (swapped content, swapped public key, forged key id, a replayed older version, a swapped card, another
entry under this one's name) is refused by `steerlab hub pull`, and nothing is written: no pulled file, no change
under STEERLAB_HOME. Also: pins, trust on first use, revocation and rotation, the starter pack's pin, serve --store.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from test_hub_cli import run
from test_hub_support import AppServer, ThreadServer, make_vector

from steerlab.errors import SteerlabError
from steerlab.hub import open_store, signing
from steerlab.hub.publish import sign_publication
from steerlab.hub.store import LocalStore, Publication
from steerlab.hub.trust import Key, TrustFile
from steerlab.vector import Vector

Rewrite = Callable[[str, bytes], bytes]
FORWARDED = ("authorization", "content-type", "x-steerlab-signature", "x-steerlab-public-key")


class LyingProxy:
    """Forwards every request to the real server; `rewrite(path, body)` may change any answer."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.rewrite: Rewrite | None = None
        self.app = Starlette(routes=[Route("/{path:path}", self.forward, methods=["GET", "POST", "DELETE"])])

    async def forward(self, request: Request) -> Response:
        headers = {k: v for k, v in request.headers.items() if k.lower() in FORWARDED}
        async with httpx.AsyncClient(base_url=self.upstream) as client:
            answer = await client.request(
                request.method, request.url.path, params=request.query_params, content=await request.body(),
                headers=headers,
            )  # fmt: skip
        body = self.rewrite(request.url.path, answer.content) if self.rewrite else answer.content
        return Response(body, status_code=answer.status_code, media_type=answer.headers.get("content-type"))


@dataclass
class World:
    home: Path
    store: LocalStore
    proxy: LyingProxy
    url: str  # the proxy's
    alice: Path  # alice's private key file
    mallory: Path
    vectors: dict[str, Vector]  # by ref

    def meta(self, ref: str) -> dict[str, Any]:
        return self.store.show(ref).to_dict()

    def content(self, ref: str) -> bytes:
        return self.store.get_bytes(ref)[1]


def _key(path: Path) -> tuple[str, str]:
    public = signing.public_key_b64(signing.load_or_create_key(path))
    return signing.key_id(public), public


def _publish(store: LocalStore, vector: Vector, ref: str, key: Path) -> None:
    data = vector.to_bytes()
    pub = Publication(ref)
    sign_publication(data, pub, key)
    store.publish(data, pub)


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    home = tmp_path / "home"
    monkeypatch.setenv("STEERLAB_HOME", str(home))
    monkeypatch.setenv("COLUMNS", "200")
    store = LocalStore(tmp_path / "served")
    alice, mallory = tmp_path / "alice.pem", tmp_path / "mallory.pem"
    vectors = {
        "alice/refusal@1.0.0": make_vector(1, name="refusal"),
        "alice/refusal@1.1.0": make_vector(2, name="refusal"),
        "alice/other@1.0.0": make_vector(3, name="other"),
    }
    for ref, vector in vectors.items():
        _publish(store, vector, ref, alice)
    _key(mallory)
    with ThreadServer(store) as real:
        proxy = LyingProxy(real.url)
        with AppServer(proxy.app) as front:
            yield World(home, store, proxy, front.url, alice, mallory, vectors)
    store.close()


def _snapshot(home: Path) -> dict[str, bytes]:
    return {str(p.relative_to(home)): p.read_bytes() for p in sorted(home.rglob("*")) if p.is_file()}


def _pull(world: World, ref: str, out: Path, capsys, monkeypatch, *extra: str) -> tuple[int, str]:  # type: ignore[no-untyped-def]
    return run(["hub", "pull", ref, "--from", world.url, "--out", str(out), *extra], capsys, monkeypatch)


def _meta_and_content(meta: Callable[[dict[str, Any]], dict[str, Any]] | None, content: bytes | None) -> Rewrite:
    """A rewrite that changes the entry's metadata answer and/or its content answer."""

    def rewrite(path: str, body: bytes) -> bytes:
        if path.endswith("/content"):
            return content if content is not None else body
        if meta is not None and path.count("/") == 6:  # /api/v1/entries/NS/NAME/VERSION
            return json.dumps(meta(json.loads(body))).encode()
        return body

    return rewrite


def _negated(vector: Vector) -> bytes:
    return Vector({layer: -d for layer, d in vector.directions.items()}, vector.card).to_bytes()


def _described(meta: dict[str, Any], data: bytes, **changes: Any) -> dict[str, Any]:
    """The metadata a liar sends along with `data`: its hash and size, so only the signature can tell."""
    return {**meta, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data), **changes}


def _resigned(world: World, ref: str, data: bytes, key: Path) -> dict[str, Any]:
    pub = Publication(ref)
    sign_publication(data, pub, key)
    kid, public = _key(key)
    return {"signature": pub.signature, "public_key": public, "key_id": kid}


def _lies(world: World) -> list[tuple[str, str, Rewrite, str]]:
    new, old, other = "alice/refusal@1.1.0", "alice/refusal@1.0.0", "alice/other@1.0.0"
    alice_id, _ = _key(world.alice)
    anti = _negated(world.vectors[new])
    by_mallory = _resigned(world, new, anti, world.mallory)
    flipped_card = dataclasses.replace(world.vectors[new].card, recommended_scale=-4.0)
    card_swapped = Vector(world.vectors[new].directions, flipped_card).to_bytes()
    card_json = json.loads(flipped_card.to_json())
    meta_old, meta_other = world.meta(old), world.meta(other)
    return [
        ("swapped content", new, _meta_and_content(lambda m: _described(m, anti), anti), "bad signature"),
        (
            "swapped public key",
            new,
            _meta_and_content(lambda m: {**_described(m, anti), **by_mallory}, anti),
            "is pinned to",
        ),
        (
            "forged key id",
            new,
            _meta_and_content(lambda m: {**_described(m, anti), **by_mallory, "key_id": alice_id}, anti),
            "the key that signed is",
        ),
        (
            "replayed older version",
            new,
            _meta_and_content(lambda m: meta_old, world.content(old)),
            "answered with alice/refusal@1.0.0",
        ),
        (
            "older version relabelled",
            new,
            _meta_and_content(lambda m: {**meta_old, "version": "1.1.0"}, world.content(old)),
            "bad signature",
        ),
        (
            "card swap in the catalogue",
            new,
            _meta_and_content(lambda m: {**m, "card": {**m["card"], "recommended_scale": -4.0}}, None),
            "card in the catalogue differs",
        ),
        (
            "card swap in the content",
            new,
            _meta_and_content(lambda m: _described(m, card_swapped, card=card_json), card_swapped),
            "bad signature",
        ),
        (
            "another signed entry under this name",
            new,
            _meta_and_content(lambda m: {**meta_other, "name": "refusal", "version": "1.1.0"}, world.content(other)),
            "bad signature",
        ),
        (
            "the latest rolled back",
            "alice/refusal",
            _meta_and_content(lambda m: meta_old, world.content(old)),
            "rollback",
        ),
    ]


def test_every_lie_is_refused_and_nothing_is_written(world: World, tmp_path: Path, capsys, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    alice_id, alice_public = _key(world.alice)
    code, out = run(["hub", "trust", "alice", alice_public, "--note", "checked with alice"], capsys, monkeypatch)
    assert code == 0 and f"pinned {alice_id} (public key)" in out
    out_file = tmp_path / "pulled" / "refusal.safetensors"
    code, out = _pull(world, "alice/refusal", out_file, capsys, monkeypatch)  # honest: also records 1.1.0 as seen
    assert code == 0 and f"signature by {alice_id} (pinned) verified" in out
    assert out_file.read_bytes() == world.content("alice/refusal@1.1.0")
    out_file.unlink()
    before = _snapshot(world.home)
    for label, ref, rewrite, message in _lies(world):
        world.proxy.rewrite = rewrite
        code, out = _pull(world, ref, out_file, capsys, monkeypatch)
        assert code == 2 and message in " ".join(out.split()), (label, out)
        assert not out_file.exists() and not list(out_file.parent.iterdir()), label
        assert _snapshot(world.home) == before, label
    world.proxy.rewrite = None
    assert _pull(world, "alice/refusal@1.1.0", out_file, capsys, monkeypatch)[0] == 0  # the truth still passes


def test_trusted_key_is_judged_from_the_signing_key_not_the_stores_key_id(world: World, tmp_path: Path) -> None:
    alice_id, alice_public = _key(world.alice)
    mallory_id, mallory_public = _key(world.mallory)
    new = "alice/refusal@1.1.0"
    anti = _negated(world.vectors[new])
    for forged_id in (alice_id, None):  # the id claimed as alice's, or left out for the client to fill in
        lie = {**_resigned(world, new, anti, world.mallory), "key_id": forged_id}
        world.proxy.rewrite = _meta_and_content(lambda m, lie=lie: {**_described(m, anti), **lie}, anti)
        remote = open_store(world.url)
        for trusted in (alice_id, alice_public):  # no pin here: --trusted-key alone must hold
            with pytest.raises(SteerlabError, match=r"key that signed|not one of the trusted keys"):
                remote.get_bytes(new, trusted_keys=[trusted])
        if forged_id is None:
            assert remote.get_bytes(new, trusted_keys=[mallory_public])[1] == anti  # the key really is mallory's
        else:  # even for one who trusts mallory: a store that misnames the signer is refused
            with pytest.raises(SteerlabError, match="the store names key"):
                remote.get_bytes(new, trusted_keys=[mallory_public])
    with pytest.raises(SteerlabError, match="neither a key id"):
        open_store(world.url).get_bytes(new, trusted_keys=["alice"])
    assert mallory_id != alice_id


def test_trust_on_first_use_is_opt_in_and_then_holds(world: World, tmp_path: Path, capsys, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    alice_id, _ = _key(world.alice)
    out_file = tmp_path / "o.safetensors"
    assert _pull(world, "alice/other", out_file, capsys, monkeypatch)[0] == 0
    assert TrustFile.load().pins == {}  # without --tofu nothing is pinned
    code, out = _pull(world, "alice/other", out_file, capsys, monkeypatch, "--tofu")
    assert code == 0 and f"{alice_id} (pinned)" in out
    pins = TrustFile.load().pins["alice"]
    assert [(p.key.key_id, p.source) for p in pins] == [(alice_id, "tofu")]
    new = "alice/refusal@1.1.0"
    anti = _negated(world.vectors[new])
    lie = _resigned(world, new, anti, world.mallory)
    world.proxy.rewrite = _meta_and_content(lambda m: {**_described(m, anti), **lie}, anti)
    code, out = _pull(world, new, tmp_path / "r.safetensors", capsys, monkeypatch, "--tofu")
    assert code == 2 and "is pinned to" in out and not (tmp_path / "r.safetensors").exists()


def test_revocation_refuses_and_lists_and_rotation_keeps_what_was_resigned(  # type: ignore[no-untyped-def]
    world: World, tmp_path: Path, capsys, monkeypatch
) -> None:
    alice_id, _ = _key(world.alice)
    new_key = tmp_path / "alice-2.pem"
    code, out = run(["hub", "keygen", "--out", str(new_key)], capsys, monkeypatch)
    new_id, new_public = _key(new_key)
    assert code == 0 and new_id in out and new_public in out
    # Rotation: the store's owner re-signs one entry with the new key; clients pin it, then revoke the old one.
    code, out = run(["hub", "resign", "alice/other@1.0.0", "--key", str(new_key), "--root", str(world.store.root)],
                    capsys, monkeypatch)  # fmt: skip
    assert code == 0 and f"re-signed alice/other@1.0.0 with key {new_id}" in out
    assert run(["hub", "trust", "alice", alice_id], capsys, monkeypatch)[0] == 0
    assert run(["hub", "trust", "alice", new_public], capsys, monkeypatch)[0] == 0
    code, out = run(["hub", "trust", "--revoke", alice_id, "--reason", "laptop stolen"], capsys, monkeypatch)
    assert code == 0 and f"revoked {alice_id}" in out
    out_file = tmp_path / "p.safetensors"
    code, out = _pull(world, "alice/refusal@1.0.0", out_file, capsys, monkeypatch)
    assert code == 2 and "revoked on" in out and "laptop stolen" in out and not out_file.exists()
    code, out = _pull(world, "alice/other@1.0.0", out_file, capsys, monkeypatch)
    assert code == 0 and f"{new_id} (pinned)" in out
    code, out = run(["hub", "trust", "--list", "--from", world.url], capsys, monkeypatch)
    assert code == 0 and f"{alice_id} REVOKED" in out and "2 entries" in out
    assert "refused alice/refusal@1.0.0" in out and "refused alice/refusal@1.1.0" in out
    code, out = run(["hub", "list", "--from", world.url], capsys, monkeypatch)
    assert code == 0 and "REVOKED" in out
    code, out = run(["hub", "trust", "alice", alice_id], capsys, monkeypatch)
    assert code == 2 and "revoked" in out  # a revoked key cannot be pinned again


def test_the_default_stores_starter_namespace_is_pinned_by_the_package(  # type: ignore[no-untyped-def]
    world: World, tmp_path: Path, capsys, monkeypatch
) -> None:
    from steerlab.hub.starter_pack import read_manifest

    manifest = read_manifest()
    code, out = run(["hub", "pull", "starter/happy", "--out", str(tmp_path / "h.safetensors")], capsys, monkeypatch)
    assert code == 0 and f"{manifest.key_id} (pinned)" in out
    default = open_store()
    assert isinstance(default, LocalStore)
    _publish(default, make_vector(9, name="evil"), "starter/evil@1.0.0", world.mallory)  # the store's owner can
    code, out = run(["hub", "pull", "starter/evil", "--out", str(tmp_path / "e.safetensors")], capsys, monkeypatch)
    assert code == 2 and f"pinned to {manifest.key_id}" in out and not (tmp_path / "e.safetensors").exists()
    assert LocalStore(default.root).get_bytes("starter/evil")[0].signed  # the same store opened bare: no pin


def test_serve_store_takes_only_trusted_content_unless_allowed(world: World) -> None:
    from tiny import tiny_model

    from steerlab.serve.errors import ApiError
    from steerlab.serve.registry import Registry

    model = tiny_model()
    fits = {"hidden": model.hidden_size, "n_layers": model.n_layers, "fingerprint": model.fingerprint}
    _publish(world.store, make_vector(4, name="calm", **fits), "alice/calm@1.0.0", world.alice)
    world.store.publish(make_vector(5, name="plain", **fits).to_bytes(), Publication("bob/plain@1.0.0"))
    strict = Registry(model, store=world.url, require_trusted=True)
    for ref, message in (("alice/calm", "no key is trusted for namespace 'alice'"), ("bob/plain", "not signed")):
        with pytest.raises(ApiError, match=message):
            strict.kit(ref)
    trusted = TrustFile.load()
    trusted.pin("alice", Key.parse(_key(world.alice)[0]))
    trusted.save()
    assert Registry(model, store=world.url, require_trusted=True).kit("alice/calm").kit.entries
    with pytest.raises(ApiError, match="not signed"):
        Registry(model, store=world.url, require_trusted=True).kit("bob/plain")
    assert Registry(model, store=world.url).kit("bob/plain").kit.entries  # --allow-unsigned


def test_a_re_signed_pack_re_signs_what_a_store_already_holds(tmp_path: Path) -> None:
    from steerlab.hub.starter_pack import install_shipped_pack, shipped_dir, sign_pack

    pack = tmp_path / "pack"
    pack.mkdir()
    names = ["happy", "sad"]
    for name in names:
        shutil.copyfile(shipped_dir() / f"{name}.safetensors", pack / f"{name}.safetensors")

    def describe(name: str) -> tuple[list[str], str]:
        return ["emotion"], name

    store = LocalStore(tmp_path / "store")
    first = sign_pack(pack, names, "starter", "1.0.0", tmp_path / "old.pem", describe)
    assert sorted(install_shipped_pack(store, pack).installed) == ["starter/happy@1.0.0", "starter/sad@1.0.0"]
    second = sign_pack(pack, names, "starter", "1.0.0", tmp_path / "new.pem", describe)
    assert first.key_id != second.key_id
    again = install_shipped_pack(store, pack)
    assert sorted(again.present) == ["starter/happy@1.0.0", "starter/sad@1.0.0"] and not again.conflicts
    for name in names:
        info, _ = store.get_bytes(f"starter/{name}", trusted_keys=[second.public_key])
        assert info.key_id == second.key_id
        with pytest.raises(SteerlabError, match="not one of the trusted keys"):
            store.get_bytes(f"starter/{name}", trusted_keys=[first.key_id])
    assert store.verify().ok


def test_a_broken_trust_file_or_key_is_refused_with_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STEERLAB_HOME", str(tmp_path))
    (tmp_path / "trust.json").write_text("{not json")
    with pytest.raises(SteerlabError, match=r"cannot read the trust file .* fix it or move it away"):
        open_store(str(tmp_path / "store"))
    (tmp_path / "trust.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(SteerlabError, match=r"not 'steerlab\.trust'"):
        TrustFile.load()
    for bad in ("", "zz" * 8, "QUJD", "../../etc/passwd"):
        with pytest.raises(SteerlabError, match="neither a key id"):
            Key.parse(bad)
    with pytest.raises(SteerlabError, match="invalid namespace"):
        TrustFile(tmp_path / "t.json").pin("../x", Key("0" * 16))
