"""Contrastive examples: the three formats, their loaders, and how each side becomes prompt + completion text."""

from __future__ import annotations

import csv
import hashlib
import json
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from steerlab.errors import SteerlabError

Kind = Literal["completion", "persona", "ab"]
ReadPosition = Literal["last", "mean", "answer"]
DEFAULT_POSITION: dict[str, ReadPosition] = {"completion": "mean", "persona": "last", "ab": "answer"}


@dataclass(frozen=True)
class Side:
    """One side of a pair: a user message (optionally under a system instruction) and what follows the prompt."""

    user: str
    completion: str = ""
    system: str | None = None


@dataclass(frozen=True)
class Pair:
    positive: Side
    negative: Side
    kind: Kind


def _ab_side(question: str, answer: str) -> Side:
    # CAA reads at the answer letter: the completion stops right after it, e.g. "(A".
    letter = answer.strip()
    cut = letter.find(")")
    return Side(user=question, completion=letter[:cut] if cut > 0 else letter)


def pair_from_record(record: Mapping[str, Any]) -> Pair:
    """Recognise a record's format from its keys."""
    keys = set(record)
    if {"question", "answer_matching_behavior", "answer_not_matching_behavior"} <= keys:
        q = str(record["question"])
        return Pair(
            _ab_side(q, str(record["answer_matching_behavior"])),
            _ab_side(q, str(record["answer_not_matching_behavior"])),
            "ab",
        )
    if {"positive_instruction", "negative_instruction"} <= keys:
        prompt, completion = str(record.get("prompt", "")), str(record.get("completion", ""))
        return Pair(
            Side(prompt, completion, str(record["positive_instruction"])),
            Side(prompt, completion, str(record["negative_instruction"])),
            "persona",
        )
    if {"positive", "negative"} <= keys:
        prompt = str(record.get("prompt", ""))
        return Pair(Side(prompt, str(record["positive"])), Side(prompt, str(record["negative"])), "completion")
    raise SteerlabError(
        f"unrecognised pair record with keys {sorted(keys)}. Use one of: "
        "{prompt, positive, negative} (completion pairs); "
        "{prompt, positive_instruction, negative_instruction[, completion]} (persona pairs); "
        "{question, answer_matching_behavior, answer_not_matching_behavior} (A/B questions)."
    )


@dataclass
class PairSet:
    """An ordered collection of contrastive pairs, all of one kind."""

    pairs: list[Pair]
    source: str = ""

    def __post_init__(self) -> None:
        if not self.pairs:
            raise SteerlabError(f"no pairs found{' in ' + self.source if self.source else ''}.")
        kinds = {p.kind for p in self.pairs}
        if len(kinds) > 1:
            raise SteerlabError(f"a PairSet must hold one format, found {sorted(kinds)}; split the file.")

    def __len__(self) -> int:
        return len(self.pairs)

    def __iter__(self) -> Iterable[Pair]:  # type: ignore[override]
        return iter(self.pairs)

    @property
    def kind(self) -> Kind:
        return self.pairs[0].kind

    @property
    def default_position(self) -> ReadPosition:
        return DEFAULT_POSITION[self.kind]

    @classmethod
    def from_records(cls, records: Iterable[Mapping[str, Any]], source: str = "") -> PairSet:
        return cls([pair_from_record(r) for r in records], source)

    @classmethod
    def load(cls, path: str | Path) -> PairSet:
        file = Path(path)
        if not file.exists():
            raise SteerlabError(f"pair file {file} does not exist.")
        return cls.from_records(read_records(file), str(file))

    def subset(self, indices: Sequence[int]) -> PairSet:
        return PairSet([self.pairs[i] for i in indices], self.source)

    def split(self, fraction: float, seed: int = 0) -> tuple[PairSet, PairSet]:
        """A seeded shuffle, then the first `fraction` and the rest."""
        order = list(range(len(self.pairs)))
        random.Random(seed).shuffle(order)
        cut = max(1, min(len(order) - 1, round(len(order) * fraction)))
        return self.subset(order[:cut]), self.subset(order[cut:])

    def content_hash(self) -> str:
        digest = hashlib.sha256()
        for pair in self.pairs:
            digest.update(
                json.dumps([pair.kind, pair.positive.__dict__, pair.negative.__dict__], sort_keys=True).encode()
            )
        return digest.hexdigest()[:16]


def read_records(file: Path, list_keys: Sequence[str] = ("pairs", "data")) -> list[dict[str, Any]]:
    """Records from .jsonl, .json (a list, or a dict holding one under the first of `list_keys`) or .csv/.tsv."""
    suffix = file.suffix.lower()
    try:
        if suffix == ".jsonl":
            lines = file.read_text(encoding="utf-8").splitlines()
            return [json.loads(line) for line in lines if line.strip()]
        if suffix == ".json":
            data = json.loads(file.read_text(encoding="utf-8"))
            if isinstance(data, dict):
                data = next((data[key] for key in list_keys if key in data), None)
            if not isinstance(data, list):
                raise SteerlabError(f"{file}: expected a JSON list of records (or {{'{list_keys[0]}': [...]}}).")
            return data
        if suffix in (".csv", ".tsv"):
            with file.open(newline="", encoding="utf-8") as handle:
                return list(csv.DictReader(handle, delimiter="\t" if suffix == ".tsv" else ","))
    except json.JSONDecodeError as exc:
        raise SteerlabError(f"{file} is not valid JSON: {exc}") from exc
    raise SteerlabError(f"unsupported pair file type {suffix!r} for {file}: use .jsonl, .json or .csv.")
