"""Direction-finding methods: small functions from one layer's activations to a direction, in a registry.

Trained methods (e.g. "preference") need the whole model, not one layer's activations: they register a trainer,
(model, pairs, layers=..., position=..., batch_size=..., chat=..., progress=..., name=..., seed=..., **options)
-> Vector, from their own module, which is imported the first time its name is asked for.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib import import_module
from typing import Any

import torch

from steerlab.errors import SteerlabError


@dataclass
class LayerData:
    """What a method sees for one layer: the mean difference always; per-pair activations if it asked for them."""

    mean_diff: torch.Tensor  # [H] mean(positive) - mean(negative)
    positive: torch.Tensor | None = None  # [N, H]
    negative: torch.Tensor | None = None  # [N, H]


@dataclass(frozen=True)
class Method:
    fn: Callable[[LayerData], torch.Tensor]
    needs_examples: bool


METHODS: dict[str, Method] = {}
Trainer = Callable[..., Any]  # returns a Vector; Any keeps this module free of the vector/model imports
TRAINERS: dict[str, Trainer] = {}
# A trainer's effective settings (its config's defaults filled in from the options given), so a bench run can record
# them and `--resume` notices when a library default changed between runs.
TRAINER_SETTINGS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {}
TRAINER_MODULES = {"preference": "steerlab.preference"}  # imported on first use: they import torch-heavy paths


def register(name: str, needs_examples: bool) -> Callable[[Callable[[LayerData], torch.Tensor]], Callable]:
    def wrap(fn: Callable[[LayerData], torch.Tensor]) -> Callable[[LayerData], torch.Tensor]:
        METHODS[name] = Method(fn, needs_examples)
        return fn

    return wrap


def register_trainer(
    name: str, settings: Callable[[dict[str, Any]], dict[str, Any]] | None = None
) -> Callable[[Trainer], Trainer]:
    def wrap(fn: Trainer) -> Trainer:
        TRAINERS[name] = fn
        if settings is not None:
            TRAINER_SETTINGS[name] = settings
        return fn

    return wrap


def effective_settings(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """The settings method `name` runs with given `options`: a trainer's full config, else the options as given."""
    if get_trainer(name) is None or name not in TRAINER_SETTINGS:
        return dict(options)
    return TRAINER_SETTINGS[name](options)


def method_names() -> list[str]:
    return sorted({*METHODS, *TRAINER_MODULES, *TRAINERS})


def get_trainer(name: str) -> Trainer | None:
    """The trainer registered under `name`, or None for a direction method."""
    if name not in TRAINERS and name in TRAINER_MODULES:
        import_module(TRAINER_MODULES[name])
    return TRAINERS.get(name)


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise SteerlabError(f"unknown extraction method {name!r}: use one of {', '.join(method_names())}.")
    return METHODS[name]


def _scaled_like_mean_diff(unit: torch.Tensor, mean_diff: torch.Tensor) -> torch.Tensor:
    """Orient `unit` with the mean difference and give it that difference's length along it,
    so scales mean the same across methods."""
    along = torch.dot(unit, mean_diff)
    return unit * along if along != 0 else unit * mean_diff.norm()


@register("mean_diff", needs_examples=False)
def mean_diff(data: LayerData) -> torch.Tensor:
    return data.mean_diff


@register("pca_diff", needs_examples=True)
def pca_diff(data: LayerData) -> torch.Tensor:
    """First right singular vector of the (uncentred) per-pair differences.

    Uncentred on purpose: centring would subtract the very mean difference that carries the concept.
    """
    assert data.positive is not None and data.negative is not None
    diffs = (data.positive - data.negative).double()
    _, _, vh = torch.linalg.svd(diffs, full_matrices=False)
    return _scaled_like_mean_diff(vh[0], data.mean_diff.double()).float()


@register("probe", needs_examples=True)
def probe(data: LayerData, l2: float = 1e-2, steps: int = 100) -> torch.Tensor:
    """Logistic-regression weight on standardised activations, mapped back to activation space."""
    assert data.positive is not None and data.negative is not None
    x = torch.cat([data.positive, data.negative]).double()
    y = torch.cat([torch.ones(len(data.positive)), torch.zeros(len(data.negative))]).double()
    mu, sd = x.mean(0), x.std(0).clamp_min(1e-6)
    z = (x - mu) / sd
    w = torch.zeros(x.shape[1], dtype=torch.double, requires_grad=True)
    b = torch.zeros((), dtype=torch.double, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(z @ w + b, y) + l2 * (w * w).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    raw = w.detach() / sd
    unit = raw / raw.norm().clamp_min(1e-12)
    return _scaled_like_mean_diff(unit, data.mean_diff.double()).float()
