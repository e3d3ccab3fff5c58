"""extract_experts(): contrastive pairs in, an ExpertVector of per-expert selection log-odds out (SteerMoE-style).

For every MoE block, the experts each router selects are counted over the read span of every positive and every
negative side (the completion for completion pairs, the answer for A/B pairs). An expert's offset is the log-odds
ratio of being selected on positive vs negative tokens, logit(p_pos) - logit(p_neg), with add-half smoothing.
Diagnostics: the most differential experts per block and the held-out accuracy of the selection pattern (for each
held-out pair, is the positive side's pattern scored above the negative side's by log-odds fitted without it).

With `residual=` (a residual Vector for the same behaviour), the card also says, per block and expert, how well the
vector's direction separates positive from negative tokens among the tokens routed to that expert (Cohen's d of
the router input's projection on the direction for the stream entering the block, `directions[block - 1]`): the
experts where the residual direction is and is not legible (repeng #25: a direction pooled over expert subsets).

Reading the routers is read-only: the router hooks here return nothing, and the logits are read by a torch function
mode that hands them on unchanged (steerlab.router.RouterLogits).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from steerlab.errors import SteerlabError
from steerlab.extraction import held_out_indices
from steerlab.models import LoadedModel
from steerlab.pairs import PairSet, ReadPosition
from steerlab.prompts import tokenize_side
from steerlab.router import RouterLogits, router_weight, selected_experts
from steerlab.tokens import Tokenized, pad_batch, pad_id_of
from steerlab.vector import Card, ExpertVector, Vector

TOP_EXPERTS = 3  # most differential experts listed per block


class _StopForward(Exception):
    """Raised after the deepest router has run: nothing past it is needed."""


@dataclass
class _Counts:
    """Per item (2 per pair: positive, negative) and block: expert selection counts over its read span."""

    counts: dict[int, dict[int, torch.Tensor]] = field(default_factory=dict)  # block -> item -> [E]
    tokens: dict[int, int] = field(default_factory=dict)  # item -> tokens read
    # block -> side (0 positive, 1 negative) -> [3, E]: count, sum and sum of squares of the residual projection
    projections: dict[int, dict[int, torch.Tensor]] = field(default_factory=dict)


def extract_experts(
    model: LoadedModel,
    pairs: PairSet,
    layers: Sequence[int] | None = None,
    position: ReadPosition | None = None,
    batch_size: int = 8,
    chat: bool = True,
    progress: bool = True,
    name: str = "",
    residual: Vector | None = None,
) -> ExpertVector:
    """Per MoE block and expert, the log-odds of selection on positive vs negative sides; steer with it in a Kit
    (`KitEntry(expert_vector, scale)`: scale x offset is added to the router logits before selection).
    `residual`: also report per-expert separation of that vector's direction (card.metadata)."""
    routed = sorted(model.anatomy.routers)
    chosen = [la for la in routed if layers is None or la in set(layers)]
    if not chosen:
        where = f"among blocks {sorted(layers)}" if layers is not None else ""
        raise SteerlabError(
            f"{model.name} has no MoE routers {where} (routers at {routed or 'none'}); extract_experts needs a "
            "Mixture-of-Experts model (pass router_path= to load_model if steerlab missed its routers)."
        )
    read_at = position or pairs.default_position
    sides = [side for pair in pairs.pairs for side in (pair.positive, pair.negative)]
    items = [tokenize_side(model, side, read_at, chat) for side in sides]
    units = _units(residual, chosen) if residual is not None else {}
    counts = _count(model, items, chosen, batch_size, progress, units)
    held = held_out_indices(len(pairs))
    everyone = set(range(len(pairs)))
    offsets = {la: _log_odds(counts, la, everyone) for la in chosen}
    diagnostics, accuracy = _diagnose(counts, chosen, everyone - held, held)
    card = Card(
        base_model=model.name,
        model_fingerprint=model.fingerprint,
        hidden_size=model.hidden_size,
        n_layers=model.n_layers,
        method="expert_log_odds",
        position=read_at,
        n_pairs=len(pairs),
        dataset_hash=pairs.content_hash(),
        diagnostics=diagnostics,
        name=name,
        metadata={
            "held_out_accuracy": accuracy,
            "held_out_pairs": len(held),
            "top_experts": {str(la): _top(offsets[la]) for la in chosen},
            "model_type": model.anatomy.model_type,
            **({"expert_residual_separation": _separations(counts)} if units else {}),
        },
    )
    vector = ExpertVector(offsets, card)
    vector.card.norms = vector.norms()
    return vector


def _units(residual: Vector, layers: list[int]) -> dict[int, torch.Tensor]:
    """Block -> the unit direction of the stream entering it (directions[block - 1]), where the vector has one."""
    units = {}
    for la in layers:
        direction = residual.directions.get(la - 1)
        if direction is not None:
            units[la] = direction.float() / direction.float().norm().clamp_min(1e-12)
    if not units:
        raise SteerlabError(f"the residual vector has no direction for the blocks before routed blocks {layers}.")
    return units


def _separations(data: _Counts) -> dict[str, dict[str, dict[str, float]]]:
    """Block -> expert -> Cohen's d of the projection between positive and negative tokens routed there, and n."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for la, sides in data.projections.items():
        (n_p, s_p, q_p), (n_n, s_n, q_n) = sides[0], sides[1]
        mean_p, mean_n = s_p / n_p.clamp_min(1), s_n / n_n.clamp_min(1)
        var_p = (q_p / n_p.clamp_min(1) - mean_p**2).clamp_min(0)
        var_n = (q_n / n_n.clamp_min(1) - mean_n**2).clamp_min(0)
        pooled = ((var_p + var_n) / 2).sqrt().clamp_min(1e-6)
        out[str(la)] = {
            str(e): {"separation": float((mean_p[e] - mean_n[e]) / pooled[e]), "tokens": int(n_p[e] + n_n[e])}
            for e in range(len(n_p))
            if n_p[e] > 0 and n_n[e] > 0
        }
    return out


def _top(offsets: torch.Tensor) -> list[dict[str, float]]:
    order = offsets.abs().argsort(descending=True)[:TOP_EXPERTS]
    return [{"expert": int(e), "log_odds": float(offsets[e])} for e in order]


def _log_odds(data: _Counts, layer: int, pairs: set[int]) -> torch.Tensor:
    """logit(p_pos) - logit(p_neg) per expert, p = (selections + 0.5) / (tokens + 1) over the given pairs."""
    sides = []
    for sign in (0, 1):
        ids = [2 * p + sign for p in sorted(pairs)]
        hits = torch.stack([data.counts[layer][i] for i in ids]).sum(0)
        total = float(sum(data.tokens[i] for i in ids))
        p = (hits + 0.5) / (total + 1.0)
        sides.append(torch.log(p) - torch.log1p(-p.clamp_max(1 - 1e-6)))
    return sides[0] - sides[1]


def _diagnose(
    data: _Counts, layers: list[int], train: set[int], held: set[int]
) -> tuple[dict[int, dict[str, float]], float | None]:
    """Per block and over all blocks: the share of held-out pairs whose positive side's selection frequencies score
    above the negative side's, under log-odds fitted on the training pairs only."""
    if not held or not train:
        return {}, None
    fitted = {la: _log_odds(data, la, train) for la in layers}
    total = torch.zeros(len(held))
    diagnostics: dict[int, dict[str, float]] = {}
    for la in layers:
        margins = torch.tensor([_score(data, la, 2 * p, fitted) - _score(data, la, 2 * p + 1, fitted) for p in held])
        diagnostics[la] = {"accuracy": float((margins > 0).float().mean())}
        total += margins
    return diagnostics, float((total > 0).float().mean())


def _score(data: _Counts, layer: int, item: int, fitted: dict[int, torch.Tensor]) -> float:
    frequency = data.counts[layer][item] / max(data.tokens[item], 1)
    return float(frequency @ fitted[layer])


@torch.inference_mode()
def _count(
    model: LoadedModel,
    items: list[Tokenized],
    layers: list[int],
    batch: int,
    progress: bool,
    units: dict[int, torch.Tensor],
) -> _Counts:
    data = _Counts({la: {} for la in layers})
    pad = pad_id_of(model.tokenizer)
    top_k = _top_k(model)
    order = sorted(range(len(items)), key=lambda i: -len(items[i].ids))
    for start in tqdm(range(0, len(order), batch), desc="experts", disable=not progress, leave=False):
        chunk = order[start : start + batch]
        ids, mask, positions, offsets = pad_batch([items[i].ids for i in chunk], pad, "right", model.device)
        chosen, inputs = _route(model, ids, mask, positions, layers, top_k)
        for la, picks in chosen.items():
            per_row = picks.reshape(ids.shape[0], ids.shape[1], -1).cpu()
            states = inputs[la].reshape(ids.shape[0], ids.shape[1], -1).float().cpu() if la in units else None
            experts = _experts_at(model, la)
            for r, item in enumerate(chunk):
                it, off = items[item], offsets[r]
                span = per_row[r, off + it.read_start : off + it.read_end]
                data.counts[la][item] = torch.bincount(span.reshape(-1), minlength=experts).float()
                data.tokens[item] = it.read_end - it.read_start
                if states is not None:
                    projected = states[r, off + it.read_start : off + it.read_end] @ units[la]
                    _add_projections(data, la, item % 2, span, projected, experts)
    return data


def _add_projections(
    data: _Counts, layer: int, side: int, picks: torch.Tensor, projected: torch.Tensor, experts: int
) -> None:
    """Add each token's projection to the count, sum and sum of squares of every expert it was routed to."""
    stats = data.projections.setdefault(layer, {}).setdefault(side, torch.zeros(3, experts))
    values = projected.unsqueeze(1).expand_as(picks).reshape(-1)
    index = picks.reshape(-1)
    stats[0].index_add_(0, index, torch.ones_like(values))
    stats[1].index_add_(0, index, values)
    stats[2].index_add_(0, index, values**2)


def _experts_at(model: LoadedModel, layer: int) -> int:
    weight = router_weight(model.anatomy.routers[layer], model.hidden_size)
    assert weight is not None  # anatomy keeps only modules that have one
    return int(weight.shape[0])


def _top_k(model: LoadedModel) -> int | None:
    config: Any = getattr(model.hf_model, "config", None)
    getter = getattr(config, "get_text_config", None)
    config = getter() if callable(getter) else config
    for key in ("num_experts_per_tok", "moe_topk", "top_k", "num_selected_experts"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def _route(
    model: LoadedModel,
    ids: torch.Tensor,
    mask: torch.Tensor,
    positions: torch.Tensor,
    layers: list[int],
    top_k: int | None,
) -> tuple[dict[int, torch.Tensor], dict[int, torch.Tensor]]:
    """One forward up to the deepest router asked for: block -> [tokens, k] selected expert indices, and block ->
    the router's input."""
    chosen: dict[int, torch.Tensor] = {}
    inputs: dict[int, torch.Tensor] = {}
    active: list[RouterLogits] = []
    handles = []

    def reader(layer: int, router: torch.nn.Module) -> tuple[Any, Any]:
        weight = router_weight(router, model.hidden_size)
        assert weight is not None

        def pre(_module: torch.nn.Module, args: Any) -> None:
            inputs[layer] = args[0]
            mode = RouterLogits(weight.shape)
            mode.__enter__()
            active.append(mode)

        def post(_module: torch.nn.Module, _args: Any, output: Any) -> None:
            mode = active.pop()
            mode.__exit__(None, None, None)
            mode.finish(router)
            assert mode.logits is not None
            chosen[layer] = selected_experts(output, mode.logits, top_k)
            if layer == layers[-1]:
                raise _StopForward

        return pre, post

    try:
        for layer in layers:
            router = model.anatomy.routers[layer]
            pre, post = reader(layer, router)
            handles += [router.register_forward_pre_hook(pre), router.register_forward_hook(post)]
        model.hf_model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False)
    except _StopForward:
        pass
    finally:
        while active:  # a router that raised left its mode on torch's stack
            active.pop().__exit__(None, None, None)
        for handle in handles:
            handle.remove()
    return chosen, inputs
