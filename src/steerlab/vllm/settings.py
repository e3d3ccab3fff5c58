"""The plugin's settings, read from the environment: vLLM starts its engine and workers as separate processes, and
environment variables are what reaches all of them unchanged (`steerlab serve --engine vllm` sets them from its flags).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from steerlab.errors import SteerlabError

PREFIX = "STEERLAB_VLLM_"


@dataclass(frozen=True)
class Settings:
    max_slots: int | None = None  # None: one per sequence the engine may batch (max_num_seqs)
    max_ablations: int = 2  # per layer and slot
    default: str | None = None  # a server-wide kit address, composed additively with every request's
    store: str | None = None  # a store folder or URL for NAMESPACE/NAME refs (None: the local default store)
    kits: str | None = None  # when set, file addresses are read inside this folder only (what a server wants)
    max_scale: float = 8.0
    max_vectors: int = 8
    max_conditions: int = 2  # distinct conditions one request may be gated on (columns of the reading buffers)
    records: str | None = None  # a folder for per-request condition records (steerlab.vllm.records); None: none

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ) if env is None else env
        get = lambda name: env.get(PREFIX + name) or None  # noqa: E731
        return cls(
            max_slots=_int(get("MAX_STEERING_SLOTS"), "MAX_STEERING_SLOTS"),
            max_ablations=_int(get("MAX_ABLATIONS"), "MAX_ABLATIONS") or 2,
            default=get("DEFAULT_KIT"),
            store=get("STORE"),
            kits=get("KITS"),
            max_scale=float(get("MAX_SCALE") or 8.0),
            max_vectors=_int(get("MAX_VECTORS"), "MAX_VECTORS") or 8,
            max_conditions=_int(get("MAX_CONDITIONS"), "MAX_CONDITIONS") or 2,
            records=get("RECORDS"),
        )

    def to_env(self) -> dict[str, str]:
        values = {
            "MAX_STEERING_SLOTS": self.max_slots,
            "MAX_ABLATIONS": self.max_ablations,
            "DEFAULT_KIT": self.default,
            "STORE": self.store,
            "KITS": self.kits,
            "MAX_SCALE": self.max_scale,
            "MAX_VECTORS": self.max_vectors,
            "MAX_CONDITIONS": self.max_conditions,
            "RECORDS": self.records,
        }
        return {PREFIX + k: str(v) for k, v in values.items() if v is not None}


def _int(text: str | None, name: str) -> int | None:
    if text is None:
        return None
    try:
        value = int(text)
    except ValueError:
        raise SteerlabError(f"{PREFIX}{name}={text!r} is not a whole number.") from None
    if value < 1:
        raise SteerlabError(f"{PREFIX}{name} must be at least 1, got {value}.")
    return value
