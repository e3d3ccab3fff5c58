"""Datasets: the tests read committed slices (tests/data/datasets); only benchmarks, `make starter-pack` and
`steerlab bench --suite seed` read the full data, and without it they say where they looked and how to get it."""

from __future__ import annotations

import csv
import functools
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest
from typer.testing import CliRunner

from steerlab.cli.app import app
from steerlab.errors import SteerlabError
from steerlab.evaluate.data import SUITE_FOLDERS, datasets_root

SLICES = Path(__file__).resolve().parent / "data"


@functools.cache
def _make_slices() -> ModuleType:
    """tests/data/make_slices.py, a script beside the data rather than a package module."""
    spec = importlib.util.spec_from_file_location("make_slices", SLICES / "make_slices.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def test_the_fixture_is_the_committed_slices(datasets: Path) -> None:
    assert datasets == SLICES / "datasets" and datasets.is_dir()
    folders = sorted(p.name for p in datasets.iterdir())
    assert set(SUITE_FOLDERS) <= set(folders)
    for folder in folders:
        text = (datasets / folder / "SOURCE.md").read_text()
        assert "## How each file was cut" in text and "## The source's SOURCE.md" in text, folder
    # Where the dataset ships a licence, its slice keeps it.
    for folder in ("anthropic-evals", "axbench", "bbq", "caa", "refusal-direction", "repe"):
        assert (datasets / folder / "LICENSE").stat().st_size > 500, folder
    total = sum(p.stat().st_size for p in datasets.rglob("*") if p.is_file())
    assert total < 4_000_000, f"the slices grew to {total} bytes: keep tests/data under ~4 MB"


def _write_source(root: Path) -> None:
    """A miniature datasets folder: a CAA file (indent 4, A/B letters), a CSV without its last newline, a licence."""
    caa = root / "caa" / "generate" / "demo"
    caa.mkdir(parents=True)
    letters = ["(A)", "(A)", "(B)"] * 50  # 100 A, 50 B
    rows = [{"question": f"q{i}, é", "answer_matching_behavior": a} for i, a in enumerate(letters)]
    (caa / "generate_dataset.json").write_text(json.dumps(rows, indent=4) + "\n")
    (root / "caa" / "SOURCE.md").write_text("# CAA\n\nLicense: MIT\n")
    (root / "caa" / "LICENSE").write_text("MIT License\n")
    crows = root / "crows-pairs"
    crows.mkdir()
    lines = [",sent_more,sent_less"] + [f'{i},"more, {i}",less {i}' for i in range(320)]
    (crows / "crows_pairs_anonymized.csv").write_text("\n".join(lines))  # no newline at the end, like some sources
    (crows / "SOURCE.md").write_text("# CrowS\n")


def test_make_slices_keeps_formats_and_label_balance_deterministically(tmp_path: Path) -> None:
    module = _make_slices()
    _write_source(tmp_path / "src")
    module.make_slices(tmp_path / "src", tmp_path / "out")
    out = tmp_path / "out"
    text = (out / "caa" / "generate" / "demo" / "generate_dataset.json").read_text()
    kept = json.loads(text)
    source = json.loads((tmp_path / "src" / "caa" / "generate" / "demo" / "generate_dataset.json").read_text())
    # the first 60 of each letter, in file order: every A up to the 60th, and all 50 Bs
    assert [r["answer_matching_behavior"] for r in kept].count("(A)") == 60 and len(kept) == 110
    assert kept == [r for r in source if r in kept] and kept[:60] == source[:60]
    assert text == json.dumps(kept, indent=4) + "\n"  # the source's own style (indent 4, \\u escapes)
    with (out / "crows-pairs" / "crows_pairs_anonymized.csv").open(newline="") as handle:
        crows = list(csv.DictReader(handle))
    assert len(crows) == 300 and crows[7]["sent_more"] == "more, 7"
    assert (out / "caa" / "LICENSE").read_text() == "MIT License\n"
    md = (out / "caa" / "SOURCE.md").read_text()
    assert "License: MIT" in md and "| generate/demo/generate_dataset.json | 110 of 150 |" in md
    first = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    module.make_slices(tmp_path / "src", out)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == first


def test_make_slices_refuses_a_large_file_without_a_rule(tmp_path: Path) -> None:
    module = _make_slices()
    (tmp_path / "src" / "new").mkdir(parents=True)
    (tmp_path / "src" / "new" / "SOURCE.md").write_text("# new\n")
    (tmp_path / "src" / "new" / "big.jsonl").write_text('{"a": 1}\n' * 10_000)
    with pytest.raises(SystemExit, match="no slicing rule"):
        module.make_slices(tmp_path / "src", tmp_path / "out")


def test_datasets_root_accepts_a_folder_with_the_layout(datasets: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STEERLAB_DATASETS", str(datasets))
    assert datasets_root() == datasets


def test_seed_bench_without_datasets_says_where_it_looked_and_how_to_get_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("STEERLAB_DATASETS", str(empty))
    result = CliRunner().invoke(app, ["bench", "--suite", "seed", "--quick", "--out", str(tmp_path / "out")])
    assert result.exit_code != 0 and isinstance(result.exception, SteerlabError)
    message = str(result.exception)
    assert "looked for caa/, crows-pairs/" in message and str(empty) in message  # where it looked, for what
    assert "Set STEERLAB_DATASETS" in message and "../shared/datasets" in message  # how to get them
    assert "--suite seed" in message  # which commands need them
