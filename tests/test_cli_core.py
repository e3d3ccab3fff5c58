"""The core CLI (extract, inspect, generate) end to end on a tiny model saved as a local HF folder."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from tiny import tiny_model
from typer.testing import CliRunner

from steerlab import Vector, load_model
from steerlab.address import parse_address
from steerlab.cli.app import app
from steerlab.cli.common import parse_layers
from steerlab.errors import SteerlabError


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-llama")
    tiny = tiny_model("llama")
    tiny.hf_model.save_pretrained(folder)
    tiny.tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def pair_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("pairs") / "pairs.jsonl"
    rows = [{"prompt": f"tell {i}", "positive": f"great {i}", "negative": f"awful {i}"} for i in range(10)]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    return path


def test_load_model_from_local_folder(model_dir) -> None:
    loaded = load_model(str(model_dir))
    assert loaded.n_layers == 4 and loaded.hidden_size == 32
    assert loaded.fingerprint == tiny_model("llama").fingerprint


def test_extract_inspect_generate(model_dir, pair_file, tmp_path) -> None:
    runner = CliRunner()
    out = tmp_path / "v.safetensors"
    res = runner.invoke(
        app, ["extract", str(pair_file), "--model", str(model_dir), "--out", str(out), "--layers", "1-2"]
    )
    assert res.exit_code == 0, res.output
    vec = Vector.load(out)
    assert vec.layers == [1, 2] and vec.card.n_pairs == 10 and vec.card.name == "pairs"
    res = runner.invoke(app, ["inspect", str(out)])
    assert res.exit_code == 0, res.output
    assert "held-out acc" in res.output and "mean_diff" in res.output
    res = runner.invoke(
        app,
        [
            "generate",
            "hello",
            "--model",
            str(model_dir),
            "--vector",
            f"{out}:4.0@1",
            "--compare",
            "--max-new-tokens",
            "6",
        ],
    )
    assert res.exit_code == 0, res.output
    # Both columns, side by side: "steered" as a word of its own, since "unsteered" contains it.
    header = next(line for line in res.output.splitlines() if "unsteered" in line)
    assert re.search(r"\bunsteered\b.*\bsteered\b", header), res.output


def test_cli_errors_exit_non_zero_with_a_clear_message(tmp_path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "steerlab", "extract", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "v")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2
    assert "does not exist" in proc.stderr
    assert not (tmp_path / "v").exists()


def test_left_out_scale_and_layers_come_from_the_card(tmp_path: Path) -> None:
    import torch

    from steerlab.cli.common import kit_from_addresses
    from steerlab.vector import Card, Vector

    card = Card(recommended_scale=-0.3, recommended_layers=[2, 3])
    path = Vector({la: torch.ones(8) for la in range(5)}, card).save(tmp_path / "v.safetensors")
    other = Vector({la: torch.ones(8) for la in range(5)}).save(tmp_path / "w.safetensors")
    kit, sources = kit_from_addresses([str(path), f"{path}:0.5@1", str(other)])
    assert [(e.scale, e.layers) for e in kit.entries] == [(-0.3, [2, 3]), (0.5, [1]), (1.0, None)]
    assert [s.file for s in sources] == [path, path, other]


def test_spec_parsing(tmp_path: Path) -> None:
    assert parse_layers("8-10,12") == [8, 9, 10, 12]
    assert parse_layers(None) is None
    (tmp_path / "b.safetensors").write_bytes(b"")
    found = parse_address(f"{tmp_path}/b.safetensors:0.5@3-4")
    assert (found.kind, found.target, found.scale, found.layers) == (
        "vector-file",
        f"{tmp_path}/b.safetensors",
        0.5,
        [3, 4],
    )
    assert parse_address(f"{tmp_path}/b.safetensors").scale is None  # left to the card
    assert parse_address(f"{tmp_path}/b.safetensors:-2").scale == -2.0
    with pytest.raises(SteerlabError, match="cannot read layers"):
        parse_layers("eight")
    with pytest.raises(SteerlabError, match="cannot read layers"):
        parse_layers("9-3")


def test_extract_max_pairs_takes_a_seeded_sample(model_dir, pair_file, tmp_path) -> None:
    from steerlab.cli.core import sample_pairs
    from steerlab.pairs import PairSet

    pairs = PairSet.load(pair_file)
    first, again, other = (sample_pairs(pairs, 4, seed) for seed in (0, 0, 1))
    assert len(first) == 4 and first.pairs == again.pairs and first.pairs != other.pairs
    order = [pairs.pairs.index(p) for p in first.pairs]
    assert order == sorted(order)  # kept in file order
    assert sample_pairs(pairs, 50, 0).pairs == pairs.pairs  # asking for more than there are takes them all
    with pytest.raises(SteerlabError, match="positive"):
        sample_pairs(pairs, 0, 0)
    out = tmp_path / "v.safetensors"
    args = ["extract", str(pair_file), "--model", str(model_dir), "--out", str(out), "--layers", "1-2"]
    res = CliRunner().invoke(app, [*args, "--max-pairs", "6", "--seed", "3"])
    assert res.exit_code == 0, res.output
    assert "from 6 of 10 pairs" in res.output
    card = Vector.load(out).card
    assert card.n_pairs == 6 and card.metadata["sample"] == {"pairs": 6, "of": 10, "seed": 3}
    assert card.dataset_hash == sample_pairs(pairs, 6, 3).content_hash()
