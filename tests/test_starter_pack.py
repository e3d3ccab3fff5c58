"""The starter pack shipped in the package: one signed file per recipe, honest cards, and installing it anywhere."""

from __future__ import annotations

import fnmatch
import json
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path, PurePosixPath

import pytest

from steerlab.errors import SteerlabError
from steerlab.hub.starter import CHANCE_NOTE, NAMESPACE, PACK_DATE, RECIPES, VERSION
from steerlab.hub.starter_pack import (
    MANIFEST,
    ensure_shipped_pack,
    entry_bytes,
    install_shipped_pack,
    read_manifest,
    shipped_dir,
)
from steerlab.hub.store import LocalStore
from steerlab.hub.validate import check_upload

REPO = Path(__file__).resolve().parents[1]
PACK = shipped_dir()


def test_the_pack_has_one_file_per_recipe_and_ships_with_the_package() -> None:
    manifest = read_manifest()
    names = [r.name for r in RECIPES]
    assert len(names) >= 50 and [e.name for e in manifest.entries] == names
    assert sorted(p.stem for p in PACK.glob("*.safetensors")) == sorted(names)
    assert {e.ref for e in manifest.entries} == {f"{NAMESPACE}/{n}@{VERSION}" for n in names}
    assert not any(b"PRIVATE KEY" in p.read_bytes() for p in PACK.iterdir())  # only the public half is shipped
    # pyproject's package-data globs must pick every pack file up, or a pip install would miss them.
    globs = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["steerlab"]
    package = REPO / "src" / "steerlab"
    for path in PACK.iterdir():
        rel = PurePosixPath(path.relative_to(package).as_posix())
        assert any(
            rel.parent == PurePosixPath(g).parent and fnmatch.fnmatch(rel.name, PurePosixPath(g).name) for g in globs
        )


def test_every_signature_verifies_and_every_card_says_what_was_measured() -> None:
    manifest = read_manifest()
    by_name = {r.name: r for r in RECIPES}
    for entry in manifest.entries:
        card = check_upload(entry_bytes(entry, manifest, PACK), "vector").card
        recipe = by_name[entry.name]
        effect = card["metadata"]["effect"]
        assert card["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct" and card["created_at"] == PACK_DATE
        assert card["license"] == recipe.license and card["metadata"]["source"] == recipe.source, entry.name
        assert effect["source"] == "extraction diagnostics on held-out pairs" and 0.0 <= effect["accuracy"] <= 1.0
        assert effect["held_out_pairs"] >= 3 and card["recommended_layers"], entry.name
        chance = effect["at_chance"]
        assert (CHANCE_NOTE in card["description"]) == chance == (card["metadata"].get("warning") == CHANCE_NOTE)
        assert entry.description == card["description"] and entry.tags == sorted(recipe.tags)


def test_a_changed_file_or_a_moved_signature_is_refused(tmp_path: Path) -> None:
    pack = tmp_path / "pack"
    shutil.copytree(PACK, pack)
    manifest = read_manifest(pack)
    first, second = manifest.entries[:2]
    raw = json.loads((pack / MANIFEST).read_text())
    raw["entries"][0]["signature"] = second.signature
    (pack / MANIFEST).write_text(json.dumps(raw))
    with pytest.raises(SteerlabError, match="bad signature"):
        install_shipped_pack(LocalStore(tmp_path / "store"), pack)
    shutil.copyfile(PACK / MANIFEST, pack / MANIFEST)
    data = bytearray((pack / first.file).read_bytes())
    data[-1] ^= 1
    (pack / first.file).write_bytes(bytes(data))
    with pytest.raises(SteerlabError, match="changed after signing"):
        install_shipped_pack(LocalStore(tmp_path / "store2"), pack)


def test_installing_into_an_empty_store_lists_everything_and_is_idempotent(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    manifest = read_manifest()
    refs = [e.ref for e in manifest.entries]
    first = install_shipped_pack(store)
    assert sorted(first.installed) == sorted(refs) and not first.conflicts
    assert sorted(i.ref for i in store.list(namespace=NAMESPACE)) == sorted(refs)
    again = install_shipped_pack(store)
    assert again.installed == [] and sorted(again.present) == sorted(refs)
    happy = store.get_vector("starter/happy", require_signed=True, trusted_keys=[manifest.key_id])
    assert happy.card.name == "happy" and store.verify().ok


def test_the_default_store_gets_the_pack_on_first_use_without_torch(tmp_path: Path) -> None:
    """`steerlab hub list --json` on an empty STEERLAB_HOME lists the whole pack, and needs no torch to do it."""
    code = (
        "import json, sys, io, contextlib\n"
        "from steerlab.cli.app import main\n"
        "sys.argv = ['steerlab', 'hub', 'list', '--json']\n"
        "out = io.StringIO()\n"
        "with contextlib.redirect_stdout(out):\n"
        "    try:\n        main()\n    except SystemExit:\n        pass\n"
        "print(json.dumps({'refs': [e['ref'] for e in json.loads(out.getvalue())], 'torch': 'torch' in sys.modules}))\n"
    )
    env = {"STEERLAB_HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    listed = json.loads(result.stdout.strip().splitlines()[-1])
    assert sorted(listed["refs"]) == sorted(e.ref for e in read_manifest().entries)
    assert listed["torch"] is False
    assert (tmp_path / "home" / "store" / "shipped-pack.json").is_file()


def test_demo_store_step_works_from_an_empty_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from steerlab.demo import install_starter_store

    monkeypatch.setenv("STEERLAB_HOME", str(tmp_path / "home"))
    store, count = install_starter_store()
    assert count == len(RECIPES) >= 50 and store.root == tmp_path / "home" / "store"
    assert store.get_vector("starter/happy", require_signed=True).card.metadata["pack"] == f"{NAMESPACE}@{VERSION}"
    assert ensure_shipped_pack(store) is None  # the marker: a second open does no work
    assert install_starter_store()[1] == count


def test_a_store_address_finds_the_pack_on_a_fresh_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`steerlab generate --vector starter/happy` (and the server's --store) reach the pack without a hub command first:
    the default store installs it when resolve opens it."""
    from steerlab import resolve

    monkeypatch.setenv("STEERLAB_HOME", str(tmp_path / "home"))
    kit = resolve("starter/happy:0.5")
    (entry,) = kit.entries
    assert entry.scale == 0.5 and entry.vector.card.metadata["pack"] == f"{NAMESPACE}@{VERSION}"
    assert entry.layers == entry.vector.card.recommended_layers
