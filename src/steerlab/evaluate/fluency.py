"""Fluency of generated text: mean per-token log-prob under the unsteered model, and a repetition rate."""

from __future__ import annotations

import math
from collections.abc import Sequence

from steerlab.evaluate.scoring import PLAIN, continuation_logprobs
from steerlab.models import LoadedModel

NGRAM = 3


def repetition_rate(tokens: Sequence[int], n: int = NGRAM) -> float:
    """Share of n-grams that already occurred earlier in the same text (0 = none repeated, near 1 = a loop)."""
    grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    if not grams:
        return 0.0
    seen: set[tuple[int, ...]] = set()
    repeated = 0
    for gram in grams:
        repeated += gram in seen
        seen.add(gram)
    return repeated / len(grams)


def fluency_scores(base: LoadedModel, prompts: Sequence[str], texts: Sequence[str]) -> dict[str, list[float]]:
    """Per text: mean log-prob per token given the plain prompt (NaN for an empty text), and repetition rate.

    The judge is always the unsteered base model with no system prompt: a steered or fine-tuned model would
    grade its own output kindly.
    """
    tok = base.tokenizer
    token_lists = [list(tok(t, add_special_tokens=False)["input_ids"]) for t in texts]
    scorable = [i for i, ids in enumerate(token_lists) if ids]
    sums = continuation_logprobs(base, PLAIN, [(prompts[i], [texts[i]]) for i in scorable])
    logprob = [math.nan] * len(texts)
    for i, (total,) in zip(scorable, sums, strict=True):
        logprob[i] = total / len(token_lists[i])
    return {"fluency_logprob": logprob, "repetition": [repetition_rate(ids) for ids in token_lists]}
