"""The one greedy generation path: left-padded batches through Hugging Face's generate, steered or not.

generate() (the public API), the evaluation bench and interference all generate through `generate_ids`; the server's
continuous batcher runs its own decode loop but stops at the same `eos_ids`.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch

from steerlab.models import LoadedModel
from steerlab.plan import RowSteering, Steerable
from steerlab.prompts import end_of_turn_id, prompt_ids
from steerlab.steering import steer
from steerlab.tokens import pad_batch, pad_id_of, tokenizer_of

Steering = Steerable | Sequence[RowSteering] | None


def eos_ids(model: LoadedModel) -> set[int]:
    """Every id that ends a generation: the generation config's, the tokenizer's, and the chat template's end of turn.

    A model whose config names only <|endoftext|> still stops at <|im_end|> when its template ends turns with it.
    """
    found: set[int] = set()
    tok = model.tokenizer
    for source in (getattr(model.hf_model, "generation_config", None), tok):
        value = getattr(source, "eos_token_id", None)
        found.update([value] if isinstance(value, int) else [int(v) for v in value or []])
    end = end_of_turn_id(tok) if tok is not None else None
    return found | ({end} if end is not None else set())


def decode(model: LoadedModel, ids: Sequence[int]) -> str:
    return str(tokenizer_of(model).decode(list(ids), skip_special_tokens=True))


def _rows(steering: Steering, start: int, stop: int) -> Steering:
    """The steering for rows start:stop: a per-row list is sliced, one Vector or Kit applies to every row."""
    return list(steering[start:stop]) if isinstance(steering, list | tuple) else steering


def _context(model: LoadedModel, steering: Steering, scale: float | None) -> AbstractContextManager[Any]:
    if steering is None or (isinstance(steering, list | tuple) and all(s is None for s in steering)):
        return nullcontext()
    return steer(model, steering, scale=scale)


@torch.inference_mode()
def generate_ids(
    model: LoadedModel,
    prompts: Sequence[list[int]],
    steering: Steering = None,
    scale: float | None = None,
    max_new_tokens: int = 64,
    batch_size: int | None = None,
    details: list[dict[str, Any]] | None = None,
    **generate_kwargs: Any,
) -> list[list[int]]:
    """Each prompt's generated ids, cut before the first end token (greedy unless `generate_kwargs` say otherwise).

    `details`: a list that receives one record per prompt: whether its row was steered and, for conditional
    steering, each condition's score, threshold and decision (`Plan.report`)."""
    pad = pad_id_of(tokenizer_of(model))
    stops = eos_ids(model)
    kwargs: dict[str, Any] = {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
    kwargs.update(pad_token_id=pad, eos_token_id=sorted(stops) or None)
    kwargs.update(generate_kwargs)
    hf: Any = model.hf_model  # typed as nn.Module; generate() comes from transformers' GenerationMixin
    step = batch_size or max(len(prompts), 1)
    out: list[list[int]] = []
    for start in range(0, len(prompts), step):
        ids, mask, _, _ = pad_batch(list(prompts[start : start + step]), pad, "left", model.device)
        with _context(model, _rows(steering, start, start + step), scale) as plan:
            rows = hf.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, **kwargs)
        if details is not None:
            n = ids.shape[0]
            unsteered = [{"conditions": [], "steered": False} for _ in range(n)]
            details.extend(plan.report(n) if plan is not None else unsteered)
        for row in rows[:, ids.shape[1] :].tolist():
            out.append(row[: next((k for k, t in enumerate(row) if t in stops), len(row))])
    return out


def generate(
    model: LoadedModel,
    prompts: str | Sequence[str],
    steering: Steering = None,
    scale: float | None = None,
    max_new_tokens: int = 64,
    chat: bool = True,
    system: str | None = None,
    details: list[dict[str, Any]] | None = None,
    **generate_kwargs: Any,
) -> list[str]:
    """Texts generated for `prompts` (greedy unless told otherwise), steered by a Vector, Kit or per-row list.
    `details` (a list) receives one record per prompt: see `generate_ids`."""
    tok = tokenizer_of(model)
    batch = [prompts] if isinstance(prompts, str) else list(prompts)
    seqs = [prompt_ids(tok, p, system, chat=chat) for p in batch]
    generated = generate_ids(model, seqs, steering, scale, max_new_tokens, details=details, **generate_kwargs)
    return [decode(model, row) for row in generated]
