"""Upload validation and reference parsing: every bad input is refused with a message that names the problem."""

from __future__ import annotations

import json
import struct

import pytest
import torch
from safetensors.torch import save
from test_hub_support import make_vector

from steerlab.errors import SteerlabError
from steerlab.hub.refs import Version, parse_ref
from steerlab.hub.validate import check_card, check_upload
from steerlab.vector import CARD_KEY


def _file(tensors: dict[str, torch.Tensor], card: dict | str | None) -> bytes:
    meta = {CARD_KEY: card if isinstance(card, str) else json.dumps(card)} if card is not None else {}
    return save(tensors, metadata=meta)


def _card(**changes: object) -> dict:
    card = json.loads(make_vector(0, hidden=8, n_layers=4).card.to_json())
    card.update(changes)
    return card


GOOD = {f"layer.{i}": torch.ones(8) for i in range(4)}


def test_a_good_vector_passes() -> None:
    checked = check_upload(make_vector(0).to_bytes(), "vector")
    assert checked.hidden_size == 576 and checked.max_layer == 29 and checked.metrics["best_layer"] == 29


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "shorter than the 8-byte"),
        (b"garbage!garbage", "claims"),
        (struct.pack("<Q", 4) + b"nope", "not valid JSON"),
        (struct.pack("<Q", 2) + b"[]", "not a JSON object"),
        (_file(GOOD, None), "has no card"),
        (_file({**GOOD, "layer.1": torch.tensor([float("nan")] * 8)}, _card()), "NaN or infinite"),
        (_file({**GOOD, "layer.2": torch.tensor([float("inf")] * 8)}, _card()), "NaN or infinite"),
        (_file({**GOOD, "layer.0": torch.ones(9)}, _card()), "shape \\[9\\].*hidden size 8"),
        (_file({**GOOD, "layer.0": torch.ones(2, 4)}, _card()), "shape"),
        (_file({**GOOD, "layer.0": torch.ones(8, dtype=torch.int32)}, _card()), "float dtype"),
        (_file({**GOOD, "weights": torch.ones(8)}, _card()), "unexpected tensor 'weights'"),
        (_file({**GOOD, "layer.7": torch.ones(8)}, _card()), "beyond the card's 4 layers"),
        (_file({}, _card()), "no tensors"),
        (_file(GOOD, _card(hidden_size="8")), "schema.*hidden_size"),
        (_file(GOOD, _card(norms={"0": "big"})), "schema"),
        (_file(GOOD, _card(surprise=1)), "unknown fields \\['surprise'\\]"),
        (_file(GOOD, _card(layer_convention="block_input")), "layer_convention"),
        (_file(GOOD, _card(recommended_layers=[9])), "recommended_layers \\[9\\]"),
        (_file(GOOD, _card(format_version=99)), "newer"),
        (_file(GOOD, json.dumps(_card(recommended_scale=float("nan")))), "finite"),
        (_file(GOOD, "{not json"), "card is not valid JSON"),
        # found by bench/bench_reliability.py's fuzzer: each of these was a 500 from the server
        (_file({**GOOD, "layer.\u00b2": torch.ones(8)}, _card()), "unexpected tensor 'layer.\u00b2'"),
        (_file(GOOD, _card(diagnostics={"x": {"accuracy": 0.9}})), "diagnostics has keys \\['x'\\]"),
        (_file(GOOD, _card(norms={"\u0663": 1.0})), "norms has keys"),
        (struct.pack("<Q", 40_000) + b"[" * 20_000 + b"]" * 20_000, "header is nested too deeply"),
        (_file(GOOD, '{"metadata": ' + "[" * 20_000 + "]" * 20_000 + "}"), "card is nested too deeply"),
        (struct.pack("<Q", 4_200_000) + b" " * 4_200_000, "over the limit of 4194304: the card is too large"),
    ],
)
def test_bad_vectors_are_refused(data: bytes, message: str) -> None:
    with pytest.raises(SteerlabError, match=message):
        check_upload(data, "vector")


def test_a_deeply_nested_kit_is_refused() -> None:
    with pytest.raises(SteerlabError, match="kit file is nested too deeply"):
        check_upload(b'{"entries": ' + b"[" * 20_000 + b"]" * 20_000 + b"}", "kit")


def test_size_limit_and_kind() -> None:
    data = make_vector(0).to_bytes()
    with pytest.raises(SteerlabError, match="over the limit"):
        check_upload(data, "vector", max_bytes=len(data) - 1)
    with pytest.raises(SteerlabError, match="unknown kind"):
        check_upload(data, "model")


def test_card_must_be_an_object() -> None:
    with pytest.raises(SteerlabError, match="JSON object"):
        check_card([1, 2])


@pytest.mark.parametrize(
    "ref",
    [
        "../etc/passwd",
        "ns/../x",
        "ns/..",
        "ns/a/b",
        "ns\\x/y",
        "/abs/path",
        "ns/.hidden",
        "ns/Upper",
        "ns/with space",
        "ns/nul\x00byte",
        "ns/" + "x" * 65,
        "ns/name@1.0",
        "ns/name@v1.0.0",
        "ns/name@01.0.0",
        "ns/name@1.0.0@2",
        "noslash",
        "ns/émoji",
    ],
)
def test_unsafe_references_are_refused(ref: str) -> None:
    with pytest.raises(SteerlabError, match="invalid"):
        parse_ref(ref)


def test_references_and_versions() -> None:
    assert str(parse_ref("starter/happy@1.2.3")) == "starter/happy@1.2.3"
    assert parse_ref("starter/happy").version is None
    order = ["0.9.9", "1.0.0-alpha", "1.0.0-rc.1", "1.0.0", "1.0.1", "1.10.0"]
    assert sorted(order, key=lambda v: Version.parse(v).sort_key()) == order
    assert str(Version.parse("1.2.3").next_patch()) == "1.2.4"


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"format": "other", "entries": [{"vector": "v.safetensors"}]}, "not a steerlab kit"),
        ({"version": 2, "entries": [{"vector": "v.safetensors"}]}, "version 2 kit"),
        ({"entries": []}, "non-empty 'entries'"),
        ({"entries": [{"vector": "v.safetensors", "mode": "explode"}]}, r"entry 1: unknown steering mode"),
        ({"entries": [{"vector": "v.safetensors", "positions": "middle"}]}, "unknown positions"),
        ({"entries": [{"vector": "v.safetensors", "scale": "big"}]}, "'scale' must be a finite number"),
        ({"entries": [{"vector": "v.safetensors", "layers": [-1]}]}, "'layers' must be a list"),
        ({"entries": [{"vector": "v.safetensors", "sha256": "abc"}]}, "'sha256' must be 64"),
        ({"entries": [{"name": "x", "scale": 1.0}]}, r"entry 1 \(x\) names no vector"),
    ],
)
def test_kit_files_and_store_uploads_share_one_schema(tmp_path, document: dict, message: str) -> None:
    from steerlab.kitfile import load_kit

    with pytest.raises(SteerlabError, match=message):
        check_upload(json.dumps(document).encode(), "kit")
    (tmp_path / "kit.json").write_text(json.dumps(document))
    with pytest.raises(SteerlabError, match=message):
        load_kit(tmp_path / "kit.json")


def test_only_store_kits_must_keep_their_paths_inside_their_folder(tmp_path) -> None:
    from steerlab.kitschema import check_document

    document = {"entries": [{"vector": "../elsewhere/v.safetensors", "sha256": "a" * 64}]}
    check_document(document)  # a kit file may point beside its folder (kit new writes such paths)
    with pytest.raises(SteerlabError, match="relative path inside"):
        check_upload(json.dumps(document).encode(), "kit")
