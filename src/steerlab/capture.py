"""Batched, padding-aware reading of block outputs, stopping after the deepest block asked for."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch

from steerlab.models import LoadedModel
from steerlab.tokens import PaddingSide, Tokenized, pad_batch, pad_id_of


class _StopForward(Exception):
    """Raised by the deepest hook: nothing past it (deeper blocks, the LM head) needs computing."""


def read_batches(
    model: LoadedModel,
    items: Sequence[Tokenized],
    layers: Sequence[int],
    batch_size: int,
    padding_side: PaddingSide = "right",
) -> Iterator[tuple[list[int], dict[int, torch.Tensor]]]:
    """Yield (item indices, {layer: [rows, H] float32 mean over each item's read span}), longest items first."""
    order = sorted(range(len(items)), key=lambda i: -len(items[i].ids))
    wanted = sorted(set(layers))
    pad_id = pad_id_of(model.tokenizer)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        ids, mask, positions, offsets = pad_batch([items[i].ids for i in chunk], pad_id, padding_side, model.device)
        outputs = _forward_blocks(model, ids, mask, positions, wanted)
        yield chunk, {layer: _read_spans(outputs[layer], [items[i] for i in chunk], offsets) for layer in wanted}


def _read_spans(hidden: torch.Tensor, items: list[Tokenized], offsets: list[int]) -> torch.Tensor:
    rows = [
        hidden[r, off + it.read_start : off + it.read_end].float().mean(0)
        for r, (it, off) in enumerate(zip(items, offsets, strict=True))
    ]
    return torch.stack(rows)


@torch.inference_mode()
def _forward_blocks(
    model: LoadedModel, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, layers: list[int]
) -> dict[int, torch.Tensor]:
    captured: dict[int, torch.Tensor] = {}
    deepest = layers[-1]

    def make_hook(index: int) -> Any:
        def hook(_module: torch.nn.Module, _args: Any, output: Any) -> None:
            captured[index] = output[0] if isinstance(output, tuple) else output
            if index == deepest:
                raise _StopForward

        return hook

    handles = [model.layers[i].register_forward_hook(make_hook(i)) for i in layers]
    try:
        model.hf_model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False)
    except _StopForward:
        pass
    finally:
        for handle in handles:
            handle.remove()
    return captured
