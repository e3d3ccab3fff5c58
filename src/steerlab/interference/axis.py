"""What interference needs from one axis's benchmark, as a Protocol: the evaluation bench implements it
(steerlab.evaluate.axis_tasks), and so can anyone else, without this package importing the bench."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from steerlab.kit import Kit
from steerlab.models import LoadedModel

__all__ = ["AxisTask"]


@runtime_checkable
class AxisTask(Protocol):
    """What interference needs from one axis's benchmark: a metric scored per held-out item under some steering.

    It may also have a `goal` attribute (+1 or -1): the way steering the axis should move its metric. Without one
    (or 0), the max-axes search takes the sign of the axis's solo effect.
    """

    @property
    def metric(self) -> str:
        """Name of the per-item metric `score` returns (shown in the report)."""
        ...

    @property
    def source(self) -> str:
        """Where the items come from (a file, a dataset split), for the report."""
        ...

    @property
    def n_items(self) -> int:
        """How many held-out items `score` scores."""
        ...

    def score(self, model: LoadedModel, steering: Kit | None) -> list[float]:
        """The metric of every item, in a fixed order, under `steering` (None: unsteered); NaN for unscorable."""
        ...
