"""Expert steering on tiny random MoE models of every family: router-logit offsets, per-row, mixed with residuals."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from tiny import MOE_FAMILIES, H, byte_tokenizer, tiny_model, tiny_moe

from steerlab import Condition, ExpertVector, Kit, KitEntry, PairSet, SteerlabError, Vector, extract_experts, steer
from steerlab.router import n_experts, router_weight
from steerlab.tokens import pad_batch

IDS = torch.tensor([[5, 9, 14, 3, 22, 7], [11, 4, 8, 2, 6, 40]])
SEQS = [[5, 9, 14, 3, 22, 7], [11, 4, 8], [30, 31, 2, 6, 40]]


def _router_call(model, layer: int, what=None) -> tuple[torch.Tensor, tuple]:
    """The router's input and its outputs in one forward (steered by `what` if given)."""
    router = model.anatomy.routers[layer]
    seen: dict[str, object] = {}
    handles = [
        router.register_forward_pre_hook(lambda _m, args: seen.setdefault("x", args[0].detach().clone())),
        router.register_forward_hook(lambda _m, _a, out: seen.setdefault("out", out)),
    ]
    try:
        with torch.inference_mode():
            if what is None:
                model.hf_model(IDS)
            else:
                with steer(model, what):
                    model.hf_model(IDS)
    finally:
        for handle in handles:
            handle.remove()
    out = seen["out"]
    return seen["x"], out if isinstance(out, tuple) else (out,)  # type: ignore[return-value]


def _independent_logits(model, layer: int, x: torch.Tensor) -> torch.Tensor:
    """W x (+ b), computed here from the router's own parameters: [tokens, experts]."""
    router = model.anatomy.routers[layer]
    weight = router_weight(router, model.hidden_size)
    bias = next((p for n, p in router.named_parameters() if n.endswith("bias") and p.ndim == 1), None)
    tokens = x.reshape(-1, H).to(weight.dtype)
    with torch.inference_mode():
        return F.linear(tokens, weight, bias)


def _returned_logits(outputs: tuple, expected: torch.Tensor) -> torch.Tensor:
    """Among the router's float outputs, the [tokens, experts] one that matches `expected` (its logits)."""
    for out in outputs:
        same_kind = isinstance(out, torch.Tensor) and out.is_floating_point() and out.shape == expected.shape
        if same_kind and torch.allclose(out.float(), expected.float(), atol=1e-5, rtol=1e-5):
            return out
    raise AssertionError("the router returned no logits equal to W x + offset")


def _selected(outputs: tuple, logits: torch.Tensor) -> list[set[int]]:
    ints = [o for o in outputs if isinstance(o, torch.Tensor) and not o.is_floating_point()]
    if ints:
        return [set(row) for row in ints[-1].reshape(logits.shape[0], -1).tolist()]
    # Llama 4's router returns scores and logits: the experts it picked are the ones with a finite pre-sigmoid score.
    scores = outputs[0].reshape(logits.shape[0], -1)
    return [set(torch.nonzero(row > 0).flatten().tolist()) for row in scores]


@pytest.mark.parametrize("family", MOE_FAMILIES)
def test_router_logits_move_by_exactly_the_offset_and_selection_follows(family: str) -> None:
    model = tiny_moe(family)
    layer = sorted(model.anatomy.routers)[0]
    experts = n_experts(model.anatomy.routers[layer], H)
    gen = torch.Generator().manual_seed(3)
    offsets = {layer: {e: float(v) for e, v in enumerate(torch.randn(experts, generator=gen) * 2)}}
    vector, scale = ExpertVector.from_offsets(model, offsets), 1.5
    x0, base = _router_call(model, layer)
    x1, steered = _router_call(model, layer, Kit([KitEntry(vector, scale)]))
    assert torch.equal(x0, x1), "the router's input must not change: the offset is inside it"
    plain = _independent_logits(model, layer, x0)
    want = plain + scale * vector.offsets[layer].to(plain.dtype)
    got = _returned_logits(steered, want)
    torch.testing.assert_close(got.float() - _returned_logits(base, plain).float(), (want - plain).float())
    top_k = len(_selected(base, plain)[0])
    expected = [set(row) for row in want.topk(top_k, dim=-1).indices.tolist()]
    assert _selected(steered, got) == expected
    assert _selected(steered, got) != _selected(base, plain), "the offsets should change some selection"


@pytest.mark.parametrize("family", MOE_FAMILIES)
def test_large_offsets_force_and_forbid_experts_at_every_routed_block(family: str) -> None:
    model = tiny_moe(family)
    routed = sorted(model.anatomy.routers)
    vector = ExpertVector.from_offsets(model, {la: {1: 1e3, 2: -1e3} for la in routed})
    for layer in routed:
        x, out = _router_call(model, layer, vector)
        logits = _independent_logits(model, layer, x) + vector.offsets[layer]
        picks = _selected(out, logits)
        assert all(1 in p and 2 not in p for p in picks), f"block {layer}: {picks[:3]}"


def test_nothing_assumes_four_experts_or_top_two() -> None:
    model = tiny_moe("qwen3_moe", num_experts=7, num_local_experts=7, num_experts_per_tok=3)
    vector = ExpertVector.from_offsets(model, {1: {6: 1e3, 0: -1e3}})
    x, out = _router_call(model, 1, vector)
    picks = _selected(out, _independent_logits(model, 1, x))
    assert all(len(p) == 3 and 6 in p and 0 not in p for p in picks)


def _row_logits(model, what, seqs=SEQS) -> list[torch.Tensor]:
    ids, mask, pos, offsets = pad_batch(seqs, 0, "left", model.device)
    with torch.inference_mode(), steer(model, what):
        logits = model.hf_model(input_ids=ids, attention_mask=mask, position_ids=pos).logits
    return [logits[r, off : off + len(seq)] for r, (seq, off) in enumerate(zip(seqs, offsets, strict=True))]


def _residual(seed: int) -> Vector:
    gen = torch.Generator().manual_seed(seed)
    return Vector({la: torch.randn(H, generator=gen) for la in range(4)})


@pytest.mark.parametrize("family", ["mixtral", "gpt_oss", "deepseek_v3", "qwen2_moe", "llama4_text"])
def test_per_row_expert_steering_matches_each_row_alone(family: str) -> None:
    model = tiny_moe(family)
    routed = sorted(model.anatomy.routers)
    boost = ExpertVector.from_offsets(model, {la: {0: 4.0, 3: -4.0} for la in routed})
    other = ExpertVector.from_offsets(model, {routed[-1]: {2: 6.0}})
    rows = [Kit([KitEntry(boost, 1.0)]), None, Kit([KitEntry(other, 1.0), KitEntry(_residual(1), 0.5)])]
    batched = _row_logits(model, rows)
    for seq, what, got in zip(SEQS, rows, batched, strict=True):
        with torch.inference_mode():
            if what is None:
                want = model.hf_model(torch.tensor([seq])).logits[0]
            else:
                with steer(model, what):
                    want = model.hf_model(torch.tensor([seq])).logits[0]
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_a_residual_vector_and_an_expert_entry_combine_in_one_kit() -> None:
    model = tiny_moe("mixtral")
    experts = ExpertVector.from_offsets(model, {1: {0: 5.0}, 2: {3: 5.0}})
    residual = _residual(2)
    with torch.inference_mode():
        base = model.hf_model(IDS).logits
        with steer(model, Kit([KitEntry(experts, 1.0), KitEntry(residual, 0.8)])):
            both = model.hf_model(IDS).logits
        with steer(model, Kit([KitEntry(experts, 1.0)])), steer(model, Kit([KitEntry(residual, 0.8)])):
            nested = model.hf_model(IDS).logits
        with steer(model, Kit([KitEntry(experts, 1.0)])):
            experts_only = model.hf_model(IDS).logits
    torch.testing.assert_close(both, nested, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(both, experts_only) and not torch.allclose(experts_only, base)


def test_conditional_expert_steering_leaves_failing_rows_bit_identical() -> None:
    model = tiny_moe("qwen3_moe")
    vector = ExpertVector.from_offsets(model, {la: {1: 5.0} for la in model.anatomy.routers})
    never = Condition(torch.ones(H), 0, 1e9)
    ids, mask, pos, _ = pad_batch(SEQS, 0, "left", model.device)
    with torch.inference_mode():
        base = model.hf_model(input_ids=ids, attention_mask=mask, position_ids=pos).logits
        with steer(model, Kit([KitEntry(vector, 1.0)]).when(never)):
            gated = model.hf_model(input_ids=ids, attention_mask=mask, position_ids=pos).logits
    assert torch.equal(base, gated)


def test_expert_vector_saves_loads_and_refuses_what_it_cannot_do(tmp_path) -> None:
    model = tiny_moe("olmoe")
    vector = ExpertVector.from_offsets(model, {0: {1: 2.5}, 3: {0: -1.0}}, name="prefer-1")
    back = Vector.load(vector.save(tmp_path / "e.safetensors"))
    assert isinstance(back, ExpertVector) and back.card.site == "router" and back.card.name == "prefer-1"
    assert all(torch.equal(back.offsets[la], vector.offsets[la]) for la in vector.layers)
    assert isinstance(2 * back, ExpertVector)
    with pytest.raises(SteerlabError, match="has no router"):
        ExpertVector.from_offsets(model, {9: {0: 1.0}})
    with pytest.raises(SteerlabError, match=r"experts 0\.\.3"):
        ExpertVector.from_offsets(model, {0: {4: 1.0}})
    with pytest.raises(SteerlabError, match="cannot combine"):
        back + _residual(1)
    with pytest.raises(SteerlabError, match="residuals"):
        KitEntry(back, 1.0, mode="ablate")
    dense = tiny_model("llama")
    with pytest.raises(SteerlabError, match="not a Mixture-of-Experts"), steer(dense, back):
        pass
    with pytest.raises(SteerlabError, match="4 experts at block 0"), steer(
        tiny_moe("olmoe", num_experts=6, num_local_experts=6), back
    ):
        pass


def test_llama_cpp_export_refuses_expert_vectors_and_conditions(tmp_path) -> None:
    from steerlab.formats import export_vector
    from steerlab.formats.llamacpp import export_entries

    model = tiny_moe("mixtral")
    vector = ExpertVector.from_offsets(model, {1: {0: 1.0}})
    for fmt in ("llama.cpp", "steering-vectors", "pt"):
        with pytest.raises(SteerlabError, match=r"llama\.cpp control vectors, repeng and steering-vectors"):
            export_vector(vector, tmp_path / "e.gguf", fmt)
    with pytest.raises(SteerlabError, match="cannot take it"):
        export_entries([("e", KitEntry(vector, 1.0))], tmp_path)
    gated = KitEntry(_residual(1), 1.0, when=Condition(torch.ones(H), 1, 0.0))
    with pytest.raises(SteerlabError, match="cannot read a condition"):
        export_entries([("g", gated)], tmp_path)


def test_router_path_override_and_its_errors() -> None:
    from steerlab import wrap_model

    model = tiny_moe("qwen2_moe")
    again = wrap_model(model.hf_model, model.tokenizer, router_path="mlp.gate")
    assert {la: type(r) for la, r in again.anatomy.routers.items()} == {
        la: type(r) for la, r in model.anatomy.routers.items()
    }
    with pytest.raises(SteerlabError, match=r"router_path 'mlp\.nothing'"):
        wrap_model(model.hf_model, model.tokenizer, router_path="mlp.nothing")


def _pairs(n: int) -> PairSet:
    records = [
        {"prompt": f"q{i}", "positive": "happy joy " * (1 + i % 3), "negative": "sad gloom " * (1 + i % 2)}
        for i in range(n)
    ]
    return PairSet.from_records(records)


def test_extract_experts_log_odds_match_an_independent_count() -> None:
    model = tiny_moe("mixtral")
    model.tokenizer = byte_tokenizer()
    pairs = _pairs(20)
    residual = _residual(3)
    vector = extract_experts(model, pairs, chat=False, progress=False, name="joy", residual=residual)
    assert isinstance(vector, ExpertVector) and vector.layers == sorted(model.anatomy.routers)
    assert vector.card.metadata["held_out_pairs"] == 4
    assert 0.0 <= vector.card.metadata["held_out_accuracy"] <= 1.0
    assert [len(t) for t in vector.card.metadata["top_experts"].values()] == [3] * len(vector.layers)
    # Independent count at block 2: each side alone, selections read from the router's returned indices.
    from steerlab.prompts import tokenize_side

    layer, hits, tokens = 2, [torch.zeros(4), torch.zeros(4)], [0, 0]
    unit = residual.directions[layer - 1] / residual.directions[layer - 1].norm()
    routed: list[dict[int, list[float]]] = [{e: [] for e in range(4)}, {e: [] for e in range(4)}]
    router = model.anatomy.routers[layer]
    for pair in pairs.pairs:
        for s, side in enumerate((pair.positive, pair.negative)):
            item = tokenize_side(model, side, "mean", chat=False)
            seen: list = []
            handle = router.register_forward_hook(lambda _m, args, out, seen=seen: seen.append((args[0], out[2])))
            with torch.inference_mode():
                model.hf_model(torch.tensor([item.ids]))
            handle.remove()
            x, indices = seen[0]
            picks = indices.reshape(len(item.ids), -1)[item.read_start : item.read_end]
            projected = x.reshape(len(item.ids), -1)[item.read_start : item.read_end] @ unit
            hits[s] += torch.bincount(picks.flatten(), minlength=4).float()
            tokens[s] += item.read_end - item.read_start
            for token, experts in enumerate(picks.tolist()):
                for e in experts:
                    routed[s][e].append(float(projected[token]))
    p = [(hits[s] + 0.5) / (tokens[s] + 1.0) for s in (0, 1)]
    want = (torch.log(p[0]) - torch.log1p(-p[0])) - (torch.log(p[1]) - torch.log1p(-p[1]))
    torch.testing.assert_close(vector.offsets[layer], want, atol=1e-5, rtol=1e-5)
    separation = vector.card.metadata["expert_residual_separation"][str(layer)]
    for e in range(4):
        pos, neg = torch.tensor(routed[0][e]), torch.tensor(routed[1][e])
        if not len(pos) or not len(neg):
            assert str(e) not in separation
            continue
        pooled = ((pos.var(unbiased=False) + neg.var(unbiased=False)) / 2).sqrt()
        assert separation[str(e)]["tokens"] == len(pos) + len(neg)
        assert separation[str(e)]["separation"] == pytest.approx(float((pos.mean() - neg.mean()) / pooled), rel=1e-3)


def test_extract_experts_refuses_a_dense_model() -> None:
    model = tiny_model("llama")
    with pytest.raises(SteerlabError, match="no MoE routers"):
        extract_experts(model, _pairs(4), chat=False, progress=False)


def test_a_router_without_f_linear_is_a_clear_error_not_a_silent_no_op() -> None:
    model = tiny_moe("olmoe")
    router = model.anatomy.routers[1]
    original = router.forward

    def matmul_router(hidden_states: torch.Tensor):
        logits = hidden_states.reshape(-1, H).as_subclass(torch.Tensor) @ router.weight.T
        top = logits.softmax(-1).topk(2, dim=-1)
        return logits, top.values, top.indices

    router.forward = matmul_router  # type: ignore[method-assign]
    vector = ExpertVector.from_offsets(model, {1: {0: 1.0}})
    try:
        with pytest.raises(SteerlabError, match=r"computed no F\.linear"), torch.inference_mode(), steer(model, vector):
            model.hf_model(IDS)
    finally:
        router.forward = original  # type: ignore[method-assign]


def test_expert_vectors_are_published_signed_and_pulled_like_vectors(tmp_path) -> None:
    from steerlab import resolve
    from steerlab.hub.publish import sign_publication
    from steerlab.hub.store import LocalStore, Publication

    model = tiny_moe("mixtral")
    vector = ExpertVector.from_offsets(model, {1: {0: 3.0}, 2: {3: -2.0}}, name="prefer-0")
    data = vector.to_bytes()
    pub = Publication("moe/prefer-0@1.0.0")
    sign_publication(data, pub, tmp_path / "key.pem")
    store = LocalStore(tmp_path / "store")
    try:
        info = store.publish(data, pub)
        assert info.signed
        back = store.get_vector("moe/prefer-0", require_signed=True, trusted_keys=[info.key_id])
        assert isinstance(back, ExpertVector) and torch.equal(back.offsets[1], vector.offsets[1])
        kit = resolve("moe/prefer-0:2.0", store=store, model=model)
        assert isinstance(kit.entries[0].vector, ExpertVector) and kit.entries[0].scale == 2.0
        bad = ExpertVector({1: torch.zeros(4)}, vector.card)
        bad.directions[1] = torch.zeros(1)  # one "expert": not an expert vector
        with pytest.raises(SteerlabError, match="one offset per expert"):
            store.publish(bad.to_bytes(), Publication("moe/bad@1.0.0"))
    finally:
        store.close()


def test_the_vllm_resolver_refuses_expert_vectors_clearly(tmp_path) -> None:
    from steerlab.vllm.kits import KitResolver
    from steerlab.vllm.settings import Settings

    model = tiny_moe("mixtral")
    path = ExpertVector.from_offsets(model, {1: {0: 1.0}}).save(tmp_path / "e.safetensors")
    with pytest.raises(SteerlabError, match="vLLM engine steers residual directions only"):
        KitResolver(Settings(), model).for_request({"steering": f"{path}:1.0"})
    with pytest.raises(SteerlabError, match="comes without steerlab's anatomy"):
        ExpertVector.from_offsets(model, {1: {0: 1.0}}).check_compatible(object())
