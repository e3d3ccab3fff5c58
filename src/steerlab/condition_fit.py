"""The arithmetic of fitting a condition: a three-way split, a direction per block, a threshold and a block choice.

The direction is fitted on the `fit` split (difference of class means), the threshold and the block are chosen on the
`tune` split, and the accuracy a condition reports is measured on the `test` split, which chose nothing.
Accuracies are balanced (the mean of the two classes' hit rates), so unequal class sizes do not flatter them.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass

import torch

from steerlab.errors import SteerlabError

MIN_PER_CLASS = 3  # one prompt each for fit, tune and test


@dataclass(frozen=True)
class Split:
    fit: list[int]
    tune: list[int]
    test: list[int]


@dataclass
class LayerFit:
    """One block's candidate: its unit direction, threshold and accuracies on each split."""

    layer: int
    direction: torch.Tensor
    threshold: float
    fit_accuracy: float
    tune_accuracy: float
    separation: float


def split(n: int, seed: int, fractions: tuple[float, float] = (0.5, 0.25)) -> Split:
    """A seeded three-way split of n items: `fractions` for fit and tune, the rest for test; none of them empty."""
    if n < MIN_PER_CLASS:
        raise SteerlabError(
            f"a condition needs at least {MIN_PER_CLASS} positive and {MIN_PER_CLASS} negative prompts (one each "
            f"to fit, tune and test it); got {n}. Give more prompts (a few dozen per side make a sound condition)."
        )
    order = list(range(n))
    random.Random(seed).shuffle(order)
    n_fit = min(max(1, round(fractions[0] * n)), n - 2)
    n_tune = min(max(1, round(fractions[1] * n)), n - n_fit - 1)
    return Split(order[:n_fit], order[n_fit : n_fit + n_tune], order[n_fit + n_tune :])


def balanced_accuracy(pos: torch.Tensor, neg: torch.Tensor, threshold: float) -> float:
    return float(((pos > threshold).float().mean() + (neg <= threshold).float().mean()) / 2)


def best_threshold(pos: torch.Tensor, neg: torch.Tensor, prior: float) -> float:
    """The cut between sorted scores with the best balanced accuracy; ties go to the cut nearest `prior`."""
    values = [float(v) for v in torch.cat([pos, neg]).unique(sorted=True)]
    cuts = [values[0] - 1.0, values[-1] + 1.0] + [(a + b) / 2 for a, b in itertools.pairwise(values)]
    return max(cuts, key=lambda cut: (balanced_accuracy(pos, neg, cut), -abs(cut - prior)))


def fit_layer(layer: int, fit: tuple[torch.Tensor, torch.Tensor], tune: tuple[torch.Tensor, torch.Tensor]) -> LayerFit:
    """Direction from the fit split's class means, threshold from the tune split. Rows are [n, H] float32."""
    mu_pos, mu_neg = fit[0].mean(0), fit[1].mean(0)
    unit = (mu_pos - mu_neg) / (mu_pos - mu_neg).norm().clamp_min(1e-12)
    fit_pos, fit_neg = fit[0] @ unit, fit[1] @ unit
    midpoint = float((mu_pos + mu_neg) @ unit / 2)
    tune_pos, tune_neg = tune[0] @ unit, tune[1] @ unit
    threshold = best_threshold(tune_pos, tune_neg, midpoint)
    spread = torch.cat([fit_pos - fit_pos.mean(), fit_neg - fit_neg.mean()])
    pooled = float(spread.std()) if spread.numel() > 1 else 0.0
    return LayerFit(
        layer=layer,
        direction=unit,
        threshold=threshold,
        fit_accuracy=balanced_accuracy(fit_pos, fit_neg, threshold),
        tune_accuracy=balanced_accuracy(tune_pos, tune_neg, threshold),
        separation=float(fit_pos.mean() - fit_neg.mean()) / max(pooled, 1e-6),
    )


def choose(fits: list[LayerFit]) -> LayerFit:
    """The block with the best tune accuracy, then fit accuracy, then separation; earlier blocks win exact ties
    (steering gated by a condition starts at its block, so an earlier one leaves more of the prompt steered)."""
    return max(fits, key=lambda f: (f.tune_accuracy, f.fit_accuracy, f.separation, -f.layer))
