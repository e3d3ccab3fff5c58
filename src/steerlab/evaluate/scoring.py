"""How a condition runs the model: its prompt (steerlab.prompts), continuation log-probs, generation.

Steering always goes through steerlab.steer (one compiled plan per call); a LoRA condition swaps in another model.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from transformers import DynamicCache

from steerlab.errors import SteerlabError
from steerlab.generation import decode, generate_ids
from steerlab.kit import Kit
from steerlab.models import LoadedModel
from steerlab.prompts import Shot, prompt_ids
from steerlab.steering import steer
from steerlab.tokens import pad_id_of, tokenizer_of, two_block_layout


@dataclass(frozen=True)
class Setting:
    """One condition: optional steering kit, system instruction, k-shot turns, or a replacement (fine-tuned) model."""

    name: str
    steering: Kit | None = None
    system: str | None = None
    shots: tuple[Shot, ...] = ()
    model: LoadedModel | None = None

    def runner(self, base: LoadedModel) -> LoadedModel:
        return self.model or base

    def context(self, model: LoadedModel) -> AbstractContextManager[Any]:
        return steer(model, self.steering) if self.steering is not None else nullcontext()


PLAIN = Setting("unsteered")


def render_ids(model: LoadedModel, user: str, setting: Setting) -> list[int]:
    """Prompt token ids under `setting` (system, shots, user): the same renderer extraction and the server use."""
    return prompt_ids(tokenizer_of(model), user, setting.system, setting.shots)


def _batches(order: list[int], sizes: list[int], token_budget: int) -> Iterator[list[int]]:
    """Consecutive chunks of `order` whose padded size (rows x longest) stays under the token budget."""
    chunk: list[int] = []
    for index in order:
        longest = max([sizes[i] for i in chunk] + [sizes[index]])
        if chunk and longest * (len(chunk) + 1) > token_budget:
            yield chunk
            chunk = []
        chunk.append(index)
    if chunk:
        yield chunk


Row = tuple[int, int, list[int]]  # (request, continuation, its target tokens)


@torch.inference_mode()
def continuation_logprobs(
    base: LoadedModel,
    setting: Setting,
    requests: Sequence[tuple[str, Sequence[str]]],
    token_budget: int = 4096,
) -> list[list[float]]:
    """Summed log-probs of each continuation after its user prompt, under `setting`.

    Scored as the model would produce it: the prompt runs as a prefill, and the continuation's tokens run after it
    on the prompt's KV cache, as generated tokens. So a kit whose entries steer only "prompt" or only "generated"
    positions acts on the answer exactly as it would in generation (the first answer token is read off the prompt's
    last position, which generation also steers as a prompt token). Continuations that differ only in their last
    token (A/B letters, MCQ letters) share one row.
    """
    model = setting.runner(base)
    tok = model.tokenizer
    seqs: dict[tuple[tuple[int, ...], tuple[int, ...]], list[Row]] = {}
    for r, (user, conts) in enumerate(requests):
        prompt = tuple(render_ids(model, user, setting))
        if not prompt:
            raise SteerlabError(
                f"prompt {user!r} renders to no tokens; nothing would predict its answers' first token."
            )
        for c, cont in enumerate(conts):
            target = list(tok(cont, add_special_tokens=False)["input_ids"])
            if not target:
                raise SteerlabError(f"continuation {cont!r} renders to no tokens; every answer must be non-empty.")
            seqs.setdefault((prompt, tuple(target[:-1])), []).append((r, c, target))
    out = [[0.0] * len(conts) for _, conts in requests]
    keys = list(seqs)
    sizes = [len(p) + len(s) for p, s in keys]
    order = sorted(range(len(keys)), key=lambda i: -sizes[i])
    with setting.context(model):
        for chunk in _batches(order, sizes, token_budget):
            _score_chunk(model, [keys[i] for i in chunk], [seqs[keys[i]] for i in chunk], out)
    return out


def _score_chunk(
    model: LoadedModel,
    keys: list[tuple[tuple[int, ...], tuple[int, ...]]],
    wanted: list[list[Row]],
    out: list[list[float]],
) -> None:
    """Rows laid out [pad, prompt | pad, continuation]: the prompt block is a prefill, the rest runs on its cache."""
    ids, mask, positions, width = two_block_layout(keys, pad_id_of(model.tokenizer))
    ids, mask, positions = ids.to(model.device), mask.to(model.device), positions.to(model.device)
    cache = DynamicCache(config=getattr(model.hf_model, "config", None))
    first = model.hf_model(
        input_ids=ids[:, :width],
        attention_mask=mask[:, :width],
        position_ids=positions[:, :width],
        cache=cache,
        use_cache=True,
        logits_to_keep=1,
    ).logits
    logprobs = torch.log_softmax(first.float(), dim=-1)
    if ids.shape[1] > width:
        rest = model.hf_model(
            input_ids=ids[:, width:], attention_mask=mask, position_ids=positions[:, width:], cache=cache
        ).logits
        # Position 0: the prompt's last token; then the continuation block, whose left padding aligns every row's
        # continuation to end at the last position.
        logprobs = torch.cat([logprobs, torch.log_softmax(rest.float(), dim=-1)], dim=1)
    for row, group in enumerate(wanted):
        for r, c, target in group:
            span = torch.cat([logprobs[row, :1], logprobs[row, logprobs.shape[1] - len(target) + 1 :]])
            out[r][c] = float(span.gather(-1, torch.tensor(target, device=span.device).unsqueeze(-1)).sum())


def generate_texts(
    base: LoadedModel, setting: Setting, users: Sequence[str], max_new_tokens: int, batch_size: int = 16
) -> list[str]:
    """Greedy generations for each user prompt under `setting`, through the same path as steerlab.generate."""
    model = setting.runner(base)
    prompts = [render_ids(model, u, setting) for u in users]
    generated = generate_ids(model, prompts, setting.steering, max_new_tokens=max_new_tokens, batch_size=batch_size)
    return [decode(model, row) for row in generated]
