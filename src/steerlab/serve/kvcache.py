"""Row surgery on a transformers DynamicCache: merge two batches, drop finished rows, trim all-padding columns.

The running decode batch keeps one cache whose rows are left-padded to a common length; the 2-D attention mask
marks the padding, so a row sees exactly the keys it would see alone.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from steerlab.errors import SteerlabError


def new_cache(hf_model: Any) -> DynamicCache:
    return DynamicCache(config=getattr(hf_model, "config", None))


def check_mergeable(cache: DynamicCache) -> None:
    """Only full-attention layers can be padded and merged; sliding-window and linear layers keep other state."""
    odd = sorted({type(layer).__name__ for layer in cache.layers if type(layer) is not DynamicLayer})
    if odd:
        raise SteerlabError(
            f"the server batches requests by merging KV caches, which supports full-attention layers only; "
            f"this model's cache has {', '.join(odd)}. Serve a model without sliding-window or linear attention."
        )


def _layers(cache: DynamicCache) -> list[Any]:
    """The cache's layers (all DynamicLayer once check_mergeable passed), typed loosely: K/V may still be None."""
    return list(cache.layers)


def _left_pad(tensor: torch.Tensor, extra: int) -> torch.Tensor:
    # K/V are [B, heads, T, d]: pad T on the left.
    return tensor if extra == 0 else F.pad(tensor, (0, 0, extra, 0))


def merge(
    cache: DynamicCache, mask: torch.Tensor, other: DynamicCache, other_mask: torch.Tensor
) -> tuple[DynamicCache, torch.Tensor]:
    """Rows of `other` appended after the rows of `cache` (mutated and returned), both left-padded to one length."""
    width = max(mask.shape[1], other_mask.shape[1])
    pad_a, pad_b = width - mask.shape[1], width - other_mask.shape[1]
    for mine, theirs in zip(_layers(cache), _layers(other), strict=True):
        if not mine.is_initialized or not theirs.is_initialized:
            continue
        mine.keys = torch.cat([_left_pad(mine.keys, pad_a), _left_pad(theirs.keys, pad_b)])
        mine.values = torch.cat([_left_pad(mine.values, pad_a), _left_pad(theirs.values, pad_b)])
    merged = torch.cat([F.pad(mask, (pad_a, 0)), F.pad(other_mask, (pad_b, 0))])
    return cache, merged


def select_rows(cache: DynamicCache, mask: torch.Tensor, keep: list[int]) -> torch.Tensor:
    """Keep only rows `keep` (in that order); then drop columns that are padding in every remaining row."""
    index = torch.tensor(keep, device=mask.device, dtype=torch.long)
    for layer in _layers(cache):
        if layer.is_initialized:
            layer.keys = layer.keys.index_select(0, index.to(layer.keys.device))
            layer.values = layer.values.index_select(0, index.to(layer.values.device))
    return trim(cache, mask.index_select(0, index))


def trim(cache: DynamicCache, mask: torch.Tensor) -> torch.Tensor:
    """A short request leaving a batch of long ones would otherwise leave its padding behind for ever."""
    used = mask.any(dim=0).nonzero()
    start = int(used[0]) if used.numel() else mask.shape[1]
    if start == 0:
        return mask
    for layer in _layers(cache):
        if layer.is_initialized:
            layer.keys = layer.keys[:, :, start:]
            layer.values = layer.values[:, :, start:]
    return mask[:, start:]
