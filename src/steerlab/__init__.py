"""steerlab: extract, compose, share, evaluate and serve steering vectors for Hugging Face decoders."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from steerlab.errors import SteerlabError

if TYPE_CHECKING:
    from steerlab.extract import extract
    from steerlab.generate import generate
    from steerlab.kit import Kit, KitEntry
    from steerlab.models import LoadedModel, load_model, wrap_model
    from steerlab.pairs import PairSet
    from steerlab.plan import Plan, compile_plan
    from steerlab.steer import apply_plan, steer
    from steerlab.vector import Card, Vector

# Imported on first use: torch and transformers take seconds to import, and `steerlab --help`,
# `from steerlab.errors import ...` or the hub client should not pay for them.
_LAZY = {
    "Card": "steerlab.vector",
    "Vector": "steerlab.vector",
    "Kit": "steerlab.kit",
    "KitEntry": "steerlab.kit",
    "LoadedModel": "steerlab.models",
    "load_model": "steerlab.models",
    "wrap_model": "steerlab.models",
    "PairSet": "steerlab.pairs",
    "Plan": "steerlab.plan",
    "compile_plan": "steerlab.plan",
    "apply_plan": "steerlab.steer",
    "steer": "steerlab.steer",
    "extract": "steerlab.extract",
    "generate": "steerlab.generate",
}

__all__ = [
    "Card",
    "Kit",
    "KitEntry",
    "LoadedModel",
    "PairSet",
    "Plan",
    "SteerlabError",
    "Vector",
    "apply_plan",
    "compile_plan",
    "extract",
    "generate",
    "load_model",
    "steer",
    "wrap_model",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'steerlab' has no attribute {name!r}")
