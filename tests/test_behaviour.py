"""Behaviour on the default model with real data (the committed dataset slices): steering moves what it should."""

from __future__ import annotations

import json
from contextlib import nullcontext

import pytest
import torch

from steerlab import PairSet, extract, generate, steer
from steerlab.prompts import render
from steerlab.tokens import pad_batch, pad_id_of

pytestmark = pytest.mark.slow

# Everyday prompts with room to move both ways: the unsteered model answers them neither glowing nor gloomy.
NEUTRAL_PROMPTS = [
    "Describe your commute to work this morning.",
    "Write about a Tuesday afternoon at the office.",
    "Tell me about the last time you waited in a long line.",
    "What happened when your phone battery died?",
    "Describe the sound of rain on the window.",
    "Write a note about the leftovers in the fridge.",
]


def _vader(texts: list[str]) -> float:
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    analyzer = SentimentIntensityAnalyzer()
    return sum(analyzer.polarity_scores(t)["compound"] for t in texts) / len(texts)


def test_happy_sad_vector_moves_sentiment_of_held_out_generations(default_model, datasets) -> None:
    emotions = datasets / "repe" / "emotions"
    happy = json.loads((emotions / "happiness.json").read_text())[:40]
    sad = json.loads((emotions / "sadness.json").read_text())[:40]
    prompt = "Tell me about something that happened to you recently."
    pairs = PairSet.from_records(
        [{"prompt": prompt, "positive": h, "negative": s} for h, s in zip(happy, sad, strict=True)]
    )
    vector = extract(default_model, pairs, layers=range(8, 19), progress=False)
    vector = vector.select(vector.layers)  # steer all of 8-18, not only the card's recommended layers
    scores = {
        scale: _vader(generate(default_model, NEUTRAL_PROMPTS, steering=vector, scale=scale, max_new_tokens=24))
        for scale in (-0.8, 0.0, 0.8)
    }
    assert scores[0.8] > scores[0.0] > scores[-0.8], scores
    assert scores[0.8] - scores[-0.8] > 0.3, scores


def _p_matching(model, items: list[dict], steering, scale: float) -> float:
    """Mean P(answer matching the behaviour), normalised over the two answer letters, read after '('."""
    tok = model.tokenizer
    letter_ids = {c: tok("(" + c, add_special_tokens=False)["input_ids"][-1] for c in "AB"}
    texts = [render(tok, item["question"]) + "(" for item in items]
    seqs = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    ids, mask, pos, _ = pad_batch(seqs, pad_id_of(tok), "left", model.device)
    ctx = steer(model, steering, scale=scale, layers=steering.layers) if steering is not None else nullcontext()
    with torch.inference_mode(), ctx:
        logits = model.hf_model(input_ids=ids, attention_mask=mask, position_ids=pos, logits_to_keep=1).logits[:, -1]
    probs = torch.softmax(logits[:, [letter_ids["A"], letter_ids["B"]]], dim=-1)
    matching = [0 if "A" in item["answer_matching_behavior"] else 1 for item in items]
    return float(probs[torch.arange(len(items)), torch.tensor(matching)].mean())


CAA_BEHAVIOUR = "sycophancy"


def test_caa_vector_moves_p_matching_on_the_ab_test_split(default_model, datasets) -> None:
    root = datasets / "caa"
    train = json.loads((root / "generate" / CAA_BEHAVIOUR / "generate_dataset.json").read_text())[:48]
    test = json.loads((root / "test" / CAA_BEHAVIOUR / "test_dataset_ab.json").read_text())
    assert not {t["question"] for t in test} & {t["question"] for t in train}, "extraction and test must not overlap"
    # On this 135M model the A/B choice moves only when early blocks are steered, and only from |scale| ~ 4 up
    # (measured: layers 2-7 give 0.44 / 0.49 / 0.56 at -4 / 0 / +4; at 8-15 nothing moves).
    vector = extract(default_model, PairSet.from_records(train), layers=range(2, 8), progress=False)
    p = {scale: _p_matching(default_model, test, vector if scale else None, scale) for scale in (-4.0, 0.0, 4.0)}
    assert p[4.0] > p[0.0] > p[-4.0], p
    assert p[4.0] - p[-4.0] > 0.05, p
