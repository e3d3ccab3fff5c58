"""Heatmaps of the interference report: cosines and cross-effects, one panel per matrix."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch

Panel = tuple[str, list[list[float]], tuple[float, float] | None]  # title, matrix, colour limits (None: symmetric)

__all__ = ["Panel", "save_heatmaps"]


def save_heatmaps(names: Sequence[str], panels: Sequence[Panel], title: str, path: Path) -> Path:
    """One heatmap per panel, rows and columns labelled by `names`. Drawn with the Agg backend."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n = len(names)
    figure = Figure(figsize=(5.2 * len(panels), 0.55 * n + 3.2))
    FigureCanvasAgg(figure)
    for k, (heading, matrix, limits) in enumerate(panels):
        axes = figure.add_subplot(1, len(panels), k + 1)
        values = torch.tensor(matrix, dtype=torch.float32)
        if limits is None:
            peak = float(values.nan_to_num(0).abs().max().clamp_min(1e-6))
            limits = (-peak, peak)
        image = axes.imshow(values.numpy(), cmap="RdBu_r", vmin=limits[0], vmax=limits[1])
        axes.set_xticks(range(n), names, rotation=45, ha="right")
        axes.set_yticks(range(n), names)
        axes.set_title(heading, fontsize=9)
        for i in range(n):
            for j in range(n):
                value = matrix[i][j]
                axes.text(j, i, "-" if math.isnan(value) else f"{value:.2f}", ha="center", va="center", fontsize=7)
        figure.colorbar(image, ax=axes, shrink=0.8)
    figure.suptitle(title)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    return path
