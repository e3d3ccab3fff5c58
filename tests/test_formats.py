"""Formats: llama.cpp GGUF export (strict layout) and import, repeng's GGUF, steering-vectors state, .pt/.npy arrays."""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from tiny import tiny_model
from typer.testing import CliRunner

from steerlab import kitfile
from steerlab.cli.app import app
from steerlab.errors import SteerlabError
from steerlab.formats import (
    export_gguf,
    export_vector,
    from_steering_vector,
    import_gguf,
    import_vector,
    to_steering_vector_state,
    vector_from_arrays,
)
from steerlab.formats.llamacpp import export_entries
from steerlab.kit import Kit, KitEntry
from steerlab.steering import steer
from steerlab.vector import Card, Vector


@pytest.fixture(scope="module")
def model():
    return tiny_model("llama")


def make_vector(model, layers=(0, 1, 2, 3), seed: int = 0, name: str = "happy") -> Vector:
    gen = torch.Generator().manual_seed(seed)
    card = Card(
        base_model=model.name,
        model_fingerprint=model.fingerprint,
        n_layers=model.n_layers,
        method="mean_diff",
        name=name,
        dataset_hash="abc123",
        recommended_scale=0.5,
        metadata={"model_type": "llama"},
    )
    return Vector({la: torch.randn(model.hidden_size, generator=gen) for la in layers}, card)


def read_gguf(path: Path) -> tuple[dict[str, object], dict[str, np.ndarray]]:
    reader = gguf.GGUFReader(str(path))
    fields = {name: f.contents() for name, f in reader.fields.items()}
    tensors = {}
    for t in reader.tensors:
        assert t.tensor_type == gguf.GGMLQuantizationType.F32, t.name
        assert len(t.shape) == 1, t.name
        tensors[t.name] = np.array(t.data)
    return fields, tensors


def test_export_writes_the_strict_llamacpp_layout(model, tmp_path: Path) -> None:
    vec = make_vector(model)
    with pytest.warns(UserWarning, match="block 0"):
        path = export_gguf(vec, tmp_path / "happy.gguf")
    fields, tensors = read_gguf(path)
    assert fields["general.architecture"] == "controlvector"
    assert fields["controlvector.model_hint"] == "llama"
    assert fields["controlvector.layer_count"] == 3
    assert sorted(tensors) == ["direction.1", "direction.2", "direction.3"]  # direction.0 is never written
    for layer in (1, 2, 3):
        np.testing.assert_array_equal(tensors[f"direction.{layer}"], vec.directions[layer].numpy())
    # provenance lives under controlvector.*, where llama.cpp and repeng ignore it
    assert fields["controlvector.method"] == "mean_diff"
    assert fields["controlvector.layer_convention"] == "block_output"
    assert fields["controlvector.base_model"] == model.name
    assert fields["controlvector.dataset_hash"] == "abc123"
    assert fields["controlvector.normalized"] is False
    assert fields["controlvector.recommended_scale"] == pytest.approx(0.5)
    assert not [k for k in fields if not k.startswith(("GGUF.", "general.", "controlvector."))]


def test_normalized_flag_and_layer_selection(model, tmp_path: Path) -> None:
    vec = make_vector(model, layers=(1, 2, 3)).normalized()
    path = export_gguf(vec, tmp_path / "unit.gguf", model_hint="qwen2", layers=[2, 3])
    fields, tensors = read_gguf(path)
    assert fields["controlvector.normalized"] is True and fields["controlvector.model_hint"] == "qwen2"
    assert sorted(tensors) == ["direction.2", "direction.3"]


def test_gguf_round_trip_keeps_directions_and_card(model, tmp_path: Path) -> None:
    vec = make_vector(model, layers=(1, 2, 3))
    back = import_gguf(export_gguf(vec, tmp_path / "v.gguf"))
    assert back.layers == [1, 2, 3]
    for layer in back.layers:
        assert torch.equal(back.directions[layer], vec.directions[layer])
    assert back.card.model_fingerprint == model.fingerprint and back.card.name == "happy"
    back.check_compatible(model)


def write_like_repeng(path: Path, directions: dict[int, np.ndarray], model_type: str = "llama") -> None:
    """What repeng's ControlVector.export_gguf writes (repeng/extract.py): no provenance, its own layer keys."""
    writer = gguf.GGUFWriter(str(path), "controlvector")
    writer.add_string("controlvector.model_hint", model_type)
    writer.add_uint32("controlvector.layer_count", len(directions))
    for layer, row in directions.items():
        writer.add_tensor(f"direction.{layer}", row)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_repeng_gguf_imports_with_block_numbering(model, tmp_path: Path) -> None:
    """repeng's directions[L] is read from hidden_states[L + 1] and added to model.layers[L]'s output, so direction.L
    must land on block L: steering with it moves hidden_states[L + 1] by exactly the vector and not hidden_states[L]."""
    rng = np.random.default_rng(0)
    rows = {2: rng.standard_normal(model.hidden_size).astype(np.float32)}
    write_like_repeng(tmp_path / "trippy.gguf", rows)
    vec = import_vector(tmp_path / "trippy.gguf", "repeng")
    assert vec.layers == [2] and vec.card.name == "trippy"
    assert vec.card.metadata["model_type"] == "llama" and vec.card.metadata["import_format"] == "repeng"
    ids = torch.tensor([[3, 4, 5]])
    with torch.no_grad():
        plain = model.hf_model(input_ids=ids, output_hidden_states=True).hidden_states
        with steer(model, vec, layers=[2]):
            steered = model.hf_model(input_ids=ids, output_hidden_states=True).hidden_states
    assert torch.allclose(steered[2], plain[2])
    assert torch.allclose(steered[3] - plain[3], torch.from_numpy(rows[2]).expand(1, 3, -1), atol=1e-5)


def test_llamacpp_import_rejects_other_files(tmp_path: Path) -> None:
    writer = gguf.GGUFWriter(str(tmp_path / "model.gguf"), "llama")
    writer.add_tensor("token_embd.weight", np.ones((2, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(SteerlabError, match="not a control vector"):
        import_gguf(tmp_path / "model.gguf")
    (tmp_path / "junk.gguf").write_bytes(b"not a gguf at all")
    with pytest.raises(SteerlabError, match="not a readable GGUF"):
        import_gguf(tmp_path / "junk.gguf")


def test_steering_vectors_state_round_trip_and_layer_types(model, tmp_path: Path) -> None:
    vec = make_vector(model, layers=(1, 3))
    state = to_steering_vector_state(vec)
    assert state["layer_type"] == "decoder_block" and sorted(state["layer_activations"]) == [1, 3]
    back = from_steering_vector(state, name="sv")
    assert torch.equal(back.directions[3], vec.directions[3]) and back.card.name == "sv"
    # negative layers (steering-vectors allows them) need the model's depth
    with pytest.raises(SteerlabError, match="n_layers"):
        from_steering_vector({"layer_activations": {-1: torch.ones(4)}})
    assert from_steering_vector({"layer_activations": {-1: torch.ones(4)}}, n_layers=4).layers == [3]
    with pytest.raises(SteerlabError, match="layer_type 'mlp'"):
        from_steering_vector({"layer_activations": {1: torch.ones(4)}, "layer_type": "mlp"})
    path = export_vector(vec, tmp_path / "sv.pt", "steering-vectors")
    loaded = import_vector(path, "steering-vectors")
    assert loaded.layers == [1, 3] and torch.equal(loaded.directions[1], vec.directions[1])


def test_steering_vectors_object_is_read_by_its_attributes(model) -> None:
    class SteeringVector:  # the attributes steering-vectors' dataclass has
        def __init__(self, layer_activations, layer_type="decoder_block"):
            self.layer_activations = layer_activations
            self.layer_type = layer_type

    vec = from_steering_vector(SteeringVector({2: torch.arange(32.0)}))
    assert vec.layers == [2] and vec.hidden_size == 32


def test_pickled_object_is_refused_with_advice(tmp_path: Path) -> None:
    torch.save({"layer_activations": {1: torch.ones(4)}, "extra": Path("x")}, tmp_path / "obj.pt")
    with pytest.raises(SteerlabError, match="layer_activations"):
        import_vector(tmp_path / "obj.pt", "steering-vectors")


def test_arrays_in_both_conventions(model, tmp_path: Path) -> None:
    matrix = np.random.default_rng(1).standard_normal((5, 8)).astype(np.float32)
    np.save(tmp_path / "hs.npy", matrix)
    blocks = import_vector(tmp_path / "hs.npy")
    assert blocks.layers == [0, 1, 2, 3, 4]
    np.testing.assert_array_equal(blocks.directions[2].numpy(), matrix[2])
    with pytest.warns(UserWarning, match="embeddings"):
        shifted = import_vector(tmp_path / "hs.npy", convention="hidden_states")
    assert shifted.layers == [0, 1, 2, 3]  # hidden_states[N] is the output of block N - 1
    np.testing.assert_array_equal(shifted.directions[1].numpy(), matrix[2])
    torch.save({"model.layers.7": torch.ones(1, 8), 9: torch.zeros(8)}, tmp_path / "d.pt")
    assert import_vector(tmp_path / "d.pt").layers == [7, 9]
    np.save(tmp_path / "one.npy", matrix[0])
    with pytest.raises(SteerlabError, match="which block"):
        import_vector(tmp_path / "one.npy")
    assert import_vector(tmp_path / "one.npy", layer=5).layers == [5]
    np.savez(tmp_path / "z.npz", **{"layer.3": matrix[3]})
    assert import_vector(tmp_path / "z.npz").layers == [3]
    with pytest.raises(SteerlabError, match="floating point"):
        vector_from_arrays({1: np.arange(8)})
    with pytest.raises(SteerlabError, match="extension"):
        import_vector(tmp_path / "thing.bin2")


def test_arrays_export_round_trip(model, tmp_path: Path) -> None:
    vec = make_vector(model, layers=(1, 3))
    npy = import_vector(export_vector(vec, tmp_path / "v.npy", "npy"))
    assert npy.layers == [0, 1, 2, 3] and float(npy.directions[0].abs().sum()) == 0.0
    assert torch.equal(npy.directions[3], vec.directions[3])
    pt = import_vector(export_vector(vec, tmp_path / "v.pt", "pt"))
    assert pt.layers == [1, 3]


def test_kit_export_one_gguf_per_entry_and_flags(model, tmp_path: Path) -> None:
    a, b = make_vector(model, (1, 2, 3), 1, "happy"), make_vector(model, (1, 2, 3), 2, "formal")
    kit = Kit([KitEntry(a, 0.4, [1, 2]), KitEntry(b, -0.3, [2, 3])])
    result = export_entries(list(zip(kitfile.entry_names(kit), kit.entries, strict=True)), tmp_path / "out")
    assert result.layer_range == (1, 3)
    assert result.flags() == [
        "--control-vector-scaled",
        f"{tmp_path / 'out' / 'happy.gguf'}:0.4",
        "--control-vector-scaled",
        f"{tmp_path / 'out' / 'formal.gguf'}:-0.3",
        "--control-vector-layer-range",
        "1",
        "3",
    ]
    _, happy = read_gguf(tmp_path / "out" / "happy.gguf")
    assert sorted(happy) == ["direction.1", "direction.2"]  # only the entry's layers: the others stay zero
    with pytest.raises(SteerlabError, match="can only add"):
        export_entries([("x", KitEntry(a, 1.0, mode="ablate"))], tmp_path / "bad")
    with pytest.raises(SteerlabError, match="every token"):
        export_entries([("x", KitEntry(a, 1.0, positions="generated"))], tmp_path / "bad")


def test_cli_export_and_import(model, tmp_path: Path) -> None:
    runner = CliRunner()
    vec = make_vector(model, (0, 1, 2, 3))
    vec.card.recommended_layers = [1, 2]
    vec.save(tmp_path / "happy.safetensors")
    result = runner.invoke(
        app, ["export", str(tmp_path / "happy.safetensors"), "--format", "llama.cpp", "--out", str(tmp_path / "h.gguf")]
    )
    assert result.exit_code == 0, result.output
    assert f"--control-vector-scaled {tmp_path / 'h.gguf'}:0.5 --control-vector-layer-range 1 2" in result.output
    assert sorted(read_gguf(tmp_path / "h.gguf")[1]) == ["direction.1", "direction.2"]
    back = runner.invoke(app, ["import", str(tmp_path / "h.gguf"), "--out", str(tmp_path / "back.safetensors")])
    assert back.exit_code == 0, back.output
    assert Vector.load(tmp_path / "back.safetensors").layers == [1, 2]
    kit = Kit([KitEntry(vec, 0.3, [1, 2]), KitEntry(make_vector(model, (1, 2, 3), 5, "calm"), 0.2, [3])])
    kitfile.save_kit(kit, tmp_path / "kit.json")
    out = runner.invoke(
        app, ["export", str(tmp_path / "kit.json"), "--format", "llama.cpp", "--out", str(tmp_path / "kitgguf")]
    )
    assert out.exit_code == 0, out.output
    assert sorted(p.name for p in (tmp_path / "kitgguf").iterdir()) == ["calm.gguf", "happy.gguf"]
    assert "--control-vector-layer-range 1 3" in out.output
    np.save(tmp_path / "m.npy", np.ones((4, 32), dtype=np.float32))
    arr = runner.invoke(
        app,
        ["import", str(tmp_path / "m.npy"), "--convention", "hidden_states", "--out", str(tmp_path / "m.safetensors")],
    )
    assert arr.exit_code == 0, arr.output
    assert Vector.load(tmp_path / "m.safetensors").layers == [0, 1, 2]
    json.dumps(Vector.load(tmp_path / "m.safetensors").card.metadata)  # the card stays JSON-serialisable


def test_export_warns_when_the_scale_was_calibrated_on_generated_tokens_only(model, tmp_path: Path) -> None:
    vec = make_vector(model)
    vec.card.recommended_positions = "generated"
    with pytest.warns(UserWarning, match="calibrated on generated tokens only"):
        path = export_gguf(vec, tmp_path / "gen.gguf", layers=[1, 2])
    assert json.loads(read_gguf(path)[0]["controlvector.steerlab_card"])["recommended_positions"] == "generated"
