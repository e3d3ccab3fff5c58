"""Choosing the next token per row: greedy (temperature 0) or seeded sampling with temperature and top-p."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class Sampling:
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    generator: torch.Generator = field(init=False, repr=False)

    def __post_init__(self) -> None:
        # One generator per request, on the CPU: a row's draws do not depend on who shares its batch.
        self.generator = torch.Generator()
        self.generator.manual_seed(self.seed if self.seed is not None else int(torch.randint(0, 2**62, (1,))))

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0


def pick_tokens(logits: torch.Tensor, rows: list[Sampling]) -> list[int]:
    """logits [B, V] -> one token id per row."""
    chosen = logits.argmax(dim=-1).tolist()
    for i, row in enumerate(rows):
        if not row.greedy:
            chosen[i] = _sample(logits[i], row)
    return chosen


def _sample(logits: torch.Tensor, row: Sampling) -> int:
    probs = torch.softmax(logits.float().cpu() / row.temperature, dim=-1)
    if row.top_p < 1.0:
        ordered, order = probs.sort(descending=True)
        # Keep the smallest head whose mass reaches top_p; the first token always stays.
        outside = ordered.cumsum(-1) - ordered >= row.top_p
        ordered[outside] = 0.0
        probs = torch.zeros_like(probs).scatter_(0, order, ordered)
    return int(torch.multinomial(probs, 1, generator=row.generator))
