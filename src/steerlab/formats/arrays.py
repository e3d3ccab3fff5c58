"""Plain per-layer arrays (.pt, .npy, .npz): a [layers, hidden] matrix, or a mapping layer -> 1-D array.

Rows are numbered in one of two conventions, which the file cannot tell us, so the caller says which:
- "block": row/key N is the output of decoder block N (steerlab, llama.cpp, repeng, steering-vectors);
- "hidden_states": row/key N is `hidden_states[N]` of `output_hidden_states=True`, i.e. the output of block N - 1
  (row 0, the embeddings, has no block to be added after and is dropped).
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from steerlab.errors import SteerlabError
from steerlab.vector import Card, Vector

Convention = Literal["block", "hidden_states"]
CONVENTIONS: tuple[str, ...] = ("block", "hidden_states")
_TRAILING_INT = re.compile(r"(-?\d+)$")


def load_arrays(
    path: str | os.PathLike[str], convention: Convention = "block", layer: int | None = None, name: str = ""
) -> Vector:
    """Read a .pt/.pth, .npy or .npz file of per-layer directions into a Vector."""
    file = Path(path)
    if not file.is_file():
        raise SteerlabError(f"array file {file} does not exist.")
    raw = _read(file)
    vector = vector_from_arrays(raw, convention=convention, layer=layer, origin=str(file))
    vector.card.name = name or file.stem
    return vector


def _read(file: Path) -> Any:
    suffix = file.suffix.lower()
    try:
        if suffix in (".pt", ".pth", ".bin"):
            return torch.load(file, map_location="cpu", weights_only=True)
        if suffix == ".npy":
            return np.load(file, allow_pickle=False)
        if suffix == ".npz":
            with np.load(file, allow_pickle=False) as archive:
                return {key: archive[key] for key in archive.files}
    except (ValueError, RuntimeError, OSError) as exc:  # pickled objects, corrupt files
        raise SteerlabError(
            f"cannot read {file} as plain arrays ({exc.__class__.__name__}: {str(exc)[:200]}). steerlab reads tensors, "
            "dicts of tensors and numpy arrays only, never pickled objects: save `{layer: tensor}` or a 2-D tensor."
        ) from exc
    raise SteerlabError(f"unsupported array file type {suffix!r} for {file}: use .pt, .npy or .npz.")


def vector_from_arrays(
    raw: Any, convention: Convention = "block", layer: int | None = None, origin: str = "arrays"
) -> Vector:
    """A 2-D matrix (one row per layer), a 1-D array with `layer`, or a mapping {layer: 1-D array}."""
    if convention not in CONVENTIONS:
        raise SteerlabError(f"unknown layer convention {convention!r}: use 'block' or 'hidden_states'.")
    rows = _rows(raw, layer, origin)
    directions = _to_blocks(rows, convention, origin)
    card = Card(
        method="imported (arrays)",
        metadata={"imported_from": origin, "import_format": "arrays", "source_convention": convention},
    )
    if convention == "hidden_states" and isinstance(raw, np.ndarray | torch.Tensor) and _ndim(raw) == 2:
        card.n_layers = int(raw.shape[0]) - 1
    vector = Vector(directions, card)
    vector.card.norms = vector.norms()
    return vector


def _ndim(raw: Any) -> int:
    return int(raw.ndim)


def _as_tensor(value: Any, origin: str, key: object) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu()
    elif isinstance(value, np.ndarray):
        tensor = torch.from_numpy(np.ascontiguousarray(value))
    else:
        raise SteerlabError(f"{origin}: entry {key!r} is a {type(value).__name__}, not an array or tensor.")
    if not tensor.is_floating_point():
        raise SteerlabError(f"{origin}: entry {key!r} has dtype {tensor.dtype}; directions must be floating point.")
    return tensor.float()


def _rows(raw: Any, layer: int | None, origin: str) -> dict[int, torch.Tensor]:
    if isinstance(raw, np.ndarray | torch.Tensor):
        tensor = _as_tensor(raw, origin, "array")
        if tensor.ndim == 1:
            if layer is None:
                raise SteerlabError(
                    f"{origin} holds one 1-D direction; say which block it belongs to (layer=N, CLI: --layer N)."
                )
            return {layer: tensor}
        if tensor.ndim != 2:
            raise SteerlabError(f"{origin}: expected a [layers, hidden] matrix, got shape {tuple(tensor.shape)}.")
        return {i: tensor[i].clone() for i in range(tensor.shape[0])}
    if isinstance(raw, Mapping):
        # A [1, hidden] value per layer is common (kept batch dimension); it is one direction.
        return {_layer_key(k, origin): _squeeze_row(_as_tensor(v, origin, k)) for k, v in raw.items()}
    raise SteerlabError(f"{origin}: expected a tensor, an array or a dict of them, got {type(raw).__name__}.")


def _squeeze_row(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.reshape(-1) if tensor.ndim > 1 and tensor.numel() == tensor.shape[-1] else tensor


def _layer_key(key: object, origin: str) -> int:
    """Integers, or names ending in one: 12, '12', 'layer.12', 'direction.12', 'model.layers.12'."""
    if isinstance(key, int | np.integer):
        return int(key)
    match = _TRAILING_INT.search(str(key))
    if match is None:
        raise SteerlabError(f"{origin}: key {key!r} does not name a layer; use integers or names like 'layer.12'.")
    return int(match.group(1))


def _to_blocks(rows: dict[int, torch.Tensor], convention: Convention, origin: str) -> dict[int, torch.Tensor]:
    negative = [k for k in rows if k < 0]
    if negative:
        raise SteerlabError(f"{origin}: negative layer indices {negative}; write them counted from 0.")
    if any(t.ndim != 1 for t in rows.values()):
        raise SteerlabError(f"{origin}: every direction must be one-dimensional.")
    if convention == "block":
        return dict(rows)
    if 0 in rows and bool(rows[0].abs().sum() > 0):
        warnings.warn(
            f"{origin}: hidden_states[0] (the embeddings) has no decoder block before it; that row was dropped.",
            stacklevel=4,
        )
    out = {k - 1: v for k, v in rows.items() if k >= 1}
    if not out:
        raise SteerlabError(f"{origin}: nothing left after dropping hidden_states[0].")
    return out


def save_arrays(vector: Vector, path: str | os.PathLike[str]) -> Path:
    """.pt: {block: tensor}; .npy: a [n_layers, hidden] matrix with zero rows where the vector has no direction."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    suffix = target.suffix.lower()
    if suffix in (".pt", ".pth"):
        torch.save({layer: t.detach().float().cpu().clone() for layer, t in vector.directions.items()}, target)
    elif suffix == ".npy":
        depth = max(vector.card.n_layers, vector.layers[-1] + 1)
        matrix = np.zeros((depth, vector.hidden_size), dtype=np.float32)
        for layer, t in vector.directions.items():
            matrix[layer] = t.detach().float().cpu().numpy()
        np.save(target, matrix)
    else:
        raise SteerlabError(f"cannot write arrays to {target}: use a .pt or .npy file name.")
    return target
