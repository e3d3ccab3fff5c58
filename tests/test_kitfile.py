"""Kit files: round trip, tamper evidence, lookup by hash, refusal of other-model vectors, CLI kit new/show."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tiny import tiny_model
from typer.testing import CliRunner

from steerlab import kitfile
from steerlab.cli.app import app
from steerlab.errors import SteerlabError
from steerlab.kit import Kit, KitCard, KitEntry
from steerlab.steering import steer
from steerlab.vector import Card, Vector


@pytest.fixture(scope="module")
def model():
    return tiny_model("llama")


def make_vector(model, name: str, seed: int, layers=(1, 2, 3)) -> Vector:
    gen = torch.Generator().manual_seed(seed)
    card = Card(
        base_model=model.name,
        model_fingerprint=model.fingerprint,
        n_layers=model.n_layers,
        name=name,
        recommended_layers=[1, 2],
    )
    return Vector({la: torch.randn(model.hidden_size, generator=gen) for la in layers}, card)


def two_entry_kit(model) -> Kit:
    return Kit(
        [
            KitEntry(make_vector(model, "happy", 1), scale=0.5, layers=[1, 2]),
            KitEntry(make_vector(model, "formal", 2), scale=-0.25, positions="generated", mode="add_keep_norm"),
        ],
        KitCard(name="persona", description="test kit", author="tests"),
    )


def test_round_trip_json_keeps_everything(model, tmp_path: Path) -> None:
    kit = two_entry_kit(model)
    path = kitfile.save_kit(kit, tmp_path / "persona.json", pairs={"happy": tmp_path / "held.jsonl"})
    document = json.loads(path.read_text())
    assert document["format"] == "steerlab.kit"
    assert [e["name"] for e in document["entries"]] == ["happy", "formal"]
    assert document["entries"][0]["pairs"] == "held.jsonl"
    for record in document["entries"]:
        assert (tmp_path / record["vector"]).is_file()
        assert record["sha256"] == kitfile.file_sha256(tmp_path / record["vector"])
    loaded, infos = kitfile.load_kit_with_info(path, model)
    assert loaded.card.name == "persona" and loaded.card.author == "tests"
    assert loaded.card.base_model == model.name
    assert [i.name for i in infos] == ["happy", "formal"]
    assert infos[0].pairs == tmp_path / "held.jsonl" and infos[1].pairs is None
    for a, b in zip(kit.entries, loaded.entries, strict=True):
        assert (a.scale, a.layers, a.positions, a.mode) == (b.scale, b.layers, b.positions, b.mode)
        for layer in a.vector.layers:
            assert torch.equal(a.vector.directions[layer], b.vector.directions[layer])


def test_toml_round_trip_and_name_without_extension(model, tmp_path: Path) -> None:
    kit = two_entry_kit(model)
    kitfile.save_kit(kit, tmp_path / "persona.toml")
    loaded = kitfile.load_kit(tmp_path / "persona")  # NAME resolves to NAME.toml
    assert [e.scale for e in loaded.entries] == [0.5, -0.25]
    assert loaded.entries[1].layers is None and loaded.entries[0].layers == [1, 2]


def test_saving_twice_reuses_the_vector_files(model, tmp_path: Path) -> None:
    kit = two_entry_kit(model)
    kitfile.save_kit(kit, tmp_path / "a.json")
    kitfile.save_kit(kit, tmp_path / "b.json")
    assert len(list(tmp_path.glob("*.safetensors"))) == 2


def test_changed_vector_is_refused_naming_the_entry(model, tmp_path: Path) -> None:
    path = kitfile.save_kit(two_entry_kit(model), tmp_path / "persona.json")
    record = json.loads(path.read_text())["entries"][1]
    tampered = make_vector(model, "formal", 99)
    tampered.save(tmp_path / record["vector"])
    with pytest.raises(SteerlabError, match=r"entry 2 \(formal\).*has changed"):
        kitfile.load_kit(path)


def test_missing_vector_is_refused_and_moved_vector_found_by_hash(model, tmp_path: Path) -> None:
    path = kitfile.save_kit(two_entry_kit(model), tmp_path / "persona.json")
    record = json.loads(path.read_text())["entries"][0]
    (tmp_path / record["vector"]).rename(tmp_path / "renamed.safetensors")
    loaded, infos = kitfile.load_kit_with_info(path)  # same folder, same hash: found
    assert infos[0].file.name == "renamed.safetensors"
    assert torch.equal(loaded.entries[0].vector.directions[1], two_entry_kit(model).entries[0].vector.directions[1])
    (tmp_path / "renamed.safetensors").unlink()
    with pytest.raises(SteerlabError, match=r"entry 1 \(happy\): vector is missing"):
        kitfile.load_kit(path)


def test_other_model_vector_is_refused(model, tmp_path: Path) -> None:
    path = kitfile.save_kit(two_entry_kit(model), tmp_path / "persona.json")
    other = tiny_model("qwen2")
    with pytest.raises(SteerlabError, match=r"entry 1 \(happy\).*fingerprint"):
        kitfile.load_kit(path, other)


def test_bad_files_get_clear_errors(model, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(SteerlabError, match="not valid JSON"):
        kitfile.load_kit(bad)
    bad.write_text(json.dumps({"format": "steerlab.kit", "entries": []}))
    with pytest.raises(SteerlabError, match="no entries"):
        kitfile.load_kit(bad)
    path = kitfile.save_kit(two_entry_kit(model), tmp_path / "persona.json")
    document = json.loads(path.read_text())
    document["entries"][0]["mode"] = "multiply"
    path.write_text(json.dumps(document))
    with pytest.raises(SteerlabError, match=r"entry 1 \(happy\).*unknown steering mode"):
        kitfile.load_kit(path)
    with pytest.raises(SteerlabError, match="does not exist"):
        kitfile.load_kit(tmp_path / "nope.json")
    with pytest.raises(SteerlabError, match=r"NAME\.json"):
        kitfile.save_kit(two_entry_kit(model), tmp_path / "kit.yaml")


def test_loaded_kit_steers_like_the_original(model, tmp_path: Path) -> None:
    kit = two_entry_kit(model)
    loaded = kitfile.load_kit(kitfile.save_kit(kit, tmp_path / "k.json"), model)
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad(), steer(model, kit):
        want = model.hf_model(input_ids=ids).logits
    with torch.no_grad(), steer(model, loaded):
        got = model.hf_model(input_ids=ids).logits
    with torch.no_grad():
        plain = model.hf_model(input_ids=ids).logits
    assert torch.allclose(want, got)
    assert not torch.allclose(want, plain)


def test_cli_kit_new_and_show(model, tmp_path: Path) -> None:
    happy, formal = make_vector(model, "happy", 1), make_vector(model, "formal", 2)
    happy.save(tmp_path / "vectors" / "happy.safetensors")
    formal.save(tmp_path / "vectors" / "formal.safetensors")
    out = tmp_path / "kits" / "persona.json"
    runner = CliRunner()
    result = runner.invoke(
        app,
        [
            "kit",
            "new",
            "persona",
            "--vector",
            f"{tmp_path}/vectors/happy.safetensors:0.4@1-2",
            "--vector",
            f"{tmp_path}/vectors/formal.safetensors:-0.3",
            "--out",
            str(out),
            "--pairs",
            f"happy={tmp_path}/held.jsonl",
        ],
    )
    assert result.exit_code == 0, result.output
    document = json.loads(out.read_text())
    assert document["entries"][0]["vector"] == "../vectors/happy.safetensors"
    assert document["entries"][0]["layers"] == [1, 2]
    assert document["entries"][1]["layers"] == [1, 2]  # the card's recommended layers
    assert document["entries"][1]["scale"] == -0.3
    shown = runner.invoke(app, ["kit", "show", str(out)], env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    assert "happy" in shown.output and "formal" in shown.output and "held.jsonl" in shown.output
