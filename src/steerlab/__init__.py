"""steerlab: extract, compose, share, evaluate and serve steering vectors for Hugging Face decoders."""

# Eager on purpose: the functions extract, generate and steer share their names with submodules, and a lazy
# __getattr__ would hand out the submodule whenever another module had imported it first.
from steerlab.errors import SteerlabError
from steerlab.extract import extract
from steerlab.generate import generate
from steerlab.kit import Kit, KitEntry
from steerlab.models import LoadedModel, load_model, wrap_model
from steerlab.pairs import PairSet
from steerlab.plan import Plan, compile_plan
from steerlab.steer import apply_plan, steer
from steerlab.vector import Card, Vector

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
