"""`steerlab --help` and the hub commands that need no model start without torch or transformers (issue 11, item 6).

Each command runs in its own process through the installed console script with PYTHONPROFILEIMPORTTIME=1: Python
then names every module it imports on stderr, so the tests check what was imported instead of timing it (the
wall times are in bench/bench_cli.py). Torch alone takes seconds to import; a command that avoids it starts fast.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import save
from test_hub_support import ThreadServer, make_vector

from steerlab.card import CARD_KEY
from steerlab.errors import SteerlabError
from steerlab.hub.publish import prepare, publish
from steerlab.hub.store import LocalStore
from steerlab.hub.validate import check_upload
from steerlab.kit import Kit
from steerlab.kitfile import save_kit

HEAVY = ("torch", "transformers")


@dataclass
class Ran:
    code: int
    out: str  # stdout, then stderr without the import-time lines
    modules: set[str]

    @property
    def heavy(self) -> list[str]:
        return sorted(m for m in self.modules if m.split(".")[0] in HEAVY)


def console_script() -> list[str]:
    """The `steerlab` script installed beside this Python (what users run), else `python -m steerlab`."""
    script = Path(sys.executable).with_name("steerlab")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "steerlab"]


def run_traced(command: list[str], home: Path) -> Ran:
    env = {**os.environ, "STEERLAB_HOME": str(home), "PYTHONPROFILEIMPORTTIME": "1", "COLUMNS": "200"}
    proc = subprocess.run(command, capture_output=True, text=True, env=env, cwd=home.parent, timeout=300)
    modules, rest = set(), []
    for line in proc.stderr.splitlines():
        if line.startswith("import time:"):
            # "import time:  self | cumulative |   name" (nesting is shown by indenting the name)
            modules.add(line.rsplit("|", 1)[1].strip())
        else:
            rest.append(line)
    return Ran(proc.returncode, proc.stdout + "\n".join(rest), modules)


def cli(*args: str | Path, home: Path) -> Ran:
    return run_traced([*console_script(), *map(str, args)], home)


@dataclass
class Fixture:
    home: Path
    root: Path
    vector_file: Path
    kit_file: Path
    key: Path


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Fixture:
    """A local store with a signed vector and a signed kit, published in-process (this process may import torch)."""
    base = tmp_path_factory.mktemp("fast")
    home, root, key = base / "home", base / "store", base / "publisher.pem"
    vector = make_vector(1, hidden=8, n_layers=4, name="happy")
    vector_file = vector.save(base / "happy.safetensors")
    kit_file = save_kit(Kit.single(vector, scale=0.5, layers=[2]), base / "kit" / "cheer.json")
    store = LocalStore(root)
    for file, ref in ((vector_file, "starter/happy@1.0.0"), (kit_file, "kits/cheer@1.0.0")):
        data, pub = prepare(file, ref, ["emotion"], None)
        publish(store, data, pub, key)
    return Fixture(home, root, vector_file, kit_file, key)


def assert_light(ran: Ran) -> None:
    assert ran.code == 0, ran.out
    # The trace is real: the CLI's own modules show up in it, so an empty parse cannot pass for "no torch".
    assert "steerlab.cli.app" in ran.modules
    assert ran.heavy == [], f"imported {ran.heavy[:5]}"


def test_the_trace_sees_torch_when_it_is_imported(tmp_path: Path) -> None:
    ran = run_traced([sys.executable, "-c", "import steerlab.vector"], tmp_path / "home")
    assert ran.code == 0 and "torch" in ran.heavy


@pytest.mark.parametrize("args", [["--help"], ["hub", "--help"], ["hub", "pull", "--help"], ["serve", "--help"]])
def test_help_imports_no_torch(args: list[str], tmp_path: Path) -> None:
    ran = cli(*args, home=tmp_path / "home")
    assert_light(ran)
    assert "Usage: steerlab" in ran.out


def test_python_dash_m_steerlab_imports_no_torch(tmp_path: Path) -> None:
    ran = run_traced([sys.executable, "-m", "steerlab", "--help"], tmp_path / "home")
    assert_light(ran)
    assert "hub" in ran.out and "extract" in ran.out


def test_list_search_show_without_torch(hub: Fixture) -> None:
    listed = cli("hub", "list", "--from", hub.root, "--json", home=hub.home)
    assert_light(listed)
    assert sorted(e["ref"] for e in json.loads(listed.out)) == ["kits/cheer@1.0.0", "starter/happy@1.0.0"]
    found = cli("hub", "search", "happy", "--from", hub.root, "--json", home=hub.home)
    assert_light(found)
    assert [e["ref"] for e in json.loads(found.out)] == ["starter/happy@1.0.0"]
    shown = cli("hub", "show", "starter/happy", "--from", hub.root, home=hub.home)
    assert_light(shown)
    assert "versions: 1.0.0" in shown.out and "signature: key" in shown.out


def test_the_default_store_installs_the_starter_pack_without_torch(tmp_path: Path) -> None:
    # A fresh STEERLAB_HOME: the first `hub list` publishes the shipped pack (each vector checked), still torch-free.
    for _ in range(2):  # the second call finds the pack installed
        ran = cli("hub", "list", "--json", home=tmp_path / "home")
        assert_light(ran)
        assert isinstance(json.loads(ran.out), list)


def test_pull_verifies_without_torch(hub: Fixture, tmp_path: Path) -> None:
    for ref, source in (("starter/happy", hub.vector_file), ("kits/cheer", hub.kit_file)):
        out = tmp_path / source.name
        ran = cli("hub", "pull", ref, "--from", hub.root, "--out", out, "--require-signed", home=hub.home)
        assert_light(ran)
        assert out.read_bytes() == source.read_bytes() and "signature by" in ran.out


def test_verify_reads_every_value_without_torch(hub: Fixture) -> None:
    ran = cli("hub", "verify", "--root", hub.root, home=hub.home)
    assert_light(ran)
    assert "checked 2 entries: clean" in ran.out


def test_keygen_token_and_signed_push_without_torch(hub: Fixture, tmp_path: Path) -> None:
    root, key = tmp_path / "other-store", tmp_path / "k.pem"
    made = cli("hub", "keygen", "--out", key, home=hub.home)
    assert_light(made)
    assert key.is_file() and str(key) in made.out
    token = cli("hub", "token", "team", "--root", root, home=hub.home)
    assert_light(token)
    assert token.out.strip().startswith("stl_")
    for file, ref, kind in ((hub.vector_file, "team/happy@1.0.0", "vector"), (hub.kit_file, "team/cheer@1.0.0", "kit")):
        pushed = cli("hub", "push", file, "--to", root, "--name", ref, "--key", key, home=hub.home)
        assert_light(pushed)
        assert f"published {ref} ({kind}," in pushed.out and "signed by" in pushed.out


def test_trust_and_access_commands_without_torch(hub: Fixture, tmp_path: Path) -> None:
    home = tmp_path / "home"
    made = cli("hub", "keygen", "--out", tmp_path / "k.pem", home=home)
    key_id = made.out.split()[0]
    for args in (
        ("hub", "trust", "team", key_id),
        ("hub", "trust", "--list", "--from", hub.root),
        ("hub", "token", "--principal", "bob", "--root", hub.root),
        ("hub", "tokens", "--root", hub.root, "--json"),
        ("hub", "orders", "--from", hub.root),
    ):
        ran = cli(*args, home=home)
        assert_light(ran)
    assert f"team: {key_id}" in cli("hub", "trust", home=home).out


def test_remote_list_and_pull_without_torch(hub: Fixture, tmp_path: Path) -> None:
    out = tmp_path / "happy.safetensors"
    with ThreadServer(LocalStore(hub.root)) as server:
        listed = cli("hub", "list", "--from", server.url, "--json", home=hub.home)
        pulled = cli("hub", "pull", "starter/happy", "--from", server.url, "--out", out, home=hub.home)
    assert_light(listed)
    assert_light(pulled)
    assert len(json.loads(listed.out)) == 2 and out.read_bytes() == hub.vector_file.read_bytes()


# The value check behind push, pull and verify reads tensors with numpy, which has no bfloat16: every float dtype
# must still be read exactly, so that a NaN or an infinity is refused and a finite value is not.
DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]


def _vector_bytes(dtype: torch.dtype, bad: float | None) -> bytes:
    card = make_vector(0, hidden=8, n_layers=4).card.to_json()
    tensors = {f"layer.{i}": torch.linspace(-3e4, 3e4, 8).to(dtype) for i in range(4)}
    if bad is not None:
        tensors["layer.2"][5] = bad
    return save(tensors, metadata={CARD_KEY: card})


@pytest.mark.parametrize("dtype", DTYPES)
def test_finite_values_pass_in_every_dtype(dtype: torch.dtype) -> None:
    assert check_upload(_vector_bytes(dtype, None), "vector").hidden_size == 8


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("dtype", DTYPES)
def test_non_finite_values_are_refused_in_every_dtype(dtype: torch.dtype, bad: float) -> None:
    with pytest.raises(SteerlabError, match=r"tensor layer\.2 contains NaN or infinite values"):
        check_upload(_vector_bytes(dtype, bad), "vector")
