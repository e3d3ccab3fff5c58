"""The vLLM plugin's pure parts, in the main virtualenv (no vLLM needed): the registered op reading slot tables
computes what steerlab's hooks compute (steering.apply_ops) for every mode and position, per token, with vLLM's
split (hidden, residual) stream; slots are shared per kit hash and freed least-recently-used."""

from __future__ import annotations

import pytest
import torch

from steerlab.card import Card
from steerlab.kit import Kit, KitCard, KitEntry
from steerlab.plan import GENERATED, PROMPT, compile_row, stack_rows
from steerlab.steering import apply_ops
from steerlab.vector import Vector
from steerlab.vllm import op
from steerlab.vllm.op import steer_
from steerlab.vllm.slots import SlotPool
from steerlab.vllm.tables import NO_STEERING, SlotTables, TableShape, row_of
from tests.tiny import tiny_model


@pytest.fixture(scope="module")
def model():
    return tiny_model("llama")


def vector(model, seed: int) -> Vector:
    gen = torch.Generator().manual_seed(seed)
    card = Card(base_model=model.name, model_fingerprint=model.fingerprint, n_layers=model.n_layers, name=f"v{seed}")
    return Vector({la: torch.randn(model.hidden_size, generator=gen) for la in range(model.n_layers)}, card)


def kits(model) -> list[Kit]:
    """Three kits that together use every mode and position, with stacking on one layer."""
    a, b, c = vector(model, 1), vector(model, 2), vector(model, 3)
    return [
        Kit([KitEntry(a, 0.7, [1, 2]), KitEntry(b, -0.4, [2], positions="generated")], KitCard(name="k0")),
        Kit([KitEntry(c, 0.9, [1, 2], mode="ablate"), KitEntry(a, 0.5, [2], mode="add_keep_norm")], KitCard(name="k1")),
        Kit([KitEntry(b, 1.5, [0, 1, 2], positions="prompt", mode="add_keep_norm")], KitCard(name="k2")),
    ]


def tables_for(model, rows) -> SlotTables:
    shape = TableShape(model.n_layers, model.hidden_size, len(rows) + 1, 2, 64, torch.float32, torch.device("cpu"))
    tables = SlotTables(shape)
    for slot, row in enumerate(rows):
        tables.fill(slot + 1, row)  # slot 0 left empty on purpose: a freed slot must read as zeros
    return tables


@pytest.mark.parametrize("capturing", [False, True])
@pytest.mark.parametrize("split", [True, False])
def test_op_matches_the_hooks_for_every_mode_and_position(model, split: bool, capturing: bool, monkeypatch) -> None:
    rows = [compile_row(model, kit) for kit in kits(model)]
    tables = tables_for(model, rows)
    if capturing:
        # What a CUDA graph replays: the path recorded at warm-up, when the host-side flags said nothing is
        # steered. The op must not have followed them, so the replay still computes every kit.
        monkeypatch.setattr(op, "capturing", lambda: True)
        tables.live.zero_()
    # Eight tokens: each kit's prompt and generated tokens, and two unsteered ones.
    token_kit = [0, 0, 1, 1, 2, 2, None, None]
    token_phase = [PROMPT, GENERATED] * 4
    rows_index = [NO_STEERING if k is None else row_of(k + 1, p) for k, p in zip(token_kit, token_phase, strict=True)]
    tables.set_token_rows(torch.tensor(rows_index))
    gen = torch.Generator().manual_seed(0)
    for layer in range(model.n_layers):
        hidden = torch.randn(8, model.hidden_size, generator=gen)
        residual = torch.randn(8, model.hidden_size, generator=gen) if split else torch.empty(0)
        stream = hidden + residual if split else hidden.clone()
        expected = stream.clone()
        for t, (k, phase) in enumerate(zip(token_kit, token_phase, strict=True)):
            if k is None or layer not in rows[k].layers:
                continue
            ops = stack_rows(model, [rows[k]]).ops[layer][phase]
            expected[t] = apply_ops(stream[t].view(1, 1, -1), ops, None).view(-1)
        steer_(hidden, residual, *tables.layer_buffers(layer))
        got = hidden + residual if split else hidden
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_unsteered_tokens_keep_their_exact_values_beside_an_ablating_kit(model) -> None:
    rows = [compile_row(model, kits(model)[1])]  # ablation and norm-keeping: the whole-stream path
    tables = tables_for(model, rows)
    tables.set_token_rows(torch.tensor([row_of(1, 0), NO_STEERING, NO_STEERING]))
    hidden = torch.randn(3, model.hidden_size).to(torch.bfloat16)
    residual = (torch.randn(3, model.hidden_size) * 50).to(torch.bfloat16)
    before = hidden.clone()
    steer_(hidden, residual, *tables.layer_buffers(1))
    assert torch.equal(hidden[1:], before[1:]) and not torch.equal(hidden[0], before[0])


def test_cleared_slot_reads_as_unsteered(model) -> None:
    rows = [compile_row(model, kit) for kit in kits(model)]
    tables = tables_for(model, rows)
    for slot in range(1, len(rows) + 1):
        tables.clear(slot)
    assert not tables.live.any() and not tables.add.any() and not tables.units.any()
    hidden = torch.randn(4, model.hidden_size)
    before = hidden.clone()
    tables.set_token_rows(torch.tensor([row_of(1, 0), row_of(2, 1), row_of(3, 0), 0]))
    steer_(hidden, torch.empty(0), *tables.layer_buffers(1))
    assert torch.equal(hidden, before)


def test_too_many_ablations_is_a_clear_error(model) -> None:
    vs = [vector(model, s) for s in (1, 2, 3)]
    kit = Kit([KitEntry(v, 1.0, [1], mode="ablate") for v in vs])
    shape = TableShape(model.n_layers, model.hidden_size, 1, 2, 8, torch.float32, torch.device("cpu"))
    with pytest.raises(Exception, match="ablates 3 directions at block 1"):
        SlotTables(shape).fill(0, compile_row(model, kit))


def test_slots_shared_per_hash_and_freed_lru() -> None:
    pool = SlotPool(2)
    assert pool.acquire("a", "r1") == (0, True)
    assert pool.acquire("a", "r2") == (0, False)  # same kit, same slot, no refill
    assert pool.acquire("b", "r3") == (1, True)
    assert pool.acquire("c", "r4") is None  # both held: never evict a slot in use
    pool.release("r3")
    assert pool.acquire("c", "r4") == (1, True)  # b was unused: its slot goes to c
    pool.release("r1")
    pool.release("r2")
    pool.release("r4")
    assert pool.acquire("c", "r5") == (1, False)  # c kept its filled slot
    assert pool.acquire("d", "r6") == (0, True)  # a was least recently used
    assert pool.slot_of("a") is None


def test_resolver_specs_limits_digests_and_the_kits_folder(model, tmp_path) -> None:
    from steerlab.errors import SteerlabError
    from steerlab.vllm.kits import KitResolver
    from steerlab.vllm.settings import Settings

    kits = tmp_path / "kits"
    kits.mkdir()
    vector(model, 1).save(kits / "a.safetensors")
    vector(model, 2).save(tmp_path / "outside.safetensors")
    open_ = KitResolver(Settings(), model)
    first = open_.for_request(
        {"steering": [f"{kits}/a.safetensors:0.5@1-2", {"address": f"{kits}/a.safetensors", "mode": "ablate"}]}
    )
    assert first is not None and [e.mode for e in first.kit.entries] == ["add", "ablate"]
    again = KitResolver(Settings(), model).for_request(
        {"steering": [f"{kits}/a.safetensors:0.5@1-2", {"address": f"{kits}/a.safetensors", "mode": "ablate"}]}
    )
    assert again is not None and again.digest == first.digest  # same steering, same slot and cache salt
    other = open_.for_request({"steering": f"{kits}/a.safetensors:0.6@1-2"})
    assert other is not None and other.digest != first.digest
    assert open_.for_request(None) is None and open_.for_request({}) is None
    for spec, message in [
        ([], "empty list"),
        (42, "got 42"),
        ({"address": f"{kits}/a.safetensors", "colour": 1}, "unknown keys"),
        ({"address": f"{kits}/a.safetensors", "mode": "sideways"}, "sideways"),
        (f"{kits}/a.safetensors:9", "exceeds this server's limit of 8"),
        ([f"{kits}/a.safetensors"] * 9, "9 vectors in one request"),
    ]:
        with pytest.raises(SteerlabError, match=message):
            open_.for_request({"steering": spec})
    served = KitResolver(Settings(kits=str(kits), default=f"{kits}/a.safetensors:0.1"), model)
    got = served.for_request({"steering": "a.safetensors:0.5"})  # relative to the kits folder
    assert got is not None and [e.scale for e in got.kit.entries] == [0.1, 0.5]  # server default first, additively
    for hostile in [str(tmp_path / "outside.safetensors"), "../outside.safetensors", "/etc/passwd.json"]:
        with pytest.raises(SteerlabError, match="outside this server's kits folder"):
            served.for_request({"steering": hostile})
    unsteered = served.for_request(None)
    assert unsteered is not None and [e.scale for e in unsteered.kit.entries] == [0.1]  # the default alone


def test_a_link_in_the_kits_folder_cannot_reach_outside(model, tmp_path) -> None:
    from steerlab.errors import SteerlabError
    from steerlab.vllm.kits import KitResolver
    from steerlab.vllm.settings import Settings

    kits = tmp_path / "kits"
    kits.mkdir()
    vector(model, 2).save(tmp_path / "outside.safetensors")
    (kits / "link.safetensors").symlink_to(tmp_path / "outside.safetensors")
    with pytest.raises(SteerlabError, match="outside this server's kits folder"):
        KitResolver(Settings(kits=str(kits)), model).for_request({"steering": "link.safetensors:0.5"})


def test_the_resolver_takes_conditional_kits_from_files_and_the_store(model, tmp_path) -> None:
    """Kit-level and entry-level conditions, from a kit file and from the store, per request and as the default:
    resolved with their conditions when the gated entries steer generated tokens; refused, saying why, otherwise."""
    from steerlab.condition import Condition
    from steerlab.errors import SteerlabError
    from steerlab.hub import open_store
    from steerlab.hub.store import Publication
    from steerlab.kitfile import save_kit
    from steerlab.vllm.kits import KitResolver
    from steerlab.vllm.settings import Settings

    gate = Condition(torch.ones(model.hidden_size) / model.hidden_size**0.5, 1, 0.0)
    gate.card.name = "topic"
    plain, other = vector(model, 1), vector(model, 2)
    generated = KitEntry(plain, 1.0, positions="generated")
    whole = save_kit(Kit([generated], KitCard(name="whole")).when(gate), tmp_path / "whole.json")
    one = save_kit(
        Kit([KitEntry(plain, 1.0), KitEntry(other, 1.0, when=gate, positions="generated")]), tmp_path / "one.json"
    )
    everywhere = save_kit(Kit([KitEntry(plain, 1.0)], KitCard(name="all")).when(gate), tmp_path / "everywhere.json")
    store = open_store(str(tmp_path / "store"))
    try:
        for name in ("v1", "v2", "topic.condition"):
            kind = "condition" if name.endswith("condition") else "vector"
            store.publish((tmp_path / f"{name}.safetensors").read_bytes(), Publication(f"t/{name[:5]}@1.0.0", kind))
        store.publish(one.read_bytes(), Publication("t/one@1.0.0", kind="kit"))
        resolver = KitResolver(Settings(store=str(tmp_path / "store")), model)
        for address, gated in ((str(whole), 1), (str(one), 1), ("t/one@1.0.0", 1)):
            found = resolver.for_request({"steering": address})
            assert found is not None and found.conditional
            assert sum(e.when is not None for e in found.kit.entries) == gated
            assert [c.name for c in found.kit.conditions] == ["topic"]
        with pytest.raises(SteerlabError, match=r"conditional entry .* steers positions 'all'.*generated tokens only"):
            resolver.for_request({"steering": str(everywhere)})
        assert not resolver.for_request({"steering": f"{tmp_path}/v1.safetensors"}).conditional  # type: ignore[union-attr]
        assert KitResolver(Settings(default=str(whole)), model).for_request(None).conditional  # type: ignore[union-attr]
        with pytest.raises(SteerlabError, match="generated tokens only"):
            KitResolver(Settings(default=str(everywhere)), model)  # a bad server default fails at start-up
    finally:
        store.close()
    tables = tables_for(model, [])
    with pytest.raises(SteerlabError, match=r"conditional kit .* cannot go into the vLLM steering tables"):
        tables.fill(1, compile_row(model, Kit([KitEntry(plain, 1.0, when=gate)])))  # past the resolver, too


def test_the_scheduler_gate_holds_back_a_kit_without_a_free_slot(model, tmp_path) -> None:
    """The scheduler side of slot waiting (steerlab.vllm.waiting), on the real resolver: with 2 slots, a third
    distinct kit waits while two others run; a kit already running, an unsteered request, and any kit once a slot's
    requests have finished may start. Two specs of the same kit count as one."""
    from types import SimpleNamespace

    from steerlab.vllm.kits import KitResolver
    from steerlab.vllm.settings import Settings
    from steerlab.vllm.waiting import SlotGate

    paths = [vector(model, seed).save(tmp_path / f"v{seed}.safetensors") for seed in (1, 2, 3)]
    gate = SlotGate(KitResolver(Settings(), model), slots=2)

    def req(rid: str, steering: object = None) -> SimpleNamespace:
        extra = None if steering is None else {"steering": steering}
        return SimpleNamespace(request_id=rid, sampling_params=SimpleNamespace(extra_args=extra))

    a, b, c = (req(f"r{k}", f"{p}:0.5@1-2") for k, p in enumerate(paths))
    a_again = req("r3", [f"{paths[0]}:0.5@1-2"])  # the same kit written as a list
    plain = req("r4")
    assert gate.may_start(a, []) and gate.may_start(b, [a])
    assert not gate.may_start(c, [a, b]) and gate.waited == 1  # no free slot: it waits
    assert gate.may_start(a_again, [a, b]) and gate.may_start(plain, [a, b, a_again])
    assert gate.may_start(c, [b, plain])  # a's requests finished: its slot can go to c
    assert gate.kit_of(a) == gate.kit_of(a_again) != gate.kit_of(b) and gate.kit_of(plain) == ""
