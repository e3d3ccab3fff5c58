"""A real uvicorn server on loopback over both catalogue backends: the API, every refusal, concurrency, SIGKILLs."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import torch
from test_hub_support import (  # noqa: F401  (fixtures)
    ThreadServer,
    catalog_url_fixture,
    free_port,
    make_vector,
    postgres_server_fixture,
    server_fixture,
    store_fixture,
    store_state,
    wait_for,
)

from steerlab.errors import SteerlabError
from steerlab.hub import open_store
from steerlab.hub.client import RemoteStore
from steerlab.hub.errors import Conflict, Forbidden, NotFound, TooLarge, Unauthorized
from steerlab.hub.publish import sign_publication
from steerlab.hub.store import LocalStore, Publication

API = "/api/v1/entries"


def test_api_roundtrip_with_signature(server: ThreadServer, store: LocalStore, tmp_path: Path) -> None:
    paths = httpx.get(server.url + "/openapi.json").json()["paths"]
    assert (
        "post" in paths[f"{API}/{{namespace}}/{{name}}"] and "get" in paths[f"{API}/{{namespace}}/{{name}}/{{version}}"]
    )
    token = store.create_token("starter")
    remote = open_store(server.url, token=token)
    assert isinstance(remote, RemoteStore)
    vec = make_vector(7, name="happy")
    data = vec.to_bytes()
    pub = Publication("starter/happy@1.0.0", tags=["emotion"], description="joyful")
    sign_publication(data, pub, tmp_path / "key.pem")
    info = remote.publish(data, pub)
    assert info.ref == "starter/happy@1.0.0" and info.signed and info.description == "joyful"
    anonymous = RemoteStore(server.url)
    back = anonymous.get_vector("starter/happy", require_signed=True)
    assert all(torch.equal(back.directions[k], vec.directions[k]) for k in vec.directions)
    assert back.card.to_json() == vec.card.to_json()
    assert [i.ref for i in anonymous.search("joy")] == ["starter/happy@1.0.0"]
    assert [i.ref for i in anonymous.search(tag="emotion")] == ["starter/happy@1.0.0"]
    assert [i.ref for i in anonymous.list()] == ["starter/happy@1.0.0"]
    assert anonymous.show("starter/happy").card["name"] == "happy"
    remote.publish(make_vector(8).to_bytes(), Publication("starter/happy"))
    assert [i.version for i in anonymous.versions("starter/happy")] == ["1.0.0", "1.0.1"]
    with pytest.raises(Unauthorized):
        anonymous.remove("starter/happy@1.0.1")
    remote.remove("starter/happy@1.0.1")
    assert [i.version for i in anonymous.list(all_versions=True)] == ["1.0.0"]
    with pytest.raises(NotFound):
        anonymous.show("starter/happy@1.0.1")


def _post(url: str, ref: str, data: bytes, token: str | None = None, **kwargs) -> httpx.Response:  # type: ignore[no-untyped-def]
    headers = {"authorization": f"Bearer {token}"} if token else {}
    headers.update(kwargs.pop("headers", {}))
    return httpx.post(f"{url}{API}/{ref}", content=data, headers=headers, **kwargs)


def test_every_bad_upload_is_refused_and_leaves_the_store_unchanged(
    server: ThreadServer, store: LocalStore, tmp_path: Path
) -> None:
    store.max_bytes = 200_000
    token = store.create_token("ns")
    other_token = store.create_token("other")
    good = make_vector(1).to_bytes()
    assert _post(server.url, "ns/v?version=1.0.0", good, token).status_code == 201
    signed, signed_data = Publication("ns/x@1.0.0"), make_vector(2).to_bytes()
    sign_publication(signed_data, signed, tmp_path / "key.pem")
    nan = make_vector(3)
    nan.directions[4][7] = float("nan")
    narrow = make_vector(4)
    narrow.card.hidden_size = 512  # the tensors are 576 wide
    big = make_vector(5, hidden=4096).to_bytes()  # about 480 kB, over the 200 kB limit

    def chunks():  # type: ignore[no-untyped-def]
        yield from (big[i : i + 65536] for i in range(0, len(big), 65536))

    cases = [
        ("malformed", "ns/w", b"this is not a safetensors file", token, {}, 400, "not a safetensors"),
        ("nan", "ns/w", nan.to_bytes(), token, {}, 400, "NaN"),
        ("wrong dims", "ns/w", narrow.to_bytes(), token, {}, 400, "hidden size 512"),
        ("oversize", "ns/w", big, token, {}, 413, "limit"),
        ("oversize, streamed", "ns/w", chunks(), token, {}, 413, "limit"),
        ("dot-dot namespace", "%2e%2e/w", good, token, {}, 400, "invalid namespace"),
        ("dot-dot name", "ns/%2e%2e", good, token, {}, 400, "invalid name"),
        ("slash in name", "ns/a%2Fb", good, token, {}, 405, "names hold no '/'"),
        ("extra path", "ns/a/b/c", good, token, {}, 404, "no POST route"),
        ("backslash", "ns/a%5Cb", good, token, {}, 400, "invalid name"),
        ("hidden file", "ns/.env", good, token, {}, 400, "invalid name"),
        ("bad version", "ns/w?version=../1", good, token, {}, 400, "invalid version"),
        ("duplicate version", "ns/v?version=1.0.0", make_vector(6).to_bytes(), token, {}, 409, "immutable"),
        ("missing token", "ns/w", good, None, {}, 401, "needs its token"),
        ("wrong token", "ns/w", good, "stl_guess", {}, 403, "not valid"),
        ("other namespace's token", "ns/w", good, other_token, {}, 403, "for namespace 'other'"),
        ("bad signature", "ns/w?version=1.0.0", good, token, _sig_headers(signed), 400, "bad signature"),
        ("moved signature", "ns/x?version=1.0.1", signed_data, token, _sig_headers(signed), 400, "bad signature"),
        ("signed, no version", "ns/w", good, token, _sig_headers(signed), 400, "names its version"),
        ("garbled signature", "ns/w?version=1.0.0", good, token, _sig_headers(signed, "!!!"), 400, "base64"),
        ("unknown kind", "ns/w?kind=model", good, token, {}, 400, "unknown kind"),
        ("bad kit", "ns/k?kind=kit", b'{"entries": [{"scale": Infinity}]}', token, {}, 400, "finite"),
        ("form body", "ns/w", good, token, {"content-type": "multipart/form-data; boundary=x"}, 415, "file itself"),
        ("vector as JSON", "ns/w", good, token, {"content-type": "application/json"}, 415, "application/octet-stream"),
    ]
    before = store_state(store)
    for label, ref, data, tok, headers, status, message in cases:
        response = _post(server.url, ref, data, tok, headers=headers)
        assert response.status_code == status, (label, response.text)
        assert message in response.json()["error"], (label, response.text)
        assert store_state(store) == before, label
    assert store.verify().ok


def _sig_headers(pub: Publication, signature: str | None = None) -> dict[str, str]:
    return {"x-steerlab-signature": signature or pub.signature or "", "x-steerlab-public-key": pub.public_key or ""}


def test_client_errors_map_to_exceptions(server: ThreadServer, store: LocalStore) -> None:
    store.max_bytes = 100_000
    remote = RemoteStore(server.url, token=store.create_token("ns"))
    remote.publish(make_vector(1).to_bytes(), Publication("ns/v@1.0.0"))
    with pytest.raises(Conflict):
        remote.publish(make_vector(2).to_bytes(), Publication("ns/v@1.0.0"))
    with pytest.raises(TooLarge):
        remote.publish(make_vector(3, hidden=4096).to_bytes(), Publication("ns/big"))
    with pytest.raises(Forbidden):
        RemoteStore(server.url, token="stl_nope").publish(make_vector(4).to_bytes(), Publication("ns/w"))
    with pytest.raises(SteerlabError, match="cannot reach"):
        RemoteStore(f"http://127.0.0.1:{free_port()}").list()


def test_private_namespace_over_http(server: ThreadServer, store: LocalStore) -> None:
    token = store.create_token("secret", private=True)
    store.publish(make_vector(1).to_bytes(), Publication("secret/v"))
    assert httpx.get(f"{server.url}{API}/secret/v/latest").status_code == 404
    assert httpx.get(f"{server.url}{API}/secret/v/latest/content").status_code == 404
    assert RemoteStore(server.url).list() == []
    mine = RemoteStore(server.url, token=token)
    assert [i.ref for i in mine.list()] == ["secret/v@1.0.0"]
    assert mine.get_vector("secret/v").hidden_size == 576


def test_twenty_concurrent_pushes_and_pulls_are_consistent(server: ThreadServer, store: LocalStore) -> None:
    token = store.create_token("load")
    seed_bytes = make_vector(100).to_bytes()  # once: safetensors may order header metadata differently per call
    store.publish(seed_bytes, Publication("load/seed@1.0.0"))
    payloads = {i: make_vector(i).to_bytes() for i in range(20)}

    def push(i: int) -> str:
        remote = RemoteStore(server.url, token=token)
        # Half go to distinct names with explicit versions, half race for auto versions of one name.
        ref = f"load/v{i}@1.0.{i}" if i % 2 else "load/shared"
        return remote.publish(payloads[i], Publication(ref)).ref

    def pull(_: int) -> bytes:
        return RemoteStore(server.url).get_bytes("load/seed")[1]

    with ThreadPoolExecutor(max_workers=20) as pool:
        pushed = list(pool.map(push, range(20)))
        pulled = list(pool.map(pull, range(20)))
    assert all(data == seed_bytes for data in pulled)
    shared = sorted(r for r in pushed if r.startswith("load/shared@"))
    assert shared == [f"load/shared@1.0.{k}" for k in range(10)]  # ten distinct versions, none lost or doubled
    client = RemoteStore(server.url)
    for i, ref in enumerate(pushed):
        assert client.get_bytes(ref)[1] == payloads[i], ref
    assert len(client.list(all_versions=True)) == 21
    report = store.verify()
    assert report.ok and not report.notes


UPLOADER = textwrap.dedent(
    """
    import socket, sys, time
    port, path, token, file = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
    body = open(file, "rb").read()
    head = (f"POST {path} HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\nAuthorization: Bearer {token}\\r\\n"
            f"Content-Type: application/octet-stream\\r\\nContent-Length: {len(body)}\\r\\n\\r\\n")
    conn = socket.create_connection(("127.0.0.1", int(port)))
    conn.sendall(head.encode() + body[: len(body) // 2])
    print("half sent", flush=True)
    time.sleep(600)
    """
)


def _partial_upload_in_progress(target: LocalStore) -> bool:
    return any(p.stat().st_size > 0 for p in target.blobs.leftovers())


def test_writer_killed_mid_upload_leaves_nothing(server: ThreadServer, store: LocalStore, tmp_path: Path) -> None:
    token = store.create_token("ns")
    file = make_vector(1, hidden=2048).save(tmp_path / "v.safetensors")
    before = store_state(store)
    args = [sys.executable, "-c", UPLOADER, str(server.port), f"{API}/ns/v?version=1.0.0", token, str(file)]
    writer = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout is not None and writer.stdout.readline().strip() == "half sent"
        wait_for(lambda: _partial_upload_in_progress(store), what="the server to stream the partial body to disk")
        assert store_state(store)[0] == before[0]  # mid-upload: not visible
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()
    wait_for(lambda: not store.blobs.leftovers(), what="the server to discard the partial upload")
    assert store_state(store) == before
    assert store.verify().ok
    # The interrupted version was never taken: the complete upload succeeds.
    remote = RemoteStore(server.url, token=token)
    assert remote.publish(file.read_bytes(), Publication("ns/v@1.0.0")).ref == "ns/v@1.0.0"


def test_server_killed_mid_upload_leaves_no_visible_entry(
    tmp_path: Path, catalog_url: str | None, store: LocalStore
) -> None:
    root = store.root  # the store.json written by the fixture points the server at the same catalogue
    token = store.create_token("ns")
    store.publish(make_vector(2).to_bytes(), Publication("ns/kept@1.0.0"))
    before = store_state(store)
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "steerlab", "hub", "serve", "--root", str(root), "--host", "127.0.0.1"]
    server_proc = subprocess.Popen([*cmd, "--port", str(port)], env=env, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: _up(port), timeout=120, what="`steerlab hub serve` to start")
        data = make_vector(1, hidden=2048).to_bytes()
        head = (
            f"POST {API}/ns/v?version=1.0.0 HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Length: {len(data)}\r\n\r\n"
        )
        with socket.create_connection(("127.0.0.1", port)) as conn:
            conn.sendall(head.encode() + data[: len(data) // 2])
            wait_for(lambda: _partial_upload_in_progress(store), what="the partial body on disk")
            server_proc.send_signal(signal.SIGKILL)
            server_proc.wait()
    finally:
        if server_proc.poll() is None:
            server_proc.kill()
            server_proc.wait()
    after = LocalStore(root)
    entries, blobs, leftovers = store_state(after)
    assert (entries, blobs) == before[:2] and len(leftovers) == 1  # only an invisible temp file remains
    report = after.verify()
    assert report.ok and any("unfinished uploads" in note for note in report.notes)
    assert after.publish(data, Publication("ns/v@1.0.0")).ref == "ns/v@1.0.0"
    assert after.get_bytes("ns/v@1.0.0")[1] == data
    after.close()


def _up(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
