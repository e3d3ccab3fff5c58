"""The steering-vectors library (`SteeringVector(layer_activations={layer: tensor}, layer_type=...)`).

Its layer N with `layer_type="decoder_block"` is the module matched by the guessed "model.layers.{num}" pattern and
the vector is added to that module's output, so N is decoder block N: the same numbering as steerlab. Other layer
types (mlp, self_attn, layernorms) add inside a block, which a residual-stream vector cannot reproduce.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from steerlab.errors import SteerlabError
from steerlab.vector import Card, Vector

LAYER_TYPE = "decoder_block"
PICKLED_CLASS = "steering_vectors.steering_vector.SteeringVector"


class SavedSteeringVector:
    """What `torch.save(steering_vector)` holds, read back without the steering-vectors package.

    torch's weights-only unpickler builds this plain holder in place of the library's class (registered under the
    class's pickled name), so no code from the file runs and the library need not be installed.
    """

    layer_activations: dict[int, torch.Tensor]
    layer_type: str = LAYER_TYPE


def _is_layer_dict(obj: Any) -> bool:
    """`torch.save(sv.layer_activations)`: a bare {layer: tensor} dict."""
    return isinstance(obj, Mapping) and bool(obj) and all(isinstance(k, int) for k in obj)


def _parts(obj: Any) -> tuple[Mapping[Any, Any], str]:
    """(layer_activations, layer_type) of a SteeringVector object, its state dict, or its bare layer dict."""
    if _is_layer_dict(obj):
        return obj, LAYER_TYPE
    if isinstance(obj, Mapping) and "layer_activations" in obj:
        return obj["layer_activations"], str(obj.get("layer_type", LAYER_TYPE))
    activations = getattr(obj, "layer_activations", None)
    if isinstance(activations, Mapping):
        return activations, str(getattr(obj, "layer_type", LAYER_TYPE))
    raise SteerlabError(
        f"a {type(obj).__name__} is not a steering-vectors SteeringVector, its layer_activations ({{layer: tensor}}) "
        "or its state ({'layer_activations': {layer: tensor}, 'layer_type': 'decoder_block'})."
    )


def from_steering_vector(obj: Any, n_layers: int | None = None, name: str = "", origin: str = "") -> Vector:
    """A Vector from a SteeringVector (or its state dict); negative layers need the model's `n_layers`."""
    activations, layer_type = _parts(obj)
    if layer_type != LAYER_TYPE:
        raise SteerlabError(
            f"this steering-vectors vector has layer_type {layer_type!r}: it is added inside a block, not to the "
            f"residual stream after it; steerlab can import only layer_type '{LAYER_TYPE}' vectors."
        )
    directions: dict[int, torch.Tensor] = {}
    for key, value in activations.items():
        if not isinstance(value, torch.Tensor):
            raise SteerlabError(f"steering-vectors layer {key!r} holds a {type(value).__name__}, not a tensor.")
        layer = int(key)
        if layer < 0:
            if n_layers is None:
                raise SteerlabError(f"layer {layer} counts from the end: pass the model's layer count (n_layers).")
            layer += n_layers
        directions[layer] = value.detach().float().cpu().reshape(-1).clone()
    if not directions:
        raise SteerlabError("this steering-vectors vector has no layer activations.")
    card = Card(
        name=name,
        n_layers=n_layers or 0,
        method="imported (steering-vectors)",
        site="residual",
        metadata={"import_format": "steering-vectors", "imported_from": origin or "object", "layer_type": layer_type},
    )
    vector = Vector(directions, card)
    vector.card.norms = vector.norms()
    return vector


def load_steering_vector_file(path: str | os.PathLike[str], n_layers: int | None = None, name: str = "") -> Vector:
    """A .pt file from `torch.save`: a SteeringVector object, its layer_activations, or its state dict.

    Read with torch's weights-only unpickler: tensors, plain containers and the SteeringVector class (as a plain
    holder) are built; any other pickled object is refused rather than run.
    """
    file = Path(path)
    if not file.is_file():
        raise SteerlabError(f"steering-vectors file {file} does not exist.")
    try:
        with torch.serialization.safe_globals([(SavedSteeringVector, PICKLED_CLASS)]):
            state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # the unpickler raises several types for objects it will not build
        raise SteerlabError(
            f"cannot read {file} without running pickled code: {str(exc)[:160]}. Save the vector's tensors instead: "
            "torch.save(sv.layer_activations, path), or pass the SteeringVector object to "
            "steerlab.formats.from_steering_vector in Python."
        ) from exc
    return from_steering_vector(state, n_layers=n_layers, name=name or file.stem, origin=str(file))


def to_steering_vector_state(vector: Vector) -> dict[str, Any]:
    """The state a `SteeringVector(**state)` accepts: {'layer_activations': {block: tensor}, 'layer_type': ...}."""
    activations = {layer: t.detach().float().cpu().clone() for layer, t in vector.directions.items()}
    return {"layer_activations": activations, "layer_type": LAYER_TYPE}


def save_steering_vector_file(vector: Vector, path: str | os.PathLike[str]) -> Path:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    torch.save(to_steering_vector_state(vector), target)
    return target
