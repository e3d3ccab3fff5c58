"""The front door: `steerlab.resolve` on every kind of address, the one card-default rule, and store kits served."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tiny import tiny_model

from steerlab import Kit, KitEntry, Vector, resolve, steer
from steerlab.address import parse_address
from steerlab.card import Card
from steerlab.errors import SteerlabError
from steerlab.frontdoor import find
from steerlab.hub import open_store
from steerlab.hub.store import LocalStore, Publication
from steerlab.kit import KitCard
from steerlab.kitfile import file_sha256, load_kit, save_kit
from steerlab.serve.errors import ApiError
from steerlab.serve.protocol import SteeringItem
from steerlab.serve.registry import Registry

IDS = torch.tensor([[5, 6, 7, 8]])


@pytest.fixture(scope="module")
def model():
    return tiny_model("llama")


def make_vector(model, name: str, seed: int, scale: float = 1.0, layers: list[int] | None = None) -> Vector:
    gen = torch.Generator().manual_seed(seed)
    card = Card(
        base_model=model.name,
        model_fingerprint=model.fingerprint,
        n_layers=model.n_layers,
        name=name,
        recommended_scale=scale,
        recommended_layers=layers or [],
    )
    return Vector({la: torch.randn(model.hidden_size, generator=gen) for la in range(model.n_layers)}, card)


def logits(model, what=None, **kw) -> torch.Tensor:
    with torch.no_grad():
        if what is None:
            return model.hf_model(input_ids=IDS).logits
        with steer(model, what, **kw):
            return model.hf_model(input_ids=IDS).logits


@pytest.fixture
def files(model, tmp_path: Path) -> dict[str, Path]:
    """happy (card: scale 2.0 at layers 1-2), formal (no card defaults), and a two-entry kit file of both."""
    happy = make_vector(model, "happy", 1, scale=2.0, layers=[1, 2]).save(tmp_path / "happy.safetensors")
    formal = make_vector(model, "formal", 2).save(tmp_path / "formal.safetensors")
    kit = Kit(
        [KitEntry(Vector.load(happy), 0.5, [1]), KitEntry(Vector.load(formal), -0.25, None, "generated", "ablate")],
        KitCard(name="persona", description="test kit"),
    )
    return {"happy": happy, "formal": formal, "kit": save_kit(kit, tmp_path / "persona.json", [happy, formal])}


@pytest.fixture
def store(files, tmp_path: Path) -> LocalStore:
    """A local store holding both vectors and the kit (its entries name the vectors by sha256)."""
    opened = open_store(str(tmp_path / "store"))
    for name in ("happy", "formal"):
        opened.publish(files[name].read_bytes(), Publication(f"team/{name}@1.0.0"))
    opened.publish(files["kit"].read_bytes(), Publication("team/persona@1.0.0", kind="kit"))
    return opened


# ----- the grammar -----
def test_grammar_reads_each_part(files) -> None:
    happy = str(files["happy"])
    assert parse_address(f"{happy}:0.5@3-4,7") == parse_address(happy).__class__("vector-file", happy, 0.5, [3, 4, 7])
    assert parse_address(f"{happy}@2").layers == [2] and parse_address(f"{happy}@2").scale is None
    assert parse_address(f"{happy}:-1e-1").scale == -0.1
    ref = parse_address("team/happy@1.0.0:0.5@3-4")
    assert (ref.kind, ref.target, ref.scale, ref.layers) == ("store", "team/happy@1.0.0", 0.5, [3, 4])
    ref = parse_address("team/happy@3")  # no dots: layers, not a version
    assert (ref.target, ref.layers) == ("team/happy", [3])
    assert parse_address("team/happy@1.0.0-rc.1").target == "team/happy@1.0.0-rc.1"
    assert parse_address(str(files["kit"])).kind == "kit-file"
    assert parse_address(str(files["kit"].with_suffix(""))).kind == "kit-file"  # NAME finds NAME.json


def test_a_path_that_exists_wins_over_a_store_ref(files, tmp_path: Path, monkeypatch) -> None:
    folder = tmp_path / "team"
    folder.mkdir()
    files["kit"].rename(folder / "persona.json")
    monkeypatch.chdir(tmp_path)
    found = parse_address("team/persona")
    assert (found.kind, found.target) == ("kit-file", str(Path("team/persona.json")))
    (tmp_path / "odd:name.safetensors").write_bytes(files["happy"].read_bytes())
    assert parse_address("odd:name.safetensors").target == "odd:name.safetensors"  # its colon is not a :SCALE


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("", "empty address"),
        ("vectors/missing.safetensors", "no such file: vectors/missing.safetensors"),
        ("missing.safetensors:0.5@2", "no such file: missing.safetensors "),
        ("./missing", "no such file"),
        ("team/Happy", "nor a store ref"),
        ("happy", "cannot read address 'happy'"),
        ("happy.safetensors:lots", "cannot read ':lots'.*write :SCALE as a number"),
        ("happy.safetensors@8-x", "cannot read '@8-x'"),
        ("team/happy", "team/happy"),  # not in the default local store: the store's not-found names the ref
    ],
)
def test_bad_addresses_say_what_is_wrong(address: str, message: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("STEERLAB_HOME", str(tmp_path / "home"))
    with pytest.raises(SteerlabError, match=message):
        resolve(address)


def test_kits_take_no_scale_or_layers_and_other_files_are_refused(files, tmp_path: Path) -> None:
    with pytest.raises(SteerlabError, match="a kit takes no :SCALE or @LAYERS"):
        resolve(f"{files['kit']}:0.5")
    (tmp_path / "v.gguf").write_bytes(b"GGUF")
    with pytest.raises(SteerlabError, match="neither a vector"):
        resolve(str(tmp_path / "v.gguf"))
    (tmp_path / "broken.safetensors").write_bytes(b"not a vector")
    with pytest.raises(SteerlabError, match="not a readable safetensors vector"):
        resolve(str(tmp_path / "broken.safetensors"))


# ----- files -----
def test_a_vector_file_gets_its_card_defaults_unless_the_address_says(files, model) -> None:
    happy = str(files["happy"])
    assert [(e.scale, e.layers) for e in resolve(happy).entries] == [(2.0, [1, 2])]
    assert [(e.scale, e.layers) for e in resolve(f"{happy}:0.5@3").entries] == [(0.5, [3])]
    assert [(e.scale, e.layers) for e in resolve(str(files["formal"])).entries] == [(1.0, None)]
    found = find(happy)
    assert not found.is_kit and found.sources[0].sha256 == file_sha256(files["happy"])
    with pytest.raises(SteerlabError, match="only has layers"):
        resolve(f"{happy}@9")


def test_a_kit_file_resolves_as_it_loads(files, model) -> None:
    kit = resolve(str(files["kit"]), model=model)
    assert [(e.scale, e.layers, e.positions, e.mode) for e in kit.entries] == [
        (0.5, [1], "all", "add"),
        (-0.25, None, "generated", "ablate"),
    ]
    assert torch.equal(logits(model, kit), logits(model, load_kit(files["kit"])))
    assert find(str(files["kit"])).is_kit


def test_a_model_that_does_not_fit_is_a_clear_error(files) -> None:
    other = tiny_model("qwen2")
    with pytest.raises(SteerlabError, match=r"happy\.safetensors.*architectures differ"):
        resolve(str(files["happy"]), model=other)
    with pytest.raises(SteerlabError, match=r"entry 1 \(happy\).*fingerprint"):
        resolve(str(files["kit"]), model=other)


# ----- the store -----
def test_store_vectors_resolve_like_their_files(files, store, model) -> None:
    from_file = resolve(str(files["happy"]))
    for location in (store, str(store.root)):  # an open store, or where one is
        kit = resolve("team/happy@1.0.0", store=location, model=model)
        assert [(e.scale, e.layers) for e in kit.entries] == [(2.0, [1, 2])]
        assert torch.equal(logits(model, kit), logits(model, from_file))
    assert [(e.scale, e.layers) for e in resolve("team/happy:0.3@1", store=store).entries] == [(0.3, [1])]
    found = find("team/happy", store=store)
    assert found.sources[0].origin == "team/happy@1.0.0" and found.sources[0].sha256 == file_sha256(files["happy"])


def test_a_store_kit_finds_its_vectors_by_hash(files, store, model) -> None:
    found = find("team/persona@1.0.0", store=store, model=model)
    assert found.is_kit and found.kit.card.name == "persona"
    assert [s.sha256 for s in found.sources] == [file_sha256(files[n]) for n in ("happy", "formal")]
    assert [s.origin for s in found.sources] == ["team/happy@1.0.0", "team/formal@1.0.0"]
    assert torch.equal(logits(model, found.kit), logits(model, load_kit(files["kit"])))
    with pytest.raises(SteerlabError, match="a kit takes no"):
        resolve("team/persona:0.5", store=store)


def test_a_store_kit_whose_vector_was_not_pushed_says_so(files, tmp_path: Path) -> None:
    lonely = open_store(str(tmp_path / "lonely"))
    lonely.publish(files["happy"].read_bytes(), Publication("team/happy@1.0.0"))
    lonely.publish(files["kit"].read_bytes(), Publication("team/persona@1.0.0", kind="kit"))
    with pytest.raises(SteerlabError, match=r"entry 2 \(formal\): no vector with sha256 .* Push the kit's vectors"):
        resolve("team/persona", store=lonely)


def test_pulling_a_store_kit_writes_a_kit_file_that_loads(files, store, model, tmp_path: Path) -> None:
    from steerlab.hub.content import fetch_kit, write_kit

    info, data = store.get_bytes("team/persona")
    written = write_kit(fetch_kit(store, info, data), tmp_path / "pulled" / "persona.json")
    assert [p.name for p in written] == ["persona.json", "happy.safetensors", "formal.safetensors"]
    assert torch.equal(logits(model, load_kit(written[0], model)), logits(model, load_kit(files["kit"])))
    written[1].write_bytes(files["formal"].read_bytes())
    with pytest.raises(SteerlabError, match="exists and differs"):
        write_kit(fetch_kit(store, info, data), written[0])


# ----- the one card-default rule -----
def test_steer_takes_the_cards_scale_and_layers_for_a_bare_vector(files, model) -> None:
    happy = Vector.load(files["happy"])
    assert torch.equal(logits(model, happy), logits(model, happy, scale=2.0, layers=[1, 2]))
    assert not torch.equal(logits(model, happy, scale=1.0), logits(model, happy))  # an explicit 1.0 is 1.0
    formal = Vector.load(files["formal"])
    assert torch.equal(logits(model, formal), logits(model, formal, scale=1.0, layers=formal.layers))
    entry = KitEntry.from_card(happy)
    assert (entry.scale, entry.layers) == (2.0, [1, 2])
    assert (KitEntry.from_card(happy, 0.0, [3]).scale, KitEntry.from_card(happy, 0.0, [3]).layers) == (0.0, [3])


def test_derived_vectors_keep_no_calibration(files) -> None:
    happy = Vector.load(files["happy"])
    happy.card.metadata["calibration"] = {"task": "t", "scale": 2.0}
    picked = happy.select([2, 3])
    assert picked.card.recommended_layers == [2, 3]  # a selection is the caller's choice of layers
    assert picked.card.recommended_scale == 1.0 and "calibration" not in picked.card.metadata
    flipped = -happy
    assert flipped.card.recommended_layers == [1, 2] and flipped.card.recommended_scale == 1.0


def test_the_server_applies_the_same_rule(files, store, model, tmp_path: Path) -> None:
    registry = Registry(model, kits_dir=tmp_path, store=str(store.root))
    plain = registry.resolve([SteeringItem(vector="happy")])
    assert plain.kit is not None and [(e.scale, e.layers) for e in plain.kit.entries] == [(2.0, [1, 2])]
    named = registry.resolve("happy")
    assert named.kit is not None and named.entries == plain.entries
    axis = registry.resolve([SteeringItem(vector="persona:formal")])  # a kit axis keeps the kit's scale
    assert axis.kit is not None and axis.kit.entries[0].scale == -0.25
    explicit = registry.resolve([SteeringItem(vector="happy", scale=1.0, layers=[3])])
    assert explicit.kit is not None and (explicit.kit.entries[0].scale, explicit.kit.entries[0].layers) == (1.0, [3])


def test_the_server_resolves_store_kits(files, store, model, tmp_path: Path) -> None:
    registry = Registry(model, store=str(store.root), default="team/persona@1.0.0")  # checked at start-up
    whole = registry.resolve("team/persona@1.0.0")
    assert whole.kit is not None and [r["vector"] for r in whole.entries] == [
        "team/persona@1.0.0:happy",
        "team/persona@1.0.0:formal",
    ]
    assert [r["sha256"] for r in whole.entries] == [file_sha256(files[n]) for n in ("happy", "formal")]
    one = registry.resolve([SteeringItem(vector="team/persona@1.0.0:formal", scale=0.5)])
    assert one.kit is not None and one.kit.entries[0].mode == "ablate" and one.kit.entries[0].scale == 0.5
    with pytest.raises(ApiError, match="is a kit in the store, not a vector") as info:
        registry.resolve([SteeringItem(vector="team/persona")])
    assert info.value.code == "unknown_vector"
    with pytest.raises(ApiError, match="no entry team/nope") as info:
        registry.resolve("team/nope")
    assert (info.value.status, info.value.code) == (404, "unknown_kit")


def test_a_live_server_steers_with_a_store_kit(files, store, model, tmp_path: Path) -> None:
    import httpx

    from steerlab.generation import generate
    from steerlab.serve.server import BackgroundServer, build_service

    kit = resolve("team/persona@1.0.0", store=store)
    strong = Kit([KitEntry(e.vector, e.scale * 8, e.layers, e.positions, e.mode) for e in kit.entries], kit.card)
    expected = {
        "plain": generate(model, "hello", max_new_tokens=8, chat=False)[0],
        "kit": generate(model, "hello", steering=kit, max_new_tokens=8, chat=False)[0],
        "strong": generate(model, "hello", steering=strong, max_new_tokens=8, chat=False)[0],
    }
    service = build_service(model, store=str(store.root), audit_path=tmp_path / "audit.jsonl", model_id="tiny")
    with BackgroundServer(service) as server:

        def complete(steering) -> str:
            body = {"model": "tiny", "prompt": "hello", "max_tokens": 8, "temperature": 0, "steering": steering}
            response = httpx.post(f"{server.url}/v1/completions", json=body, timeout=120)
            assert response.status_code == 200, response.text
            return response.json()["choices"][0]["text"]

        assert complete("team/persona@1.0.0") == expected["kit"]
        items = [
            {"vector": f"team/persona@1.0.0:{axis}", "scale": s * 8} for axis, s in (("happy", 0.5), ("formal", -0.25))
        ]
        assert complete(items) == expected["strong"]
    assert expected["strong"] != expected["plain"]  # the comparison above would catch a server that ignored steering
    audit = service.audit.read()
    assert [e["sha256"] for e in audit[0]["vectors"]] == [file_sha256(files[n]) for n in ("happy", "formal")]


def test_cli_commands_take_store_addresses(files, store, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from steerlab.cli.app import app

    runner, root = CliRunner(), str(store.root)
    pulled = tmp_path / "pulled" / "persona.json"
    res = runner.invoke(app, ["hub", "pull", "team/persona", "--from", root, "--out", str(pulled)])
    assert res.exit_code == 0, res.output
    assert load_kit(pulled).card.name == "persona" and (pulled.parent / "formal.safetensors").is_file()
    shown = runner.invoke(app, ["kit", "show", "team/persona@1.0.0", "--store", root], env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    assert "team/happy@1.0.0" in shown.output and "ablate" in shown.output
    out = tmp_path / "mixed.json"
    args = ["kit", "new", "mixed", "--vector", "team/happy:0.3", "--vector", f"{files['formal']}@2", "--out", str(out)]
    res = runner.invoke(app, [*args, "--store", root])
    assert res.exit_code == 0, res.output
    document = json.loads(out.read_text())
    assert [(e["scale"], e["layers"]) for e in document["entries"]] == [(0.3, [1, 2]), (1.0, [2])]
    assert load_kit(out).entries[0].vector.card.name == "happy"  # the store vector was written beside the kit
    bad = runner.invoke(app, ["kit", "new", "x", "--vector", "team/nope", "--store", root])
    assert bad.exit_code != 0 and "no entry team/nope" in str(bad.exception)
