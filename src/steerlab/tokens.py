"""Token ids in and out of the model: the tokenizer check, text to ids, padded batches, and the padding id."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from steerlab.errors import SteerlabError

PaddingSide = Literal["left", "right"]


@dataclass(frozen=True)
class Tokenized:
    """One sequence to read activations from, and the span of it that is read."""

    ids: list[int]
    read_start: int  # first token index read (inclusive)
    read_end: int  # last token index read (exclusive)


def tokenizer_of(model: Any) -> Any:
    """The model's tokenizer, or a clear error for a model wrapped without one."""
    tok = getattr(model, "tokenizer", None)
    if tok is None:
        raise SteerlabError("this model has no tokenizer: load it with load_model or pass one to wrap_model.")
    return tok


def encode(tokenizer: Any, text: str, special: bool = False) -> list[int]:
    """Token ids of `text`; `special` adds the tokenizer's own start/end tokens (BOS), as for a whole plain prompt."""
    return list(tokenizer(text, add_special_tokens=special)["input_ids"])


def pad_id_of(tokenizer: Any) -> int:
    for attr in ("pad_token_id", "eos_token_id", "unk_token_id"):
        value = getattr(tokenizer, attr, None)
        if isinstance(value, int):
            return value
    return 0


def pad_batch(
    seqs: Sequence[list[int]], pad_id: int, side: PaddingSide, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[int]]:
    """input_ids, attention_mask, position_ids and each row's offset of its first real token."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    offsets = []
    for row, seq in enumerate(seqs):
        start = width - len(seq) if side == "left" else 0
        ids[row, start : start + len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[row, start : start + len(seq)] = 1
        offsets.append(start)
    # Positions count real tokens only, so a left-padded row sees the same positions as when it runs alone.
    positions = (mask.cumsum(-1) - 1).clamp_min(0)
    return ids.to(device), mask.to(device), positions.to(device), offsets


def two_block_layout(
    rows: Sequence[tuple[Sequence[int], Sequence[int]]], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Rows of (head, tail) laid out [pad, head | pad, tail], each block left-padded, so the head block can run as a
    prefill and the tail block on its cache. Returns ids, attention mask, position ids (real tokens only, as if each
    row ran alone) and the head block's width."""
    width = max(len(head) for head, _ in rows)
    keep = max(len(tail) for _, tail in rows)
    ids = torch.full((len(rows), width + keep), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, (head, tail) in enumerate(rows):
        for start, part in ((width - len(head), head), (width + keep - len(tail), tail)):
            ids[row, start : start + len(part)] = torch.tensor(list(part), dtype=torch.long)
            mask[row, start : start + len(part)] = 1
    return ids, mask, (mask.cumsum(-1) - 1).clamp_min(0), width
