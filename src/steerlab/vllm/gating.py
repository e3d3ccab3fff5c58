"""Conditional kits on the host side of vLLM's model runner: each request's reading of its prompt, its decision, and
the slot key and plan that follow from it.

A conditional request starts undecided: it runs its kit's unconditional part (slot key `DIGEST|?`). While its prompt
is computed, every step asks `read` to weight its prompt tokens for the read op (steerlab.vllm.reads). Before the
next step, `collect` adds that step's scores to the request's totals, and once every prompt position has been read
each condition holds when its total exceeds its threshold, as `Condition.holds` says. From then on the request runs
its decided plan: the unconditional part plus every gated part whose conditions all hold (slot key `DIGEST|KEYS`,
shared by requests that decided alike). Gated entries steer generated tokens only on this engine (steerlab.vllm.kits
refuses others), and the first generated token is computed in the step after the prompt's last, so every token a
gated part steers is computed after the decision. A preempted request that is computed again keeps its decision.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from steerlab.condition import Condition
from steerlab.plan import RowPlan
from steerlab.vllm.reads import ReadBuffers

UNDECIDED = "?"


@dataclass
class Reading:
    """One undecided request: its conditions (one buffer column each), the totals so far, prompt positions read."""

    conditions: list[Condition]
    prompt_len: int
    totals: list[float] = field(default_factory=list)
    read_upto: int = 0

    def __post_init__(self) -> None:
        self.totals = [0.0] * len(self.conditions)


class Gating:
    """Every conditional request of one model runner, and what the current step reads."""

    def __init__(self, buffers: ReadBuffers) -> None:
        self.buffers = buffers
        self.reading: dict[str, Reading] = {}
        self.decided: dict[str, dict[str, bool]] = {}  # request id -> condition key -> holds
        self.scores: dict[str, dict[str, float]] = {}  # request id -> condition key -> total (what was decided on)
        # request id -> each condition's audit record (as the transformers engine's plan reports it)
        self.records: dict[str, list[dict[str, Any]]] = {}
        self.just_decided: list[str] = []  # decided since the last `take_decided`
        self._step: list[tuple[int, str, int]] = []  # the last step's reads: (row in step, request id, read up to)
        self._weights = np.zeros((0, buffers.shape.columns), dtype=np.float32)
        self._token_req = np.zeros(0, dtype=np.int64)
        self._used = 0  # buffer rows the last reading step used

    def key(self, digest: str, req_id: str) -> str:
        """The slot key of a conditional request now: its kit's digest and its decision (or undecided)."""
        decided = self.decided.get(req_id)
        if decided is None:
            return f"{digest}|{UNDECIDED}"
        return f"{digest}|{','.join(sorted(k for k, holds in decided.items() if holds))}"

    def plan(self, row: RowPlan, req_id: str) -> RowPlan:
        """What the request's slot holds: the unconditional part, plus the gated parts its decision turns on."""
        decided = self.decided.get(req_id)
        if decided is None:
            return RowPlan(layers=row.layers, kit=row.kit)
        return RowPlan(layers=row.effective(lambda key: decided.get(key, False)), kit=row.kit)

    def begin(self, tokens: int) -> None:
        self._weights = np.zeros((tokens, self.buffers.shape.columns), dtype=np.float32)
        self._token_req = np.zeros(tokens, dtype=np.int64)

    def read(self, index: int, req_id: str, row: RowPlan, span: tuple[int, int, int], prompt_len: int) -> None:
        """Weight the prompt tokens of an undecided request in this step. span: (first position, token count,
        offset of its first token in the step)."""
        if req_id in self.decided:
            return
        reading = self.reading.get(req_id)
        if reading is None:
            conditions = sorted(row.conditions.values(), key=lambda c: c.key)
            reading = self.reading[req_id] = Reading(conditions, prompt_len)
        start, count, offset = span
        positions = start + np.arange(count)
        fresh = (positions >= reading.read_upto) & (positions < prompt_len)  # recomputed tokens are not read twice
        self._token_req[offset : offset + count] = index
        for column, condition in enumerate(reading.conditions):
            if condition.reading == "mean":
                weight = np.where(fresh, 1.0 / prompt_len, 0.0)
            else:
                weight = np.where(fresh & (positions == prompt_len - 1), 1.0, 0.0)
            self._weights[offset : offset + count, column] = weight
            self.buffers.directions[index, column].copy_(condition.direction)
            self.buffers.blocks[index, column] = condition.layer
            self.buffers.live[condition.layer] = 1
        self._step.append((index, req_id, max(reading.read_upto, min(start + count, prompt_len))))

    def end(self) -> None:
        """Hand this step's token weights to the op (only when some request reads)."""
        if not self._step:
            return
        count = len(self._token_req)
        self.buffers.weights[:count].copy_(torch.from_numpy(self._weights))
        self.buffers.token_req[:count].copy_(torch.from_numpy(self._token_req))
        self._used = count

    def collect(self) -> None:
        """After a step that read: add its scores to the totals and decide every request whose prompt is read."""
        if not self._step:
            return
        scores = self.buffers.scores.cpu()
        for index, req_id, upto in self._step:
            reading = self.reading.get(req_id)
            if reading is None:  # finished meanwhile
                continue
            for column in range(len(reading.conditions)):
                reading.totals[column] += float(scores[index, column])
            reading.read_upto = upto
            if upto >= reading.prompt_len:
                self._decide(req_id, reading)
        self._step = []
        self.buffers.reset(self._used)

    def take_decided(self) -> list[str]:
        """The requests decided since the last call (each once)."""
        taken, self.just_decided = self.just_decided, []
        return taken

    def forget(self, req_id: str) -> None:
        self.reading.pop(req_id, None)
        self.decided.pop(req_id, None)
        self.scores.pop(req_id, None)
        self.records.pop(req_id, None)

    def _decide(self, req_id: str, reading: Reading) -> None:
        del self.reading[req_id]
        self.scores[req_id] = {c.key: total for c, total in zip(reading.conditions, reading.totals, strict=True)}
        self.decided[req_id] = {
            c.key: bool(c.holds(torch.tensor(total)))
            for c, total in zip(reading.conditions, reading.totals, strict=True)
        }
        self.records[req_id] = [
            {**c.describe(), "score": total, "holds": self.decided[req_id][c.key]}
            for c, total in zip(reading.conditions, reading.totals, strict=True)
        ]
        self.just_decided.append(req_id)
