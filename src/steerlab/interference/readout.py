"""One batch of rows: generate under each row's steering, then read the generated text back through the UNSTEERED
model (each axis's projection at its reading layer, and the mean log-probability of the generated tokens)."""

from __future__ import annotations

import math
from typing import Any

import torch

from steerlab.generation import generate_ids
from steerlab.kit import Kit
from steerlab.models import LoadedModel
from steerlab.prompts import prompt_ids
from steerlab.tokens import pad_batch, pad_id_of, tokenizer_of

__all__ = ["Row", "Scored", "Unit", "generate_rows", "score_rows"]

Row = tuple[list[int], list[int]]  # (prompt ids, generated ids up to the first end token)
Scored = tuple[list[float], float, int]  # (each axis's projection, mean log-prob, generated token count)
Unit = tuple[int, torch.Tensor] | None  # an axis's (reading block, unit direction); None: an expert axis, not read


def generate_rows(model: LoadedModel, prompts: list[str], steering: list[Kit | None], max_new_tokens: int) -> list[Row]:
    """(prompt ids, generated ids up to the first end token) per row, each row under its own steering."""
    tok = tokenizer_of(model)
    seqs = [prompt_ids(tok, p) for p in prompts]
    return list(zip(seqs, generate_ids(model, seqs, steering, max_new_tokens=max_new_tokens), strict=True))


@torch.inference_mode()
def score_rows(model: LoadedModel, rows: list[Row], units: list[Unit]) -> list[Scored]:
    """Per row: each axis's projection (mean over generated tokens; NaN for an axis with no unit), mean log-prob of
    those tokens, token count."""
    scored: list[Scored] = [([math.nan] * len(units), math.nan, 0) for _ in rows]
    live = [r for r, (_, gen) in enumerate(rows) if gen]
    if not live:
        return scored
    seqs = [rows[r][0] + rows[r][1] for r in live]
    ids, mask, positions, _ = pad_batch(seqs, pad_id_of(model.tokenizer), "right", model.device)
    captured: dict[int, torch.Tensor] = {}
    # Reading hooks, not steering: they copy block outputs of the unsteered model and change nothing.
    blocks = sorted({unit[0] for unit in units if unit is not None})
    handles = [model.layers[la].register_forward_hook(_reader(captured, la)) for la in blocks]
    try:
        logits = model.hf_model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False).logits
    finally:
        for handle in handles:
            handle.remove()
    for b, r in enumerate(live):
        start, gen = len(rows[r][0]), rows[r][1]
        span = slice(start, start + len(gen))
        logp = torch.log_softmax(logits[b, start - 1 : start - 1 + len(gen)].float(), dim=-1)
        fluency = float(logp.gather(-1, torch.tensor(gen, device=logp.device).unsqueeze(-1)).mean())
        measures = [_project(captured, unit, b, span) for unit in units]
        scored[r] = (measures, fluency, len(gen))
    return scored


def _project(captured: dict[int, torch.Tensor], unit: Unit, row: int, span: slice) -> float:
    if unit is None:
        return math.nan
    layer, direction = unit
    states = captured[layer][row, span].float().mean(0)
    return float(states @ direction.to(states.device))


def _reader(captured: dict[int, torch.Tensor], layer: int) -> Any:
    def hook(_module: torch.nn.Module, _args: Any, output: Any) -> None:
        captured[layer] = output[0] if isinstance(output, tuple) else output

    return hook
