"""Reference residual norms h_l: the `h` that turns a steering magnitude into a relative dose for the guard.

The server measures them on the model it serves; the store, which has no model, reads the ones shipped for the
default model (src/steerlab/data/reference_norms/, written by bench/protect_fpr.py with this same function).
They are measured as calibration measures its own (steerlab.residual_norms): unsteered greedy generation, per-token
norms of each block's output, the attention-sink first token left out.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from steerlab.errors import SteerlabError

if TYPE_CHECKING:
    from steerlab.models import LoadedModel

SHIPPED = Path(__file__).resolve().parents[1] / "data" / "reference_norms"
# Ordinary requests, none of which a model should refuse: the norms are those of everyday use.
REFERENCE_PROMPTS = (
    "Describe your favourite season and why you like it.",
    "Explain how a bicycle gear system works.",
    "Write two sentences about the history of tea.",
    "What should I pack for a weekend hiking trip?",
    "Summarise the plot of a story about a lost dog finding its way home.",
    "Give me three tips for learning a new language.",
    "How do plants make their food?",
    "Write a short, friendly note thanking a colleague for their help.",
)
GENERATED_TOKENS = 16


def measure_reference_norms(model: LoadedModel) -> dict[int, float]:
    """h_l at every block of `model`, over unsteered answers to REFERENCE_PROMPTS."""
    from steerlab.generation import generate
    from steerlab.residual_norms import measure_residual_norms

    layers = list(range(len(model.layers)))
    with measure_residual_norms(model, layers) as meter:
        generate(model, list(REFERENCE_PROMPTS), max_new_tokens=GENERATED_TOKENS)
    return meter.means()


def shipped_path(fingerprint: str) -> Path:
    return SHIPPED / f"{fingerprint}.json"


def shipped_norms(fingerprint: str, base_model: str = "") -> dict[int, float]:
    """The reference norms shipped for the model whose weights have `fingerprint` (a vector card's)."""
    path = shipped_path(fingerprint)
    if not path.is_file():
        known = sorted(p.stem for p in SHIPPED.glob("*.json"))
        raise SteerlabError(
            f"no reference residual norms are shipped for {base_model or 'this model'} (fingerprint {fingerprint!r}; "
            f"shipped: {', '.join(known) or 'none'}). Give norms measured on that model: --protect-norms FILE, "
            "written by `steerlab serve norms --model M --out FILE`."
        )
    return read_norms(path)


def read_norms(path: Path) -> dict[int, float]:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        norms = {int(k): float(v) for k, v in record["norms"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise SteerlabError(
            f"{path} is not a reference-norms file ({exc}); it holds {{'model': ..., 'norms': {{LAYER: H}}}}."
        ) from exc
    bad = [la for la, h in norms.items() if not h > 0]
    if not norms or bad:
        raise SteerlabError(f"{path}: every reference norm must be a positive number (bad at layers {bad}).")
    return norms


def write_norms(path: Path, model_name: str, fingerprint: str, norms: dict[int, float]) -> Path:
    from steerlab.atomic import atomic_write

    record = {
        "model": model_name,
        "fingerprint": fingerprint,
        "prompts": list(REFERENCE_PROMPTS),
        "generated_tokens": GENERATED_TOKENS,
        "norms": {str(la): round(h, 6) for la, h in sorted(norms.items())},
    }
    atomic_write(path, (json.dumps(record, indent=1) + "\n").encode())
    return path
