"""Condition: a direction, a block and a threshold that say, per batch row, whether a prompt is of some kind.

A condition is read once per row, during prefill, at the output of block `layer` (before any steering at that block):
the row's prompt hidden states are reduced to one vector (`reading`: "mean" over the row's real prompt tokens, or
the "last" prompt token), projected on the unit `direction`, and the condition holds when the projection exceeds
`threshold`. Steering gated by it (`Kit.when`, `KitEntry(when=...)`) applies to that row from then on; rows where it
does not hold are left exactly as unsteered. `Condition.fit` chooses the block, direction and threshold on held-out
prompts (the arithmetic is steerlab.condition_fit's).

Saved like a Vector: safetensors with one tensor `condition.direction` and the card (site "condition") in the header.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import save as st_save

from steerlab import condition_fit
from steerlab.atomic import atomic_write
from steerlab.capture import read_batches
from steerlab.card import CARD_KEY, CONDITION_READINGS, CONDITION_SITE, CONDITION_TENSOR, Card, check_fingerprint
from steerlab.errors import SteerlabError
from steerlab.prompts import prompt_ids
from steerlab.tokens import Tokenized, tokenizer_of
from steerlab.vector import read_safetensors

Reading = Literal["mean", "last"]
READINGS = CONDITION_READINGS
TENSOR_KEY = CONDITION_TENSOR


@dataclass(eq=False)
class Condition:
    """Holds for a row when `reduce(prompt hidden states at block layer) . direction > threshold`."""

    direction: torch.Tensor
    layer: int
    threshold: float
    reading: Reading = "mean"
    card: Card = field(default_factory=Card)
    key: str = field(init=False, default="")  # content key: equal conditions gate together in one plan

    def __post_init__(self) -> None:
        if self.direction.ndim != 1 or self.direction.numel() == 0:
            shape = tuple(self.direction.shape)
            raise SteerlabError(f"a condition's direction must be a non-empty 1-D tensor; got shape {shape}.")
        if self.reading not in READINGS:
            raise SteerlabError(f"unknown condition reading {self.reading!r}: use one of {', '.join(READINGS)}.")
        if isinstance(self.layer, bool) or not isinstance(self.layer, int) or self.layer < 0:
            raise SteerlabError(f"a condition's layer must be a block index (an integer >= 0), got {self.layer!r}.")
        if not math.isfinite(float(self.threshold)):
            raise SteerlabError(f"a condition's threshold must be finite, got {self.threshold!r}.")
        self.threshold = float(self.threshold)
        self.direction = self.direction.detach().float().cpu()
        self.card.site = CONDITION_SITE
        self.card.hidden_size = self.card.hidden_size or int(self.direction.numel())
        self.card.metadata = {**self.card.metadata, "condition": self.settings()}
        self.key = hashlib.sha256(self.direction.numpy().tobytes() + json.dumps(self.settings()).encode()).hexdigest()

    @property
    def name(self) -> str:
        return self.card.name or f"condition@{self.layer}"

    @property
    def hidden_size(self) -> int:
        return int(self.direction.numel())

    @property
    def accuracy(self) -> float | None:
        """Test-split accuracy from `Condition.fit` (None for a hand-made condition)."""
        value = self.card.metadata.get("accuracy", {}).get("test")
        return float(value) if isinstance(value, int | float) else None

    def settings(self) -> dict[str, Any]:
        return {"layer": self.layer, "threshold": self.threshold, "reading": self.reading}

    def scores(self, hidden: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """[B] projections of each row's reduced prompt states; `valid` [B, T, 1] marks real tokens (None: all)."""
        states = hidden.float()
        if self.reading == "mean":
            if valid is None:
                reduced = states.mean(1)
            else:
                weights = valid.float()
                reduced = (states * weights).sum(1) / weights.sum(1).clamp_min(1.0)
        elif valid is None:
            reduced = states[:, -1]
        else:
            # The last real token of each row, wherever the padding is (left or right).
            positions = torch.arange(states.shape[1], device=states.device).view(1, -1)
            last = (valid[..., 0] > 0).long().mul(positions + 1).argmax(1)
            reduced = states[torch.arange(states.shape[0], device=states.device), last]
        return reduced @ self.direction.to(reduced.device)

    def holds(self, scores: torch.Tensor) -> torch.Tensor:
        return scores > self.threshold

    def check_compatible(self, model: Any) -> None:
        if self.hidden_size != model.hidden_size:
            raise SteerlabError(
                f"condition {self.name} has hidden size {self.hidden_size}, model {model.name} has "
                f"{model.hidden_size}: fit the condition on this model (Condition.fit)."
            )
        if self.layer >= model.n_layers:
            raise SteerlabError(
                f"condition {self.name} reads block {self.layer}, but {model.name} has blocks 0..{model.n_layers - 1}."
            )
        check_fingerprint(self.card, model, f"condition {self.name}")

    def describe(self) -> dict[str, Any]:
        """What an audit record says about the condition: name, content key and settings."""
        return {"name": self.name, "key": self.key[:16], **self.settings()}

    @classmethod
    def fit(
        cls,
        model: Any,
        positive: Sequence[str],
        negative: Sequence[str],
        layer: int | None = None,
        reading: Reading = "mean",
        seed: int = 0,
        chat: bool = True,
        system: str | None = None,
        batch_size: int = 16,
        name: str = "",
    ) -> Condition:
        """A condition that holds for prompts like `positive` and not for prompts like `negative`.

        Each side is split (seeded) into fit / tune / test parts (about 50 / 25 / 25%). Per block, the direction is
        the difference of the fit parts' means, the threshold the best cut on the tune part; `layer` None chooses
        the block on the tune part too. `accuracy` (card.metadata["accuracy"]["test"]) is the balanced accuracy on
        the test part, which chose nothing. Prompts are rendered as `generate` renders them (chat template, system).
        """
        blocks = [layer] if layer is not None else list(range(model.n_layers))
        if any(b < 0 or b >= model.n_layers for b in blocks):
            raise SteerlabError(f"layer {layer} is not a block of {model.name}, which has 0..{model.n_layers - 1}.")
        if reading not in READINGS:
            raise SteerlabError(f"unknown condition reading {reading!r}: use one of {', '.join(READINGS)}.")
        splits = (condition_fit.split(len(positive), seed), condition_fit.split(len(negative), seed + 1))
        states = [_read(model, list(side), blocks, reading, chat, system, batch_size) for side in (positive, negative)]
        fits = []
        for block in blocks:
            pos, neg = states[0][block], states[1][block]
            fit_part = (pos[splits[0].fit], neg[splits[1].fit])
            tune_part = (pos[splits[0].tune], neg[splits[1].tune])
            fits.append(condition_fit.fit_layer(block, fit_part, tune_part))
        best = condition_fit.choose(fits)
        test_pos = states[0][best.layer][splits[0].test] @ best.direction
        test_neg = states[1][best.layer][splits[1].test] @ best.direction
        accuracy = {
            "fit": best.fit_accuracy,
            "tune": best.tune_accuracy,
            "test": condition_fit.balanced_accuracy(test_pos, test_neg, best.threshold),
        }
        card = Card(
            base_model=model.name,
            model_fingerprint=model.fingerprint,
            hidden_size=model.hidden_size,
            n_layers=model.n_layers,
            method="mean_diff",
            position=reading,
            n_pairs=min(len(positive), len(negative)),
            name=name,
            diagnostics={
                f.layer: {"tune_accuracy": f.tune_accuracy, "fit_accuracy": f.fit_accuracy, "separation": f.separation}
                for f in fits
            },
            metadata={
                "accuracy": accuracy,
                "split": {"positive": _sizes(splits[0]), "negative": _sizes(splits[1]), "seed": seed},
            },
        )
        return cls(best.direction, best.layer, best.threshold, reading, card)

    # ----- IO -----
    def to_bytes(self) -> bytes:
        return st_save({TENSOR_KEY: self.direction.contiguous()}, metadata={CARD_KEY: self.card.to_json()})

    def content_hash(self) -> str:
        return hashlib.sha256(self.to_bytes()).hexdigest()

    def save(self, path: str | os.PathLike[str]) -> Path:
        return atomic_write(Path(path), self.to_bytes())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Condition:
        source = Path(path)
        if not source.is_file():
            raise SteerlabError(f"condition file {source} does not exist (make one with steerlab.Condition.fit).")
        return cls.from_bytes(source.read_bytes(), str(source))

    @classmethod
    def from_bytes(cls, data: bytes, origin: str = "bytes") -> Condition:
        tensors, meta = read_safetensors(data, origin, "condition")
        try:
            card = Card.from_json(meta[CARD_KEY])
        except (KeyError, ValueError, TypeError) as exc:
            raise SteerlabError(f"{origin} has no readable condition card: {exc}") from exc
        settings = card.metadata.get("condition")
        if card.site != CONDITION_SITE or not isinstance(settings, dict) or set(tensors) != {TENSOR_KEY}:
            raise SteerlabError(
                f"{origin} is not a condition (its card's site is {card.site!r}); a condition file holds one "
                f"'{TENSOR_KEY}' tensor and a card with site '{CONDITION_SITE}'."
            )
        try:
            layer, threshold, reading = settings["layer"], settings["threshold"], settings["reading"]
        except KeyError as exc:
            raise SteerlabError(f"{origin}: the condition's card lacks {exc} under metadata.condition.") from exc
        return cls(tensors[TENSOR_KEY], layer, threshold, reading, card)


def _sizes(part: condition_fit.Split) -> dict[str, int]:
    return {"fit": len(part.fit), "tune": len(part.tune), "test": len(part.test)}


def _read(
    model: Any, prompts: list[str], blocks: list[int], reading: Reading, chat: bool, system: str | None, batch: int
) -> dict[int, torch.Tensor]:
    """Block outputs reduced as the gate reduces them at run time: {block: [n, H] float32}, in prompt order."""
    tok = tokenizer_of(model)
    items = []
    for text in prompts:
        ids = prompt_ids(tok, text, system, chat=chat)
        items.append(Tokenized(ids, 0 if reading == "mean" else len(ids) - 1, len(ids)))
    out = {block: torch.zeros(len(items), model.hidden_size) for block in blocks}
    for chunk, acts in read_batches(model, items, blocks, batch, padding_side="left"):
        for block, rows in acts.items():
            out[block][chunk] = rows.cpu()
    return out
