"""The fluency anchor of preference training: keep the steered model's next-token distribution near the unsteered
one on text the unsteered model writes itself.

The preference objective only looks at the pairs' completions (for A/B pairs, one letter), so nothing in it stops
a direction from wrecking everything else the model says; the bench's fluency budget then rules it out at any dose
that moves the behaviour. The anchor is the pairs' own prompts with the unsteered model's greedy continuation, scored
as generated tokens after the prompt (where the vector acts), and the penalty is KL(unsteered || steered) per token,
averaged over the continuation tokens and both signs of the vector.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from steerlab.generation import generate_ids
from steerlab.models import LoadedModel
from steerlab.pair_scoring import ScoringBatch, Target, TokenizedPair, prepare, suffix_logprobs
from steerlab.pairs import PairSet
from steerlab.prompts import prompt_ids
from steerlab.tokens import tokenizer_of


@dataclass
class Anchor:
    """Prompt + unsteered continuation rows, their unsteered log-probs and a mask of the continuation positions."""

    batch: ScoringBatch
    reference: torch.Tensor  # [R, K, V] unsteered log-probs over the suffix block
    mask: torch.Tensor  # [R, K] 1 where a continuation token is predicted


@torch.no_grad()
def build_anchor(model: LoadedModel, pairs: PairSet, count: int, tokens: int, chat: bool = True) -> Anchor | None:
    """The first `count` distinct prompts of `pairs` with `tokens` greedy unsteered tokens each (None if none)."""
    tok = tokenizer_of(model)
    seen: dict[tuple[int, ...], None] = {}
    for pair in pairs.pairs:
        side = pair.positive
        seen.setdefault(tuple(prompt_ids(tok, side.user, side.system, chat=chat)), None)
        if len(seen) == count:
            break
    prompts = [list(p) for p in seen if len(p) >= 2]
    continuations = generate_ids(model, prompts, None, max_new_tokens=tokens) if prompts else []
    rows = [(p, c) for p, c in zip(prompts, continuations, strict=True) if c]
    if not rows:
        return None
    targets = [Target(tuple(p[:-1]), (p[-1], *c[:-1]), tuple(c)) for p, c in rows]
    batch = prepare(model, [TokenizedPair(t, t) for t in targets])
    keep = batch.ids.shape[1] - batch.width
    mask = torch.zeros(len(targets), keep, device=batch.ids.device)
    for (row, _), t in zip(batch.rows, targets, strict=True):
        mask[row, keep - len(t.completion) :] = 1
    return Anchor(batch, suffix_logprobs(model, batch), mask)


def anchor_kl(model: LoadedModel, anchor: Anchor) -> torch.Tensor:
    """Mean per-token KL(unsteered || steered) over the anchor's continuations, under whatever steering is active."""
    steered = suffix_logprobs(model, anchor.batch)
    per_token = (anchor.reference.exp() * (anchor.reference - steered)).sum(-1)
    return (per_token * anchor.mask).sum() / anchor.mask.sum()
