"""Mean residual norm per block output, measured during forwards that run anyway: the `h` of a relative dose.

The relative dose of a steering vector at block l is |scale| * |v_l| / h_l. h_l is the mean per-token norm of block
l's output over real tokens, leaving out each sequence's first token: models park an attention sink there whose norm
is often tens of times the others', and it would dominate the mean.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from steerlab.errors import SteerlabError
from steerlab.models import LoadedModel


class NormMeter:
    """Running sums of per-token norms and token counts per block."""

    def __init__(self, layers: Sequence[int]) -> None:
        self.sums = dict.fromkeys(layers, 0.0)
        self.counts = dict.fromkeys(layers, 0)
        self.mask: torch.Tensor | None = None

    def add(self, layer: int, hidden: torch.Tensor) -> None:
        norms = hidden.detach().float().norm(dim=-1)  # [B, T]
        valid = torch.ones_like(norms) if self.mask is None else self.mask[:, -norms.shape[1] :].to(norms.dtype)
        if self.mask is None or self.mask.shape[1] == norms.shape[1]:  # not a continuation of cached tokens
            first = valid.argmax(dim=-1)  # the first real token of each row
            valid = valid.clone()
            valid[torch.arange(valid.shape[0]), first] = 0.0
        self.sums[layer] += float((norms * valid).sum())
        self.counts[layer] += int(valid.sum())

    def means(self) -> dict[int, float]:
        empty = [la for la, n in self.counts.items() if n == 0]
        if empty:
            raise SteerlabError(f"no tokens after the first were seen at blocks {empty}; use longer sequences.")
        return {la: self.sums[la] / self.counts[la] for la in self.sums}


@contextmanager
def measure_residual_norms(model: LoadedModel, layers: Sequence[int]) -> Iterator[NormMeter]:
    """Every forward of `model` inside the block adds to the meter (read it with .means() after)."""
    meter = NormMeter(layers)

    def pre_forward(_module: nn.Module, _args: Any, kwargs: dict[str, Any]) -> None:
        mask = kwargs.get("attention_mask")
        meter.mask = mask if isinstance(mask, torch.Tensor) and mask.ndim == 2 else None

    def block_hook(layer: int) -> Any:
        def hook(_module: nn.Module, _args: Any, output: Any) -> None:
            meter.add(layer, output[0] if isinstance(output, tuple) else output)

        return hook

    handles = [model.hf_model.register_forward_pre_hook(pre_forward, with_kwargs=True)]
    handles += [model.layers[la].register_forward_hook(block_hook(la)) for la in layers]
    try:
        yield meter
    finally:
        for handle in handles:
            handle.remove()
