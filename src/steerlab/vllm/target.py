"""What kits are checked and compiled against inside vLLM: the model's Hugging Face architecture, built on the meta
device from vLLM's own config (no weights, no second copy), so hidden size, depth and the architecture fingerprint
are exactly those of `steerlab.load_model` on the same folder, while compiled tensors go to vLLM's device and dtype.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from steerlab.anatomy import find_anatomy, fingerprint
from steerlab.models import LoadedModel

SOURCE_MARKER = "steerlab_source.txt"  # written by steerlab.models beside a converted GGUF


@dataclass
class VllmTarget(LoadedModel):
    """A LoadedModel whose hf_model is a meta-device skeleton: enough for every check and for compile_row, whose
    tensors land on `run_device` / `run_dtype` (vLLM's)."""

    run_device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    run_dtype: torch.dtype = torch.float32

    @property
    def device(self) -> torch.device:
        return self.run_device

    @property
    def dtype(self) -> torch.dtype:
        return self.run_dtype


def public_name(model: str) -> str:
    """The name steerlab gives a model folder: the source it was converted from, else the folder's name."""
    marker = Path(model) / SOURCE_MARKER
    return marker.read_text().strip() if marker.is_file() else Path(model).name or model


def build_target(hf_config: Any, model: str, device: torch.device, dtype: torch.dtype) -> VllmTarget:
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(hf_config)
    return VllmTarget(
        hf_model=skeleton,
        tokenizer=None,
        anatomy=find_anatomy(skeleton),
        name=public_name(model),
        fingerprint=fingerprint(skeleton),
        run_device=device,
        run_dtype=dtype,
    )
