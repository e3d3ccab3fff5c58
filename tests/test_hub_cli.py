"""`steerlab hub ...` with the exact spellings scripts rely on, against a folder and a real server on loopback."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from test_hub_support import ThreadServer, make_vector

from steerlab.cli.app import main
from steerlab.hub.store import LocalStore
from steerlab.kit import Kit
from steerlab.kitfile import save_kit


def run(args: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> tuple[int, str]:
    """The console script in-process: exit status (0, or 2 for a refusal) and everything printed."""
    monkeypatch.setattr(sys, "argv", ["steerlab", *args])
    capsys.readouterr()
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    out = capsys.readouterr()
    return code, out.out + out.err


@pytest.fixture(autouse=True)
def _home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STEERLAB_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("COLUMNS", "200")


def test_scripted_spellings_against_a_server(tmp_path: Path, capsys, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    root = tmp_path / "served"
    code, token = run(["hub", "token", "team", "--root", str(root)], capsys, monkeypatch)
    token = token.strip()
    assert code == 0 and token.startswith("stl_")
    vector_file = make_vector(3, name="calm").save(tmp_path / "calm.safetensors")
    with ThreadServer(LocalStore(root)) as server:
        push = ["hub", "push", str(vector_file), "--to", server.url, "--name", "team/calm@1.0.0", "--token", token]
        code, out = run(push, capsys, monkeypatch)
        assert code == 0 and "published team/calm@1.0.0" in out and "signed by" in out
        code, out = run(push, capsys, monkeypatch)
        assert code == 2 and "immutable" in out  # the same version again is refused
        code, out = run([*push[:-1], "stl_wrong"], capsys, monkeypatch)
        assert code == 2 and "not valid" in out
        code, out = run(["hub", "push", str(vector_file), "--to", server.url, "--name", "team/x"], capsys, monkeypatch)
        assert code == 2 and "needs its token" in out
        code, out = run(["hub", "list", "--from", server.url], capsys, monkeypatch)
        assert code == 0 and "team/calm@1.0.0" in out
        pulled = tmp_path / "out" / "calm.safetensors"
        pull = ["hub", "pull", "team/calm@1.0.0", "--from", server.url, "--out", str(pulled), "--require-signed"]
        code, out = run(pull, capsys, monkeypatch)
        assert code == 0 and pulled.read_bytes() == vector_file.read_bytes() and "verified" in out
        code, out = run(["hub", "pull", "team/nope", "--from", server.url, "--out", str(pulled)], capsys, monkeypatch)
        assert code == 2 and "no entry team/nope" in out
        code, out = run(["hub", "search", "calm", "--from", server.url, "--json"], capsys, monkeypatch)
        assert code == 0 and [e["ref"] for e in json.loads(out)] == ["team/calm@1.0.0"]


def test_local_store_commands(tmp_path: Path, capsys, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    root = str(tmp_path / "store")
    vector = make_vector(1, name="happy")
    file = vector.save(tmp_path / "happy.safetensors")
    add = ["hub", "add", str(file), "--name", "starter/happy", "--root", root, "--tag", "emotion", "--no-sign"]
    assert run(add, capsys, monkeypatch)[0] == 0
    assert run(add, capsys, monkeypatch)[0] == 0  # no version given: the next patch version
    code, out = run(["hub", "show", "starter/happy", "--from", root, "--json"], capsys, monkeypatch)
    shown = json.loads(out)
    assert code == 0 and shown["version"] == "1.0.1" and shown["card"]["name"] == "happy"
    code, out = run(["hub", "show", "starter/happy@1.0.0", "--from", root], capsys, monkeypatch)
    assert code == 0 and "versions: 1.0.0, 1.0.1" in out and "emotion" in out
    code, out = run(["hub", "search", "--tag", "emotion", "--from", root], capsys, monkeypatch)
    assert code == 0 and "starter/happy@1.0.1" in out
    code, out = run(["hub", "pull", "starter/happy", "--from", root, "--require-signed"], capsys, monkeypatch)
    assert code == 2 and "not signed" in out
    kit_file = save_kit(Kit.single(vector, scale=0.4, layers=[10]), tmp_path / "kit" / "calm.json")
    code, out = run(["hub", "add", str(kit_file), "--name", "kits/calm@0.1.0", "--root", root], capsys, monkeypatch)
    assert code == 0 and "(kit," in out and "signed by" in out
    pulled_kit = tmp_path / "k.json"
    code, out = run(["hub", "pull", "kits/calm", "--from", root, "--out", str(pulled_kit)], capsys, monkeypatch)
    assert code == 0 and json.loads(pulled_kit.read_text()) == json.loads(kit_file.read_text())
    code, out = run(["hub", "rm", "starter/happy@1.0.1", "--from", root], capsys, monkeypatch)
    assert code == 0 and "removed starter/happy@1.0.1" in out
    code, out = run(["hub", "verify", "--root", root], capsys, monkeypatch)
    assert code == 0 and "checked 2 entries: clean" in out
    blob = next((tmp_path / "store" / "blobs").glob("[0-9a-f][0-9a-f]/*"))
    blob.write_bytes(b"corrupted")
    code, out = run(["hub", "verify", "--root", root], capsys, monkeypatch)
    assert code == 1 and "problem" in out
    code, out = run(["hub", "keygen"], capsys, monkeypatch)
    assert code == 0 and (tmp_path / "home" / "keys" / "publisher.pem").exists()
