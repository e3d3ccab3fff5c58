"""Authenticated serving on a tiny model: keys, 401s, allowed names, scale caps, rate limits, the audit principal,
per-client isolation under auth, and loopback-only serving without keys (a real server on loopback)."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import torch
from tiny import tiny_model

from steerlab import Card, SteerlabError, Vector
from steerlab.serve.keys import add_key, hash_secret, load_keys
from steerlab.serve.server import BackgroundServer, build_service, check_listen, is_loopback

BODY = {"model": "tiny", "prompt": "hello there", "max_tokens": 8, "temperature": 0, "ignore_eos": True}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("auth")
    kits = root / "kits"
    gen = torch.Generator().manual_seed(0)
    for name in ("warm", "cold", "other"):
        Vector({i: torch.randn(32, generator=gen) * 2 for i in range(4)}, Card(name=name)).save(
            kits / f"{name}.safetensors"
        )
    keys = root / "keys.json"
    secrets = {
        "alice": add_key(keys, "alice", ["warm", "other"])[1],
        "bob": add_key(keys, "bob", ["cold"], max_scale=1.0)[1],
        "carol": add_key(keys, "carol", ["*"], rate="2/min")[1],
    }
    audit = root / "audit.jsonl"
    service = build_service(tiny_model("llama"), kits_dir=kits, audit_path=audit, model_id="tiny", api_keys=keys)
    with BackgroundServer(service) as server:
        yield server.url, secrets, audit, keys


def _post(url: str, secret: str | None, steering=None, **extra) -> httpx.Response:
    headers = {"Authorization": f"Bearer {secret}"} if secret is not None else {}
    body = {**BODY, **extra, **({"steering": steering} if steering is not None else {})}
    return httpx.post(f"{url}/v1/completions", json=body, headers=headers, timeout=120)


def test_the_key_file_holds_hashes_only(setup) -> None:
    _url, secrets, _audit, keys = setup
    text = keys.read_text()
    assert all(secret not in text for secret in secrets.values())
    loaded = {k.id: k for k in load_keys(keys)}
    assert loaded["alice"].sha256 == hash_secret(secrets["alice"]) and loaded["bob"].max_scale == 1.0
    assert str(loaded["carol"].rate) == "2/min" and stat.S_IMODE(keys.stat().st_mode) == 0o600
    with pytest.raises(SteerlabError, match="already has a key for 'alice'"):
        add_key(keys, "alice", ["*"])
    assert {k.id for k in load_keys(keys)} == {"alice", "bob", "carol"}  # the refused add changed nothing


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("not json", "cannot read it as JSON"),
        ('{"keys": []}', "not a key file"),
        ('{"format": "steerlab-api-keys/1", "keys": [{"id": "a"}]}', "has no 'sha256'"),
        ('{"format": "steerlab-api-keys/1", "keys": [{"id": "a", "sha256": "xyz"}]}', "64 hex digits"),
        (
            '{"format": "steerlab-api-keys/1", "keys": [{"id": "a", "sha256": "' + "0" * 64 + '", "rate": "fast"}]}',
            "cannot read rate",
        ),
        (
            '{"format": "steerlab-api-keys/1", "keys": [{"id": "a", "sha256": "' + "0" * 64 + '", "max_scale": -1}]}',
            "max_scale",
        ),
    ],
)
def test_malformed_key_files_are_refused(tmp_path: Path, content: str, problem: str) -> None:
    path = tmp_path / "keys.json"
    path.write_text(content)
    with pytest.raises(SteerlabError, match=problem):
        load_keys(path)


def test_requests_without_a_valid_key_get_401(setup) -> None:
    url, secrets, audit, _keys = setup
    for headers in (
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Basic YWxpY2U6eA=="},
        {"Authorization": "Bearer " + secrets["alice"][:-1]},
        {"Authorization": "Bearer " + "x" * 5000},
        {"Authorization": secrets["alice"]},
    ):
        for method, path in (("POST", "/v1/completions"), ("GET", "/v1/models"), ("GET", "/v1/steering")):
            response = httpx.request(method, url + path, json=BODY, headers=headers, timeout=30)
            assert response.status_code == 401, (headers, path)
            assert response.headers["www-authenticate"] == "Bearer"
            error = response.json()["error"]
            assert error["type"] == "authentication_error" and error["code"] in ("missing_api_key", "invalid_api_key")
    garbage = httpx.post(f"{url}/v1/completions", content=b"\xff{{not json", timeout=30)
    assert garbage.status_code == 401  # the key is checked before the body is read
    assert httpx.get(f"{url}/health").status_code == 200 and httpx.get(f"{url}/").status_code == 200
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    assert records and all(r["principal"] is None and r["status"] == "unauthorized" for r in records)


def test_a_key_steers_only_with_what_it_may_use(setup) -> None:
    url, secrets, audit, _keys = setup
    assert _post(url, secrets["alice"], [{"vector": "warm", "scale": 1.0}]).status_code == 200
    denied = _post(url, secrets["alice"], [{"vector": "warm", "scale": 1.0}, {"vector": "cold", "scale": 1.0}])
    assert denied.status_code == 403 and denied.json()["error"]["code"] == "steering_not_allowed"
    assert "'cold'" in denied.json()["error"]["message"]
    assert _post(url, secrets["bob"], "cold").status_code == 200
    capped = _post(url, secrets["bob"], [{"vector": "cold", "scale": 1.5}])
    assert capped.status_code == 400 and capped.json()["error"]["code"] == "scale_too_large"
    assert "'bob'" in capped.json()["error"]["message"]
    seen = httpx.get(f"{url}/v1/steering", headers={"Authorization": f"Bearer {secrets['bob']}"}).json()
    assert [item["id"] for item in seen["data"]] == ["cold"]
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    ok = [r for r in records if r["status"] == "ok"]
    assert [(r["principal"], r["vectors"][0]["vector"]) for r in ok[-2:]] == [("alice", "warm"), ("bob", "cold")]
    rejected = [r for r in records if r["status"] == "rejected"]
    assert {(r["principal"], r["error"]) for r in rejected} >= {
        ("alice", "steering_not_allowed"),
        ("bob", "scale_too_large"),
    }


def test_rate_limits_are_per_key(setup) -> None:
    url, secrets, _audit, _keys = setup
    codes = [_post(url, secrets["carol"], max_tokens=1).status_code for _ in range(3)]
    assert codes == [200, 200, 429]
    limited = _post(url, secrets["carol"], max_tokens=1)
    assert limited.json()["error"]["code"] == "rate_limit_exceeded" and int(limited.headers["retry-after"]) >= 1
    assert _post(url, secrets["alice"], max_tokens=1).status_code == 200  # another key is not limited by carol's


def test_one_clients_steering_never_reaches_another(setup) -> None:
    """Alice (warm), bob (cold) and alice unsteered, 18 requests at once: each answer is what it gets alone."""
    url, secrets, _audit, _keys = setup
    asks = [
        (secrets["alice"], [{"vector": "warm", "scale": 2.0}]),
        (secrets["bob"], [{"vector": "cold", "scale": 1.0}]),
        (secrets["alice"], None),
    ]
    alone = [_post(url, secret, steering).json()["choices"][0]["text"] for secret, steering in asks]
    assert len(set(alone)) == 3  # the three settings differ, so a leak would show
    with ThreadPoolExecutor(6) as pool:
        together = list(pool.map(lambda k: _post(url, *asks[k % 3]), range(18)))
    assert [r.json()["choices"][0]["text"] for r in together] == [alone[k % 3] for k in range(18)]


def test_without_keys_only_loopback() -> None:
    for host in ("127.0.0.1", "::1", "localhost", "127.0.0.5"):
        assert is_loopback(host)
        check_listen(host, authenticated=False)
    for host in ("0.0.0.0", "::", "192.168.1.10", "no-such-host.invalid"):
        assert not is_loopback(host)
        with pytest.raises(SteerlabError, match="--api-keys"):
            check_listen(host, authenticated=False)
        check_listen(host, authenticated=True)
        check_listen(host, authenticated=False, insecure=True)


def test_cli_refuses_a_public_host_without_keys_and_keygen_prints_the_secret_once(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "steerlab", "serve", "--host", "0.0.0.0", "--model", str(tmp_path / "none")]
    refused = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "--api-keys" in refused.stderr and "--insecure" in refused.stderr
    keys = tmp_path / "keys.json"
    made = subprocess.run(
        [
            sys.executable,
            "-m",
            "steerlab",
            "serve",
            "keygen",
            "dave",
            "--keys",
            str(keys),
            "--allow",
            "starter/*",
            "--max-scale",
            "2",
            "--rate",
            "10/s",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert made.returncode == 0, made.stderr
    secret = made.stdout.strip()
    assert secret.startswith("slk_") and secret not in keys.read_text() and secret not in made.stderr
    (key,) = load_keys(keys)
    assert (key.id, key.allow, key.max_scale, str(key.rate)) == ("dave", ("starter/*",), 2.0, "10/s")
    assert key.sha256 == hash_secret(secret)


def test_a_key_taken_out_of_the_file_is_refused_without_a_restart(tmp_path: Path) -> None:
    (tmp_path / "kits").mkdir()
    keys = tmp_path / "keys.json"
    dave, erin = add_key(keys, "dave", ["*"])[1], add_key(keys, "erin", ["*"])[1]
    service = build_service(tiny_model("llama"), kits_dir=tmp_path / "kits", model_id="tiny", api_keys=keys)
    with BackgroundServer(service) as server:
        assert _post(server.url, dave).status_code == 200
        revoke = [sys.executable, "-m", "steerlab", "serve", "revoke-key", "dave", "--keys", str(keys)]
        done = subprocess.run(revoke, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 and "removed" in done.stdout, done.stderr
        refused = _post(server.url, dave)
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
        assert _post(server.url, erin).status_code == 200
        frank = add_key(keys, "frank", ["*"])[1]  # a key added to the file works at once too
        assert _post(server.url, frank).status_code == 200

        good = keys.read_text()
        keys.write_text(good[: len(good) // 2])  # an edit the server cannot read: it fails closed
        broken = _post(server.url, erin)
        assert broken.status_code == 503 and "API-key file cannot be read" in broken.json()["error"]["message"]
        keys.write_text(good)
        assert _post(server.url, erin).status_code == 200 and _post(server.url, dave).status_code == 401
