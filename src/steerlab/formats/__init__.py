"""Moving vectors between steerlab and other tools: llama.cpp/repeng GGUF, steering-vectors, plain arrays."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from steerlab.errors import SteerlabError
from steerlab.formats.arrays import Convention, load_arrays, save_arrays, vector_from_arrays
from steerlab.formats.llamacpp import check_residual, export_gguf, import_gguf
from steerlab.formats.steering_vectors import (
    from_steering_vector,
    load_steering_vector_file,
    save_steering_vector_file,
    to_steering_vector_state,
)
from steerlab.vector import Vector

Format = Literal["llama.cpp", "repeng", "steering-vectors", "pt", "npy"]
FORMATS: tuple[str, ...] = ("llama.cpp", "repeng", "steering-vectors", "pt", "npy")
_BY_SUFFIX = {".gguf": "llama.cpp", ".pt": "pt", ".pth": "pt", ".npy": "npy", ".npz": "npy"}

__all__ = [
    "FORMATS",
    "export_gguf",
    "export_vector",
    "from_steering_vector",
    "guess_format",
    "import_gguf",
    "import_vector",
    "load_arrays",
    "load_steering_vector_file",
    "save_arrays",
    "save_steering_vector_file",
    "to_steering_vector_state",
    "vector_from_arrays",
]


def guess_format(path: str | os.PathLike[str]) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in _BY_SUFFIX:
        raise SteerlabError(f"cannot tell the format of {path} from its extension; pass one of {', '.join(FORMATS)}.")
    return _BY_SUFFIX[suffix]


def _check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise SteerlabError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}.")
    return fmt


def import_vector(
    path: str | os.PathLike[str],
    fmt: str | None = None,
    convention: Convention = "block",
    layer: int | None = None,
    n_layers: int | None = None,
    name: str = "",
) -> Vector:
    """Read a vector written by another tool; `fmt` is guessed from the extension when not given."""
    chosen = _check_format(fmt or guess_format(path))
    if chosen in ("llama.cpp", "repeng"):
        vector = import_gguf(path, source=chosen)
    elif chosen == "steering-vectors":
        vector = load_steering_vector_file(path, n_layers=n_layers)
    else:
        vector = load_arrays(path, convention=convention, layer=layer)
    if name:
        vector.card.name = name
    return vector


def export_vector(vector: Vector, path: str | os.PathLike[str], fmt: str, model_hint: str | None = None) -> Path:
    """Write `vector` for another tool: a GGUF (llama.cpp, repeng), a steering-vectors state, or arrays."""
    chosen = _check_format(fmt)
    check_residual(vector)
    if chosen in ("llama.cpp", "repeng"):
        return export_gguf(vector, path, model_hint=model_hint)
    if chosen == "steering-vectors":
        return save_steering_vector_file(vector, path)
    return save_arrays(vector, path)
