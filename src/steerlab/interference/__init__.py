"""Interference between a kit's axes: geometry, measured cross-effects (activations and task metrics), max axes.

Below the evaluation bench: nothing here imports steerlab.evaluate. Tasks come in through the AxisTask Protocol.
"""

from steerlab.interference.cross_effects import AxisTask, TaskCrossEffects, task_cross_effects
from steerlab.interference.geometry import cosine_by_layer, cosine_matrix, orthogonalize_kit
from steerlab.interference.heldout import HeldOut, calibrate
from steerlab.interference.measure import measure_interference
from steerlab.interference.report import Combo, InterferenceReport

__all__ = [
    "AxisTask",
    "Combo",
    "HeldOut",
    "InterferenceReport",
    "TaskCrossEffects",
    "calibrate",
    "cosine_by_layer",
    "cosine_matrix",
    "measure_interference",
    "orthogonalize_kit",
    "task_cross_effects",
]
