"""generate(): chat-templated, left-padded batched generation under an optional steering spec."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from typing import Any

import torch

from steerlab.capture import pad_batch, pad_id_of
from steerlab.models import LoadedModel
from steerlab.pairs import render_prompt
from steerlab.plan import RowSteering, Steerable
from steerlab.steering import steer


def encode_prompts(
    model: LoadedModel, prompts: Sequence[str], chat: bool = True, system: str | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    tok = model.tokenizer
    templated = chat and bool(getattr(tok, "chat_template", None))
    texts = [render_prompt(tok, p, system, chat=chat) for p in prompts]
    seqs = [list(tok(t, add_special_tokens=not templated)["input_ids"]) for t in texts]
    ids, mask, positions, _ = pad_batch(seqs, pad_id_of(tok), "left", model.device)
    return ids, mask, positions


@torch.inference_mode()
def generate(
    model: LoadedModel,
    prompts: str | Sequence[str],
    steering: Steerable | Sequence[RowSteering] | None = None,
    scale: float = 1.0,
    max_new_tokens: int = 64,
    chat: bool = True,
    system: str | None = None,
    **generate_kwargs: Any,
) -> list[str]:
    """Texts generated for `prompts` (greedy unless told otherwise), steered by a Vector, Kit or per-row list."""
    batch = [prompts] if isinstance(prompts, str) else list(prompts)
    ids, mask, _ = encode_prompts(model, batch, chat=chat, system=system)
    kwargs: dict[str, Any] = {"do_sample": False, "pad_token_id": pad_id_of(model.tokenizer)}
    if not kwargs["do_sample"]:
        kwargs.update(temperature=None, top_p=None, top_k=None)
    kwargs.update(generate_kwargs)
    ctx = steer(model, steering, scale=scale) if steering is not None else nullcontext()
    with ctx:
        hf: Any = model.hf_model  # typed as nn.Module; generate() comes from transformers' GenerationMixin
        out = hf.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, **kwargs)
    return [model.tokenizer.decode(row[ids.shape[1] :], skip_special_tokens=True) for row in out]
