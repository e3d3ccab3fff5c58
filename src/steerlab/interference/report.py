"""The interference report: what was measured, as a dataclass that saves itself as JSON (NaN -> null) or heatmaps."""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from steerlab.interference.cross_effects import TaskCrossEffects
from steerlab.interference.heldout import HeldOut

__all__ = ["Combo", "InterferenceReport"]


@dataclass
class Combo:
    axes: list[str]
    kept: dict[str, float]  # each axis's effect in the combination / its solo effect
    fluency: float
    fluency_ok: bool
    ok: bool
    holds: dict[str, bool] = field(default_factory=dict)  # each axis's effect still significant (task judge only)


@dataclass
class InterferenceReport:
    names: list[str]
    scales: list[float]
    cosine: list[list[float]]
    cosine_by_layer: dict[str, dict[int, float]]
    cosine_orthogonalized: list[list[float]]
    held_out: dict[str, HeldOut]  # residual axes only: an expert axis has no reading layer or held-out gap
    cross_effect: list[list[float]]  # [i][j]: steering axis i alone moves axis j's measure by this many gaps
    fluency_unsteered: float
    fluency_solo: dict[str, float]
    effective: list[str]
    combos: list[Combo]
    max_axes: int
    max_axes_set: list[str]
    search: str
    settings: dict[str, Any]
    prompts: list[str]
    samples: dict[str, list[str]] = field(default_factory=dict)
    task_effects: TaskCrossEffects | None = None  # cross-effects on each axis's task metric, when tasks were given
    router_axes: list[str] = field(default_factory=list)  # expert axes (router-logit offsets)
    notes: list[str] = field(default_factory=list)  # what was skipped and why, for the reader of the report

    def to_dict(self) -> dict[str, Any]:
        return _json_safe(asdict(self))

    def save_json(self, path: str | os.PathLike[str]) -> Path:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        return target

    def save_png(self, path: str | os.PathLike[str]) -> Path:
        from steerlab.interference.plot import Panel, save_heatmaps  # matplotlib only when a picture is asked for

        panels: list[Panel] = [
            ("cosine (mean over shared layers)", self.cosine, (-1.0, 1.0)),
            ("cosine after Gram-Schmidt", self.cosine_orthogonalized, (-1.0, 1.0)),
            ("cross-effect: row steered, column measured (held-out gaps)", self.cross_effect, None),
        ]
        if self.task_effects is not None:
            panels.append(("cross-effect on each column's task metric", self.task_effects.effect, None))
        chosen = ", ".join(self.max_axes_set) or "none"
        title = f"{self.settings.get('model', '')}: max axes {self.max_axes} ({chosen})"
        return save_heatmaps(self.names, panels, title, Path(path))


def _json_safe(value: Any) -> Any:
    """NaN becomes null (JSON has no NaN); dict keys become strings."""
    if isinstance(value, float):
        return None if math.isnan(value) else value
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value
