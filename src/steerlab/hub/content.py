"""Turning stored bytes back into steerlab objects."""

from __future__ import annotations

from steerlab.hub.validate import read_header
from steerlab.vector import Vector


def vector_from_bytes(data: bytes, origin: str) -> Vector:
    from safetensors.torch import load

    _, meta = read_header(data)
    return Vector._from_parts(load(data), meta, origin)
