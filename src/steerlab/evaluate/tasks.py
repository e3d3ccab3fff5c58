"""The task registry: how each kind of data becomes extraction pairs, LoRA targets, shots, and per-item scores.

Convention: the steering vector always points to the behaviour side of the data (matching answer, stereotyped
sentence, correct answer, positive label). A run's `goal` (+1 or -1) says which way the user wants to move it;
calibrated scales carry that sign, and LoRA, shots and instructions are built for the goal side.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from steerlab.errors import SteerlabError
from steerlab.evaluate.data import LETTERS, ABItem, Labelled, MCQItem, MinimalPair
from steerlab.evaluate.fluency import fluency_scores
from steerlab.evaluate.scoring import Setting, Shot, continuation_logprobs, generate_texts
from steerlab.models import LoadedModel
from steerlab.pairs import PairSet

Scores = dict[str, list[float]]
SENTENCE_PROMPT = "Write one sentence."


def _answer_text(answer: str) -> str:
    """What the model is scored on and trained to say: "(A)" -> "(A" (as CAA reads it), " Yes" -> "Yes"."""
    text = answer.strip()
    cut = text.find(")")
    return text[:cut] if cut > 0 else text


def _normalised(lp_a: float, lp_b: float) -> float:
    top = max(lp_a, lp_b)
    return math.exp(lp_a - top) / (math.exp(lp_a - top) + math.exp(lp_b - top))


@dataclass
class Task:
    """Base: subclasses fill in the data-specific parts. `metric` is the primary metric the calibration moves."""

    kind: ClassVar[str] = ""
    metric: ClassVar[str] = ""
    generates: ClassVar[bool] = False
    max_new_tokens: int = 32

    def extraction_pairs(self, train: Sequence[Any]) -> PairSet:
        raise NotImplementedError

    def sft_examples(self, train: Sequence[Any], goal: int) -> list[Shot]:
        raise NotImplementedError

    def evaluate(self, base: LoadedModel, setting: Setting, items: Sequence[Any]) -> Scores:
        raise NotImplementedError

    def fluency_prompts(self, items: Sequence[Any]) -> list[str]:
        raise NotImplementedError

    def shots(self, train: Sequence[Any], goal: int, k: int) -> tuple[Shot, ...]:
        return tuple(self.sft_examples(train, goal)[:k])


@dataclass
class ABTask(Task):
    """A/B questions: mean P(answer matching the behaviour), normalised over the two answers."""

    kind: ClassVar[str] = "ab"
    metric: ClassVar[str] = "p_match"

    def extraction_pairs(self, train: Sequence[ABItem]) -> PairSet:
        records = [
            {
                "question": i.question,
                "answer_matching_behavior": i.matching,
                "answer_not_matching_behavior": i.not_matching,
            }
            for i in train
        ]
        return PairSet.from_records(records, source="bench:ab")

    def sft_examples(self, train: Sequence[ABItem], goal: int) -> list[Shot]:
        return [(i.question, _answer_text(i.matching if goal > 0 else i.not_matching)) for i in train]

    def evaluate(self, base: LoadedModel, setting: Setting, items: Sequence[ABItem]) -> Scores:
        requests = [(i.question, [_answer_text(i.matching), _answer_text(i.not_matching)]) for i in items]
        scores = continuation_logprobs(base, setting, requests)
        return {"p_match": [_normalised(a, b) for a, b in scores]}

    def fluency_prompts(self, items: Sequence[ABItem]) -> list[str]:
        return [i.question for i in items]


@dataclass
class PairLogprobTask(Task):
    """Minimal pairs: mean Δ log-prob (behaviour side − other side) and % of pairs preferring the behaviour side."""

    kind: ClassVar[str] = "pair-logprob"
    metric: ClassVar[str] = "delta_logprob"
    neutral_prompts: list[str] = field(default_factory=list)

    def extraction_pairs(self, train: Sequence[MinimalPair]) -> PairSet:
        records = [{"prompt": i.prompt or SENTENCE_PROMPT, "positive": i.more, "negative": i.less} for i in train]
        return PairSet.from_records(records, source="bench:pair-logprob")

    def sft_examples(self, train: Sequence[MinimalPair], goal: int) -> list[Shot]:
        return [(i.prompt or SENTENCE_PROMPT, i.more if goal > 0 else i.less) for i in train]

    def evaluate(self, base: LoadedModel, setting: Setting, items: Sequence[MinimalPair]) -> Scores:
        scores = continuation_logprobs(base, setting, [(i.prompt or SENTENCE_PROMPT, [i.more, i.less]) for i in items])
        deltas = [a - b for a, b in scores]
        return {"delta_logprob": deltas, "pct_prefer_more": [100.0 * (d > 0) for d in deltas]}

    def fluency_prompts(self, items: Sequence[MinimalPair]) -> list[str]:
        return self.neutral_prompts or [i.prompt or SENTENCE_PROMPT for i in items]


def mcq_prompt(item: MCQItem) -> str:
    options = "\n".join(f"{LETTERS[k]}. {choice}" for k, choice in enumerate(item.choices))
    return f"{item.question}\n{options}\nAnswer with the letter of the correct choice."


@dataclass
class MCQTask(Task):
    """Multiple choice: accuracy of the most likely answer letter, and normalised P(correct letter)."""

    kind: ClassVar[str] = "mcq"
    metric: ClassVar[str] = "accuracy"

    def extraction_pairs(self, train: Sequence[MCQItem]) -> PairSet:
        # Correct vs a wrong letter after the same question: a "knows the answer" direction, read at the letter.
        records = []
        for n, item in enumerate(train):
            wrong = (item.answer + 1 + n % (len(item.choices) - 1)) % len(item.choices)
            records.append(
                {
                    "question": mcq_prompt(item),
                    "answer_matching_behavior": LETTERS[item.answer],
                    "answer_not_matching_behavior": LETTERS[wrong],
                }
            )
        return PairSet.from_records(records, source="bench:mcq")

    def sft_examples(self, train: Sequence[MCQItem], goal: int) -> list[Shot]:
        if goal < 0:
            raise SteerlabError("the mcq task only supports goal +1 (more correct answers).")
        return [(mcq_prompt(i), LETTERS[i.answer]) for i in train]

    def evaluate(self, base: LoadedModel, setting: Setting, items: Sequence[MCQItem]) -> Scores:
        requests = [(mcq_prompt(i), [LETTERS[k] for k in range(len(i.choices))]) for i in items]
        scores = continuation_logprobs(base, setting, requests)
        accuracy, p_correct = [], []
        for item, lps in zip(items, scores, strict=True):
            top = max(lps)
            probs = [math.exp(lp - top) for lp in lps]
            accuracy.append(float(lps.index(top) == item.answer))
            p_correct.append(probs[item.answer] / sum(probs))
        return {"accuracy": accuracy, "p_correct": p_correct}

    def fluency_prompts(self, items: Sequence[MCQItem]) -> list[str]:
        return [mcq_prompt(i) for i in items]

    def shots(self, train: Sequence[MCQItem], goal: int, k: int) -> tuple[Shot, ...]:
        # The k shortest questions: law questions run to hundreds of tokens, and every shot is repeated in every
        # test prompt (measured: 4 professional-law shots made the few-shot condition 7x slower than the others).
        shortest = sorted(train, key=lambda i: len(mcq_prompt(i)))[:k]
        return tuple(self.sft_examples(shortest, goal))


Scorer = Callable[[Sequence[str]], list[float]]


def vader_scorer(texts: Sequence[str]) -> list[float]:
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    analyzer = SentimentIntensityAnalyzer()
    return [float(analyzer.polarity_scores(t)["compound"]) for t in texts]


def formality_scorer(texts: Sequence[str]) -> list[float]:
    from steerlab.evaluate.formality import train_judge

    return train_judge().prob_formal(texts)


SCORERS: dict[str, Scorer] = {"sentiment": vader_scorer, "formality": formality_scorer}


@dataclass
class ClassifyTask(Task):
    """Generations from open prompts, scored by an offline classifier (VADER sentiment, or the formality judge)."""

    kind: ClassVar[str] = "classify"
    generates: ClassVar[bool] = True
    scorer: str = "sentiment"

    @property
    def metric(self) -> str:  # type: ignore[override]
        return self.scorer

    def extraction_pairs(self, train: Sequence[Labelled]) -> PairSet:
        pos = [i.text for i in train if i.positive]
        neg = [i.text for i in train if not i.positive]
        if not pos or not neg:
            raise SteerlabError("classify needs labelled sentences of both classes to build pairs.")
        records = [{"prompt": SENTENCE_PROMPT, "positive": p, "negative": n} for p, n in zip(pos, neg, strict=False)]
        return PairSet.from_records(records, source=f"bench:classify:{self.scorer}")

    def sft_examples(self, train: Sequence[Labelled], goal: int) -> list[Shot]:
        return [(SENTENCE_PROMPT, i.text) for i in train if i.positive == (goal > 0)]

    def evaluate(self, base: LoadedModel, setting: Setting, items: Sequence[str]) -> Scores:
        if self.scorer not in SCORERS:
            raise SteerlabError(f"unknown classifier {self.scorer!r}: use one of {', '.join(SCORERS)}.")
        texts = generate_texts(base, setting, list(items), self.max_new_tokens)
        return {self.scorer: SCORERS[self.scorer](texts), **fluency_scores(base, list(items), texts)}

    def fluency_prompts(self, items: Sequence[str]) -> list[str]:
        return list(items)


@dataclass
class FluencyTask(Task):
    """Fluency alone: generations from open prompts, mean log-prob under the unsteered model and repetition."""

    kind: ClassVar[str] = "fluency"
    metric: ClassVar[str] = "fluency_logprob"
    generates: ClassVar[bool] = True

    def extraction_pairs(self, train: Sequence[Any]) -> PairSet:
        if isinstance(train, PairSet):
            return train
        return PairSet.from_records(train, source="bench:fluency")

    def sft_examples(self, train: Sequence[Any], goal: int) -> list[Shot]:
        return []

    def evaluate(self, base: LoadedModel, setting: Setting, items: Sequence[str]) -> Scores:
        texts = generate_texts(base, setting, list(items), self.max_new_tokens)
        return fluency_scores(base, list(items), texts)

    def fluency_prompts(self, items: Sequence[str]) -> list[str]:
        return list(items)


TASKS: dict[str, type[Task]] = {t.kind: t for t in (ABTask, PairLogprobTask, MCQTask, ClassifyTask, FluencyTask)}


def make_task(kind: str, **options: Any) -> Task:
    if kind not in TASKS:
        raise SteerlabError(f"unknown task {kind!r}: use one of {', '.join(TASKS)}.")
    return TASKS[kind](**options)
