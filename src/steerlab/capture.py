"""Batched, padding-aware reading of block outputs, stopping after the deepest block asked for."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from steerlab.errors import SteerlabError
from steerlab.models import LoadedModel
from steerlab.pairs import ReadPosition, Side, render_prompt

PaddingSide = Literal["left", "right"]


@dataclass(frozen=True)
class Tokenized:
    ids: list[int]
    read_start: int  # first token index read (inclusive)
    read_end: int  # last token index read (exclusive)


class _StopForward(Exception):
    """Raised by the deepest hook: nothing past it (deeper blocks, the LM head) needs computing."""


def tokenize_side(model: LoadedModel, side: Side, position: ReadPosition, chat: bool = True) -> Tokenized:
    tok = model.tokenizer
    if tok is None:
        raise SteerlabError("this model has no tokenizer: load it with load_model or pass one to wrap_model.")
    templated = chat and bool(getattr(tok, "chat_template", None))
    prompt = render_prompt(tok, side.user, side.system, chat=chat)
    prompt_ids = list(tok(prompt, add_special_tokens=not templated)["input_ids"])
    completion_ids = list(tok(side.completion, add_special_tokens=False)["input_ids"]) if side.completion else []
    ids = prompt_ids + completion_ids
    if not ids:
        raise SteerlabError("an example rendered to zero tokens; check the pair file for empty fields.")
    if position == "last":
        return Tokenized(ids, len(ids) - 1, len(ids))
    if not completion_ids:
        raise SteerlabError(
            f"reading position {position!r} needs a completion after the prompt, and an example has none; "
            "use position='last' for prompts without completions."
        )
    if position == "answer":
        return Tokenized(ids, len(ids) - 1, len(ids))
    if position == "mean":
        return Tokenized(ids, len(prompt_ids), len(ids))
    raise SteerlabError(f"unknown reading position {position!r}: use 'last', 'mean' or 'answer'.")


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


def pad_id_of(tokenizer: Any) -> int:
    for attr in ("pad_token_id", "eos_token_id", "unk_token_id"):
        value = getattr(tokenizer, attr, None)
        if isinstance(value, int):
            return value
    return 0


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
