"""Conditional kits in the store: conditions are pushed, signed and found by sha256 like vectors, and a pulled or
resolved store kit gates rows exactly as the local kit file does."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tiny import H, L, tiny_model
from typer.testing import CliRunner

from steerlab import Condition, Kit, KitEntry, SteerlabError, Vector, generate, resolve
from steerlab.card import Card
from steerlab.cli.app import app
from steerlab.hub import open_store
from steerlab.hub.publish import kind_of
from steerlab.hub.store import Publication
from steerlab.hub.validate import check_upload
from steerlab.kitfile import file_sha256, load_kit, read_document, save_kit

PROMPTS = ["hello there", "ab", "the quick brown fox jumps", "x y z", "mnop", "steer me"]


@pytest.fixture(scope="module")
def model():
    return tiny_model("llama")


def _vector(model, seed: int, name: str) -> Vector:
    gen = torch.Generator().manual_seed(seed)
    card = Card(base_model=model.name, model_fingerprint=model.fingerprint, n_layers=L, name=name)
    return Vector({la: torch.randn(H, generator=gen) for la in range(L)}, card)


def _scores(model, probe: Condition) -> list[float]:
    details: list[dict] = []
    kit = Kit([KitEntry(_vector(model, 9, "probe"), 1.0)]).when(probe)
    generate(model, PROMPTS, steering=kit, max_new_tokens=1, chat=False, details=details)
    return [d["conditions"][0]["score"] for d in details]


def _split(model, layer: int, seed: int, name: str) -> Condition:
    """A condition whose threshold falls in the middle of PROMPTS' scores: half the rows hold."""
    gen = torch.Generator().manual_seed(seed)
    direction = torch.randn(H, generator=gen)
    card = Card(base_model=model.name, model_fingerprint=model.fingerprint, n_layers=L, name=name)
    probe = Condition(direction / direction.norm(), layer, 0.0, card=card)
    ordered = sorted(_scores(model, probe))
    return Condition(probe.direction, layer, (ordered[2] + ordered[3]) / 2, card=card)


@pytest.fixture(scope="module")
def local(model, tmp_path_factory) -> Path:
    """A kit file with a kit-level condition, an entry with its own condition and an unconditional second entry."""
    folder = tmp_path_factory.mktemp("kit")
    topic, other = _split(model, 1, 5, "topic"), _split(model, 2, 6, "other")
    happy, formal = _vector(model, 1, "happy"), _vector(model, 2, "formal")
    kit = Kit([KitEntry(happy, 2.0), KitEntry(formal, 1.5, [1, 2, 3], when=other)]).when(topic)
    kit.card.name = "gated"
    return save_kit(kit, folder / "gated.json")


def _push(folder: Path, store: Path, key: Path, *names: str) -> None:
    for name in names:
        ref = f"team/{name.split('.')[0]}@1.0.0"
        res = CliRunner().invoke(app, ["hub", "push", str(folder / name), "--to", str(store), "--name", ref,
                                       "--key", str(key)])  # fmt: skip
        assert res.exit_code == 0, res.output


@pytest.fixture(scope="module")
def store(local, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("store") / "store"
    key = root.parent / "publisher.pem"
    folder = local.parent
    _push(folder, root, key, "happy.safetensors", "formal.safetensors")
    _push(folder, root, key, "topic.condition.safetensors", "other.condition.safetensors", "gated.json")
    return root


def test_conditions_are_pushed_as_their_own_kind_signed(local, store) -> None:
    folder = local.parent
    assert kind_of(folder / "topic.condition.safetensors") == "condition"
    assert kind_of(folder / "happy.safetensors") == "vector" and kind_of(local) == "kit"
    opened = open_store(str(store))
    try:
        info, data = opened.get_bytes("team/topic@1.0.0", require_signed=True)
        assert info.kind == "condition" and info.signed and info.hidden_size == H and info.max_layer == 1
        assert info.sha256 == file_sha256(folder / "topic.condition.safetensors")
        assert Condition.from_bytes(data).key == Condition.load(folder / "topic.condition.safetensors").key
        assert [e.ref for e in opened.search(kind="condition")] == ["team/other@1.0.0", "team/topic@1.0.0"]
        with pytest.raises(SteerlabError, match="is a condition in the store, not a vector or a kit"):
            resolve("team/topic@1.0.0", store=opened)
    finally:
        opened.close()


def test_a_resolved_store_kit_gates_rows_exactly_as_the_kit_file(model, local, store) -> None:
    from_file = load_kit(local, model)
    opened = open_store(str(store))
    try:
        kit = resolve("team/gated@1.0.0", store=opened, model=model)
    finally:
        opened.close()
    assert from_file.condition is not None and kit.condition is not None
    assert kit.condition.key == from_file.condition.key
    assert [e.when.key if e.when else None for e in kit.entries] == [
        e.when.key if e.when else None for e in from_file.entries
    ]
    details: list[dict] = []
    steered = generate(model, PROMPTS, steering=kit, max_new_tokens=6, chat=False, details=details)
    assert steered == generate(model, PROMPTS, steering=from_file, max_new_tokens=6, chat=False)
    plain = generate(model, PROMPTS, max_new_tokens=6, chat=False)
    holds = [all(c["holds"] for c in d["conditions"] if c["name"] == "topic") for d in details]
    assert sum(holds) == 3
    for row, held in enumerate(holds):
        assert (steered[row] == plain[row]) != held, f"row {row}"
    # bit-identical, not only the same text: the failing rows' logits equal unsteered's
    failing = [p for p, held in zip(PROMPTS, holds, strict=True) if not held]
    with torch.inference_mode():
        for prompt in failing:
            ids = model.tokenizer(prompt, return_tensors="pt")["input_ids"]
            from steerlab import steer

            unsteered = model.hf_model(input_ids=ids).logits
            with steer(model, kit):
                assert torch.equal(model.hf_model(input_ids=ids).logits, unsteered)


def test_a_pulled_store_kit_writes_its_conditions_and_loads(model, local, store, tmp_path: Path) -> None:
    out = tmp_path / "pulled" / "gated.json"
    res = CliRunner().invoke(app, ["hub", "pull", "team/gated@1.0.0", "--from", str(store), "--out", str(out),
                                   "--require-signed"])  # fmt: skip
    assert res.exit_code == 0, res.output
    for name in ("topic.condition.safetensors", "other.condition.safetensors"):
        assert (out.parent / name).read_bytes() == (local.parent / name).read_bytes()
    pulled, original = load_kit(out, model), load_kit(local, model)
    assert pulled.condition is not None and original.condition is not None
    assert pulled.condition.key == original.condition.key
    assert generate(model, PROMPTS, steering=pulled, max_new_tokens=4, chat=False) == generate(
        model, PROMPTS, steering=original, max_new_tokens=4, chat=False
    )


def test_a_store_kit_whose_condition_was_not_pushed_says_so(local, tmp_path: Path) -> None:
    lonely = open_store(str(tmp_path / "lonely"))
    try:
        for name in ("happy", "formal"):
            lonely.publish((local.parent / f"{name}.safetensors").read_bytes(), Publication(f"team/{name}@1.0.0"))
        lonely.publish(local.read_bytes(), Publication("team/gated@1.0.0", kind="kit"))
        with pytest.raises(SteerlabError, match=r"store kit team/gated@1.0.0: no condition with sha256 .* Push the"):
            resolve("team/gated@1.0.0", store=lonely)
    finally:
        lonely.close()


def test_store_kits_must_record_their_conditions_hash(local) -> None:
    import json

    document = read_document(local)
    del document["when"]["sha256"]
    with pytest.raises(SteerlabError, match="'when' records no sha256; a store kit finds its conditions by hash"):
        check_upload(json.dumps(document).encode(), "kit")


def test_condition_uploads_are_checked(local) -> None:
    good = Condition.load(local.parent / "topic.condition.safetensors")
    assert check_upload(good.to_bytes(), "condition").max_layer == 1
    bad_layer = Condition(good.direction, 1, good.threshold, card=Card(n_layers=1))
    nan = Condition(good.direction, 1, 0.0)
    nan.direction[0] = float("nan")
    cases = [
        (bad_layer.to_bytes(), "metadata.condition.layer must be a block index below card.n_layers"),
        (nan.to_bytes(), "contains NaN"),
        (_vector_bytes(), "not 'condition': it is not a condition"),
    ]
    for data, message in cases:
        with pytest.raises(SteerlabError, match=message):
            check_upload(data, "condition")
    with pytest.raises(SteerlabError, match=r"unexpected tensor 'condition\.direction'"):
        check_upload(good.to_bytes(), "vector")  # a condition is no vector, whatever the kind says


def _vector_bytes() -> bytes:
    return Vector({0: torch.ones(H)}).to_bytes()


def test_the_server_steers_with_a_conditional_store_kit(model, local, store, tmp_path: Path) -> None:
    import httpx

    from steerlab.serve.server import BackgroundServer, build_service

    from_file = load_kit(local, model)
    expected = generate(model, PROMPTS, steering=from_file, max_new_tokens=6, chat=False)
    plain = generate(model, PROMPTS, max_new_tokens=6, chat=False)
    service = build_service(model, store=str(store), audit_path=tmp_path / "audit.jsonl", model_id="tiny")
    with BackgroundServer(service) as server:
        for prompt, want in zip(PROMPTS, expected, strict=True):
            body = {"model": "tiny", "prompt": prompt, "max_tokens": 6, "temperature": 0,
                    "steering": "team/gated@1.0.0"}  # fmt: skip
            response = httpx.post(f"{server.url}/v1/completions", json=body, timeout=120)
            assert response.status_code == 200, response.text
            assert response.json()["choices"][0]["text"] == want
    assert expected != plain
    audit = service.audit.read()
    decided = [record["conditions"][0] for record in audit]
    assert len(decided) == len(PROMPTS)
    topic_holds = [next(c["holds"] for c in row if c["name"] == "topic") for row in decided]
    assert sum(topic_holds) == 3


def test_conditions_travel_over_http(model, local, tmp_path: Path) -> None:
    """Pushed to `steerlab hub serve` and resolved through its HTTP client: the same gating as the kit file."""
    from test_hub_support import ThreadServer

    from steerlab.hub.client import RemoteStore
    from steerlab.hub.store import LocalStore

    backing = LocalStore(tmp_path / "served")
    try:
        token = backing.create_token("team")
        with ThreadServer(backing) as server:
            for name in ("happy.safetensors", "formal.safetensors", "topic.condition.safetensors",
                         "other.condition.safetensors", "gated.json"):  # fmt: skip
                ref = f"team/{name.split('.')[0]}@1.0.0"
                res = CliRunner().invoke(app, ["hub", "push", str(local.parent / name), "--to", server.url, "--name",
                                               ref, "--token", token, "--key", str(tmp_path / "k.pem")])  # fmt: skip
                assert res.exit_code == 0, res.output
            remote = RemoteStore(server.url)
            assert remote.show("team/topic@1.0.0").kind == "condition"
            kit = resolve("team/gated@1.0.0", store=remote, model=model)
    finally:
        backing.close()
    from_file = load_kit(local, model)
    assert kit.condition is not None and from_file.condition is not None
    assert kit.condition.key == from_file.condition.key
    assert generate(model, PROMPTS, steering=kit, max_new_tokens=4, chat=False) == generate(
        model, PROMPTS, steering=from_file, max_new_tokens=4, chat=False
    )
