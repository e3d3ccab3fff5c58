"""The interference report as a picture: heatmaps of cosines and cross-effects."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from steerlab.interfere import InterferenceReport


def save_heatmaps(report: InterferenceReport, path: Path) -> Path:
    """Three panels: cosine, cosine after Gram-Schmidt, measured cross-effects. Drawn with the Agg backend."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = [
        ("cosine (mean over shared layers)", report.cosine, (-1.0, 1.0)),
        ("cosine after Gram-Schmidt", report.cosine_orthogonalized, (-1.0, 1.0)),
        ("cross-effect: row steered, column measured (held-out gaps)", report.cross_effect, None),
    ]
    if report.task_effects is not None:
        panels.append(("cross-effect on each column's task metric", report.task_effects.effect, None))
    n = len(report.names)
    figure = Figure(figsize=(5.2 * len(panels), 0.55 * n + 3.2))
    FigureCanvasAgg(figure)
    for k, (title, matrix, limits) in enumerate(panels):
        axes = figure.add_subplot(1, len(panels), k + 1)
        values = torch.tensor(matrix, dtype=torch.float32)
        if limits is None:
            peak = float(values.nan_to_num(0).abs().max().clamp_min(1e-6))
            limits = (-peak, peak)
        image = axes.imshow(values.numpy(), cmap="RdBu_r", vmin=limits[0], vmax=limits[1])
        axes.set_xticks(range(n), report.names, rotation=45, ha="right")
        axes.set_yticks(range(n), report.names)
        axes.set_title(title, fontsize=9)
        for i in range(n):
            for j in range(n):
                value = matrix[i][j]
                axes.text(j, i, "-" if math.isnan(value) else f"{value:.2f}", ha="center", va="center", fontsize=7)
        figure.colorbar(image, ax=axes, shrink=0.8)
    figure.suptitle(
        f"{report.settings.get('model', '')}: max axes {report.max_axes} ({', '.join(report.max_axes_set) or 'none'})"
    )
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    return path
