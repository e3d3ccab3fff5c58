"""steerlab: extract, compose, share, evaluate and serve steering vectors for Hugging Face decoders.

The public names are imported on first use, so that `import steerlab` (and the CLI's `--help`) does not pay for torch
and transformers. No submodule shares a name with a public function, so a submodule imported first never hides one.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from steerlab.errors import SteerlabError

if TYPE_CHECKING:
    from steerlab.card import Card
    from steerlab.condition import Condition
    from steerlab.experts import extract_experts
    from steerlab.extraction import extract
    from steerlab.frontdoor import resolve
    from steerlab.generation import generate
    from steerlab.kit import Kit, KitEntry
    from steerlab.models import LoadedModel, load_model, wrap_model
    from steerlab.pairs import PairSet
    from steerlab.plan import Plan, compile_plan
    from steerlab.steering import apply_plan, steer
    from steerlab.vector import ExpertVector, Vector

_HOMES = {
    "Card": "steerlab.card",
    "Condition": "steerlab.condition",
    "ExpertVector": "steerlab.vector",
    "Kit": "steerlab.kit",
    "KitEntry": "steerlab.kit",
    "LoadedModel": "steerlab.models",
    "PairSet": "steerlab.pairs",
    "Plan": "steerlab.plan",
    "Vector": "steerlab.vector",
    "apply_plan": "steerlab.steering",
    "compile_plan": "steerlab.plan",
    "extract": "steerlab.extraction",
    "extract_experts": "steerlab.experts",
    "generate": "steerlab.generation",
    "load_model": "steerlab.models",
    "resolve": "steerlab.frontdoor",
    "steer": "steerlab.steering",
    "wrap_model": "steerlab.models",
}

__all__ = [
    "Card",
    "Condition",
    "ExpertVector",
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
    "extract_experts",
    "generate",
    "load_model",
    "resolve",
    "steer",
    "wrap_model",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'steerlab' has no attribute {name!r}")
    value = getattr(import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
