"""Evaluation items and their loaders: A/B questions, minimal pairs, multiple choice, labelled sentences, prompts.

Every loader accepts the public formats of the datasets in ../shared/datasets and the same shapes from users' files.
"""

from __future__ import annotations

import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from steerlab.errors import SteerlabError
from steerlab.pairs import read_records as read_record_file

T = TypeVar("T")
LETTERS = "ABCDEFGHIJ"


@dataclass(frozen=True)
class ABItem:
    """A question with two answers; `matching` shows the behaviour (e.g. "(A)" or " Yes")."""

    question: str
    matching: str
    not_matching: str


@dataclass(frozen=True)
class MinimalPair:
    """Two completions of one prompt that differ minimally; `more` is the behaviour side (e.g. the stereotyped one)."""

    prompt: str
    more: str
    less: str


@dataclass(frozen=True)
class MCQItem:
    question: str
    choices: tuple[str, ...]
    answer: int


@dataclass(frozen=True)
class Labelled:
    """A sentence and whether it shows the behaviour (formal, positive, ...)."""

    text: str
    positive: bool


# The folders the seed suite reads; the full datasets hold more (anthropic-evals/, repe/, ...).
SUITE_FOLDERS = ("caa", "crows-pairs", "formality-pavlick", "mmlu-law", "refusal-direction", "sst")


def datasets_root(needs: Sequence[str] = SUITE_FOLDERS) -> Path:
    """The full evaluation datasets: $STEERLAB_DATASETS, else ../shared/datasets beside the repository or the working
    directory. Only the benchmarks, `make starter-pack` and `steerlab bench --suite seed` read them (the tests read the
    slices in tests/data/datasets), so a missing folder is an error that says where it looked and how to get them."""
    env = os.environ.get("STEERLAB_DATASETS")
    # A folder the user names is the one they mean: never fall back from it to another one silently.
    candidates = [Path(env)] if env else _default_roots()
    for folder in candidates:
        if all((folder / name).is_dir() for name in needs):
            return folder
    raise SteerlabError(_missing_message(candidates, needs, from_env=bool(env)))


def _default_roots() -> list[Path]:
    beside_repo = Path(__file__).resolve().parents[3].parent / "shared" / "datasets"
    beside_cwd = Path.cwd().resolve().parent / "shared" / "datasets"
    return [beside_repo] if beside_cwd == beside_repo else [beside_repo, beside_cwd]


def _missing_message(looked: Sequence[Path], needs: Sequence[str], from_env: bool) -> str:
    where = " or ".join(str(p) for p in looked) + (" ($STEERLAB_DATASETS)" if from_env else "")
    folders = ", ".join(f"{name}/" for name in needs)
    return (
        f"cannot find the full evaluation datasets: looked for {folders} in {where}. Set STEERLAB_DATASETS to a "
        "folder that has them (the project's datasets live in ../shared/datasets beside the clone; each folder's "
        "SOURCE.md says where its data comes from). Only the benchmarks, `make starter-pack` and "
        "`steerlab bench --suite seed` need them; tests/data/datasets holds small slices of the same layout for a "
        "smoke run."
    )


def read_records(path: Path) -> list[dict[str, Any]]:
    """Records from .jsonl, .json (a list, or {'data'|'pairs'|'items': [...]}), .csv/.tsv, or .txt (a prompt a line)."""
    if not path.exists():
        raise SteerlabError(f"data file {path} does not exist.")
    suffix = path.suffix.lower()
    if suffix == ".txt":
        return [{"prompt": line.strip()} for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if suffix not in (".jsonl", ".json", ".csv", ".tsv"):
        raise SteerlabError(f"unsupported data file type {suffix!r} for {path}: use .jsonl, .json, .csv, .tsv or .txt.")
    return read_record_file(path, list_keys=("data", "pairs", "items"))


def _need(record: dict[str, Any], keys: Sequence[str], path: Path, what: str) -> None:
    missing = [k for k in keys if k not in record]
    if missing:
        raise SteerlabError(f"{path}: a record lacks {missing} for {what}; it has {sorted(record)}.")


def load_ab(path: Path) -> list[ABItem]:
    """CAA / Anthropic evals: {question, answer_matching_behavior, answer_not_matching_behavior}."""
    keys = ("question", "answer_matching_behavior", "answer_not_matching_behavior")
    items = []
    for record in read_records(path):
        _need(record, keys, path, "A/B questions")
        items.append(ABItem(str(record[keys[0]]), str(record[keys[1]]), str(record[keys[2]])))
    return _nonempty(items, path)


def load_minimal_pairs(path: Path, prompt: str = "") -> list[MinimalPair]:
    """CrowS-Pairs (sent_more/sent_less), StereoSet (stereotype/anti_stereotype) or {prompt?, positive, negative}."""
    items = []
    for record in read_records(path):
        if "sent_more" in record:
            items.append(MinimalPair(prompt, str(record["sent_more"]), str(record["sent_less"])))
        elif "stereotype" in record:
            items.append(MinimalPair(prompt, str(record["stereotype"]), str(record["anti_stereotype"])))
        else:
            _need(record, ("positive", "negative"), path, "minimal pairs")
            items.append(
                MinimalPair(str(record.get("prompt", prompt)), str(record["positive"]), str(record["negative"]))
            )
    return _nonempty(items, path)


def load_mcq(path: Path) -> list[MCQItem]:
    """MMLU csv (question, choice0..3, answer index or letter) or JSON records with `choices` and `answer`."""
    items = []
    for record in read_records(path):
        _need(record, ("question", "answer"), path, "multiple choice")
        if "choices" in record:
            choices = tuple(str(c) for c in record["choices"])
        else:
            choices = tuple(str(record[k]) for k in sorted(record) if k.startswith("choice") and record[k] is not None)
        items.append(MCQItem(str(record["question"]), choices, _answer_index(record["answer"], len(choices), path)))
    return _nonempty(items, path)


def _answer_index(value: Any, n_choices: int, path: Path) -> int:
    text = str(value).strip()
    index = int(text) if text.isdigit() else LETTERS.find(text.upper()[:1])
    if not 0 <= index < n_choices or n_choices < 2:
        raise SteerlabError(f"{path}: answer {value!r} does not name one of {n_choices} choices.")
    return index


def load_labelled(path: Path, high: float = 0.7, low: float = 0.3) -> list[Labelled]:
    """{text, label}: a 0/1 label, or a score in [0, 1] kept only when >= high (positive) or <= low (negative)."""
    items = []
    for record in read_records(path):
        _need(record, ("text", "label"), path, "labelled sentences")
        score = float(record["label"])
        if score >= high or score <= low:
            items.append(Labelled(str(record["text"]), score >= high))
    return _nonempty(items, path)


def load_prompts(path: Path) -> list[str]:
    """Open prompts: .txt lines, or records with `prompt`, `question` or `instruction`."""
    prompts = []
    for record in read_records(path):
        text = record.get("prompt", record.get("question", record.get("instruction")))
        if text is None:
            raise SteerlabError(f"{path}: a record has no prompt/question/instruction field; it has {sorted(record)}.")
        prompts.append(str(text))
    return _nonempty(prompts, path)


def _nonempty(items: list[T], path: Path) -> list[T]:
    if not items:
        raise SteerlabError(f"{path} holds no usable items.")
    return items


def shuffled(items: Sequence[T], seed: int) -> list[T]:
    out = list(items)
    random.Random(seed).shuffle(out)
    return out


def split_disjoint(items: Sequence[T], sizes: Sequence[int], seed: int) -> list[list[T]]:
    """Seeded shuffle, then consecutive slices of the given sizes: the parts never share an item."""
    if sum(sizes) > len(items):
        raise SteerlabError(f"asked for {sum(sizes)} items ({list(sizes)}), but the data has {len(items)}.")
    order, out, start = shuffled(items, seed), [], 0
    for size in sizes:
        out.append(order[start : start + size])
        start += size
    return out


def balanced_labelled(items: Sequence[Labelled], n: int, seed: int) -> list[Labelled]:
    """Up to n positives and n negatives, interleaved, so zipping them into pairs uses both sides evenly."""
    pos = shuffled([i for i in items if i.positive], seed)[:n]
    neg = shuffled([i for i in items if not i.positive], seed)[:n]
    return [x for pair in zip(pos, neg, strict=False) for x in pair]


# Open prompts for generation tasks (sentiment, formality, fluency). They are inputs, not results: short, neutral,
# and about everyday topics, so the steered property (tone, register) is free to vary.
NEUTRAL_PROMPTS = [
    "Tell me about your weekend.",
    "Describe the weather today.",
    "What do you think of the new library in town?",
    "Write a short note to a colleague about tomorrow's meeting.",
    "Describe a restaurant you visited recently.",
    "What is your opinion of public transport?",
    "Tell me about a movie you watched.",
    "Write a message to a friend about a trip.",
    "Describe your morning routine.",
    "What do you think about working from home?",
    "Write a few sentences about your neighbourhood.",
    "Tell me about a book you read.",
    "Describe a walk in the park.",
    "What did you think of the concert last night?",
    "Write a short reply to an email asking about a delivery.",
    "Describe your favourite season.",
    "Tell me about your job.",
    "What do you think of the local football team?",
    "Describe a typical Monday.",
    "Write a short review of a coffee shop.",
    "Tell me about a recent purchase.",
    "What is it like to learn a new language?",
    "Describe a family dinner.",
    "Write a note to your landlord about the heating.",
    "Tell me about a holiday you remember.",
    "What do you think of the new phone everyone is buying?",
    "Describe a day at the beach.",
    "Write a message declining an invitation to a party.",
    "Tell me about a game you played.",
    "Describe the city where you live.",
    "What do you think about social media?",
    "Write a short update for your team about a project.",
]
