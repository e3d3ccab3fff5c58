"""Differentiable log-probs of each pair's two completions, with the prompt run once and its KV cache reused.

Trained methods score logp(completion | prompt) thousands of times with the graph kept (the steering direction
gets the gradient). A batch of pairs is laid out once as [left-padded prompt | left-padded suffix] per row, where the
suffix is the prompt's last token and the completion minus its last token (the positions whose logits predict the
completion). The prompt block runs once, unsteered, under no_grad; every scoring call runs only the suffix on a copy
of that cache, so steering (steerlab.steer's hooks, in their generated-tokens phase) acts where the completion is
read, and a training step costs a few tokens per row instead of the whole prompt. Sides whose rows are identical
(A/B letters: "(A" and "(B" share the row up to the letter) share one row, and the LM head runs on the suffix only.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import DynamicCache

from steerlab.errors import SteerlabError
from steerlab.models import LoadedModel
from steerlab.pairs import Pair, PairSet
from steerlab.prompts import tokenize_side
from steerlab.tokens import pad_id_of, two_block_layout


@dataclass(frozen=True)
class Target:
    """One side as scored: the prompt minus its last token, the suffix run each time, and the completion."""

    prefix: tuple[int, ...]
    suffix: tuple[int, ...]  # the prompt's last token + completion[:-1]; as long as the completion
    completion: tuple[int, ...]


@dataclass(frozen=True)
class TokenizedPair:
    positive: Target
    negative: Target


@dataclass
class ScoringBatch:
    """Pairs laid out as rows [pad, prefix | pad, suffix], with the prefix block's unsteered KV cache."""

    pairs: list[TokenizedPair]
    ids: torch.Tensor  # [R, P + K]
    mask: torch.Tensor  # [R, P + K]
    positions: torch.Tensor  # [R, P + K]
    width: int  # P, the prefix block
    rows: list[tuple[int, int]]  # each pair's (positive row, negative row)
    cache: Any = None  # the prefix block's KV cache; None when every prefix is empty

    def __len__(self) -> int:
        return len(self.pairs)


def check_preference_pairs(pairs: PairSet) -> None:
    """A preference objective compares two completions of one prompt; persona pairs share the completion."""
    if pairs.kind == "persona":
        raise SteerlabError(
            "trained methods compare the positive and negative completions of one prompt, but persona pairs share "
            "their completion and differ in the system instruction. Use completion pairs {prompt, positive, "
            "negative} or A/B questions, or method='mean_diff' for persona pairs."
        )


def _target(model: LoadedModel, pair: Pair, positive: bool, chat: bool) -> Target:
    side = pair.positive if positive else pair.negative
    tok = tokenize_side(model, side, "mean", chat)  # "mean" refuses a side without a completion
    if tok.read_start == 0:
        raise SteerlabError(
            "a pair side has no prompt tokens before its completion, so nothing predicts its first "
            "token; give the pairs a prompt or use the chat template."
        )
    cut = tok.read_start - 1
    return Target(tuple(tok.ids[:cut]), tuple(tok.ids[cut:-1]), tuple(tok.ids[tok.read_start :]))


def tokenize_pairs(model: LoadedModel, pairs: PairSet, chat: bool = True) -> list[TokenizedPair]:
    check_preference_pairs(pairs)
    return [TokenizedPair(_target(model, p, True, chat), _target(model, p, False, chat)) for p in pairs.pairs]


def _key(target: Target) -> tuple[tuple[int, ...], tuple[int, ...]]:
    return target.prefix, target.suffix


def prepare(model: LoadedModel, pairs: Sequence[TokenizedPair]) -> ScoringBatch:
    """Lay the pairs out and run their prefix block once (no_grad) to cache it."""
    index: dict[tuple[tuple[int, ...], tuple[int, ...]], int] = {}
    for pair in pairs:
        for t in (pair.positive, pair.negative):
            index.setdefault(_key(t), len(index))
    ids, mask, positions, width = two_block_layout(list(index), pad_id_of(model.tokenizer))
    rows = [(index[_key(p.positive)], index[_key(p.negative)]) for p in pairs]
    device = model.device
    batch = ScoringBatch(list(pairs), ids.to(device), mask.to(device), positions.to(device), width, rows)
    if width:
        batch.cache = DynamicCache(config=getattr(model.hf_model, "config", None))
        with torch.no_grad():
            model.hf_model(
                input_ids=batch.ids[:, :width],
                attention_mask=batch.mask[:, :width],
                position_ids=batch.positions[:, :width],
                cache=batch.cache,
                use_cache=True,
                logits_to_keep=1,
            )
    return batch


def suffix_logprobs(model: LoadedModel, batch: ScoringBatch) -> torch.Tensor:
    """[rows, suffix length, vocab] next-token log-probs over the suffix block, under whatever steering is active.

    Runs with the caller's grad mode: under torch.no_grad for references, with grad to train a direction.
    """
    width = batch.width
    keep = batch.ids.shape[1] - width
    # The model appends to the cache it is given: it gets a copy, and the batch's stays the unsteered prefix.
    cache = copy.deepcopy(batch.cache) if batch.cache is not None else None
    logits = model.hf_model(
        input_ids=batch.ids[:, width:],
        attention_mask=batch.mask,
        position_ids=batch.positions[:, width:],
        cache=cache,
        use_cache=cache is not None,
        logits_to_keep=keep,
    ).logits
    # At least float32 for the softmax; float64 models (the gradient check) keep their precision.
    return torch.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=-1)


def pair_logps(model: LoadedModel, batch: ScoringBatch) -> torch.Tensor:
    """[len(batch), 2] summed completion log-probs (positive, negative) under whatever steering is active."""
    logprobs = suffix_logprobs(model, batch)
    out = [
        torch.stack(
            [
                _completion_logp(logprobs[pos], p.positive.completion),
                _completion_logp(logprobs[neg], p.negative.completion),
            ]
        )
        for (pos, neg), p in zip(batch.rows, batch.pairs, strict=True)
    ]
    return torch.stack(out)


def _completion_logp(logprobs: torch.Tensor, completion: tuple[int, ...]) -> torch.Tensor:
    # The suffix is left-padded: its last len(completion) positions predict the completion's tokens.
    span = logprobs[logprobs.shape[0] - len(completion) :]
    index = torch.tensor(completion, device=span.device).unsqueeze(-1)
    return span.gather(-1, index).sum()
