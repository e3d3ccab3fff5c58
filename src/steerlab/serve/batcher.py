"""Continuous batching with a different steering plan per row.

One engine thread owns the model. Between steps it admits new requests, prefills them as their own left-padded
batch, and merges their KV caches into the running decode batch; every decode step then runs all active rows
together, each row with its own compiled plan (the core's per-row hook path), and finished rows leave.
Position ids count real tokens only, so a row produces the same tokens as when it is served alone.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from steerlab.errors import SteerlabError
from steerlab.generation import eos_ids
from steerlab.kit import Kit
from steerlab.models import LoadedModel
from steerlab.plan import Plan, RowPlan, stack_rows
from steerlab.serve import kvcache
from steerlab.serve.sampling import Sampling, pick_tokens
from steerlab.serve.textstream import TextStream
from steerlab.steering import apply_plan
from steerlab.tokens import pad_batch, pad_id_of

log = logging.getLogger("steerlab.serve")


@dataclass
class Event:
    """What a job reports to its request: new text, and at the end a finish reason (or an error)."""

    text: str = ""
    finish_reason: str | None = None
    completion_tokens: int = 0
    error: str | None = None


@dataclass(eq=False)
class Job:
    """One sequence to generate (one choice of one request)."""

    prompt_ids: list[int]
    row: RowPlan
    sampling: Sampling
    stream: TextStream
    max_tokens: int
    sink: Callable[[Event], None]
    ignore_eos: bool = False
    kit: Kit | None = None  # the request's kit itself, for an engine that compiles it its own way (vLLM)
    generated: int = 0
    cancelled: bool = False  # set by the request's side when its client goes away; read between steps
    # Conditional steering: what prefill decided for this row (condition key -> holds), kept for its decode steps,
    # and each condition's score and decision for the audit log.
    decisions: dict[str, bool] = field(default_factory=dict)
    conditions: list[dict[str, Any]] = field(default_factory=list)

    def cancel(self) -> None:
        self.cancelled = True


CANCELLED = "cancelled"  # take_token's answer for a row whose client left: nothing more is sent


def take_token(job: Job, token: int, eos: set[int], context_length: int | None) -> str | None:
    """Record a row's new token and tell its request (text deltas, the finish); the finish reason once the row is
    done ("stop", "length", or CANCELLED), else None. Every engine ends rows by this one rule."""
    if job.cancelled:
        return CANCELLED
    job.generated += 1
    if token in eos and not job.ignore_eos:
        return finish_job(job, job.stream.flush(), "stop")
    delta = job.stream.push(token)
    if job.stream.stopped:
        return finish_job(job, delta, "stop")
    at_context_end = context_length is not None and len(job.prompt_ids) + job.generated >= context_length
    if job.generated >= job.max_tokens or at_context_end:
        return finish_job(job, delta + job.stream.flush(), "length")
    if delta:
        job.sink(Event(text=delta, completion_tokens=job.generated))
    return None


def finish_job(job: Job, text: str, reason: str) -> str:
    """Send a row's last text and its finish reason."""
    job.sink(Event(text=text, finish_reason=reason, completion_tokens=job.generated))
    return reason


def fail_jobs(jobs: list[Job], message: str) -> None:
    """Tell every job still wanted that it failed (an engine error, or the server shutting down)."""
    for job in jobs:
        if not job.cancelled:
            job.sink(Event(error=message, completion_tokens=job.generated))


@dataclass
class Stats:
    prefills: int = 0
    decode_steps: int = 0
    decode_rows: int = 0  # sum over decode steps of the rows in the batch
    max_rows: int = 0
    completed: int = 0

    def as_dict(self) -> dict[str, Any]:
        mean = self.decode_rows / self.decode_steps if self.decode_steps else 0.0
        return {**self.__dict__, "mean_rows": round(mean, 3)}


def context_length_of(model: LoadedModel) -> int | None:
    config = getattr(model.hf_model, "config", None)
    for attr in ("max_position_embeddings", "n_positions"):
        value = getattr(config, attr, None)
        if isinstance(value, int):
            return value
    return None


@dataclass
class _Running:
    """The decode batch: its rows, their shared left-padded cache, mask and the token each row feeds next."""

    rows: list[Job] = field(default_factory=list)
    cache: Any = None
    mask: torch.Tensor | None = None
    next_tokens: torch.Tensor | None = None
    plan: Plan | None = None  # rebuilt only when the rows change


class Batcher:
    def __init__(self, model: LoadedModel, max_batch: int = 16, max_prefill_tokens: int = 8192) -> None:
        if max_batch < 1 or max_prefill_tokens < 1:
            raise SteerlabError(
                f"max_batch and max_prefill_tokens must be at least 1, not {max_batch}, {max_prefill_tokens}."
            )
        kvcache.check_mergeable(kvcache.new_cache(model.hf_model))
        self.model = model
        self.max_batch = max_batch
        self.max_prefill_tokens = max_prefill_tokens  # padded prompt tokens per prefill forward (memory bound)
        self.eos_ids = eos_ids(model)  # the same stops as steerlab.generate
        self.context_length = context_length_of(model)
        self.pad_id = pad_id_of(model.tokenizer)
        self.stats = Stats()
        self._inbox: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._waiting: deque[Job] = deque()  # taken from the inbox but not yet admitted (the prefill was full)
        self._run = _Running()
        self._fresh: list[Job] = []
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="steerlab-batcher", daemon=True)

    @property
    def active(self) -> int:
        """Rows decoding now plus jobs waiting (approximate when read from another thread)."""
        return len(self._run.rows) + len(self._waiting) + self._inbox.qsize()

    # ----- the request side (any thread) -----
    def start(self) -> Batcher:
        self._thread.start()
        return self

    def check_kit(self, kit: Kit | None) -> None:
        """Every kit runs here (conditions, expert vectors and all)."""

    def submit(self, job: Job) -> None:
        if self._closed.is_set():
            raise SteerlabError("the server is shutting down; retry against a running server.")
        self._inbox.put(job)

    def close(self, timeout: float = 30.0) -> None:
        self._closed.set()
        self._inbox.put(None)
        if self._thread.is_alive():
            self._thread.join(timeout)
        left = [*self._run.rows, *self._waiting, *self._drain()]
        fail_jobs(left, "the server shut down before this request finished.")

    # ----- the engine thread -----
    def _loop(self) -> None:
        with torch.inference_mode():
            while not self._closed.is_set():
                try:
                    self._step()
                except Exception as exc:  # a failed forward must not take the server down: fail its rows only
                    log.exception("batch step failed")
                    fail_jobs([*self._run.rows, *self._fresh], f"generation failed: {type(exc).__name__}: {exc}")
                    self._run, self._fresh = _Running(), []

    def _step(self) -> None:
        self._fresh = self._admit()
        if self._fresh:
            self._prefill(self._fresh)
            self._fresh = []
        if self._run.rows:
            self._decode()

    def _admit(self) -> list[Job]:
        """Jobs for the next prefill, first come first served, within max_batch rows and max_prefill_tokens."""
        jobs: list[Job] = []
        while len(self._run.rows) + len(jobs) < self.max_batch:
            job = self._next_job(idle=not self._run.rows and not jobs)
            if job is None:
                break
            if job.cancelled:
                continue
            width = max(len(j.prompt_ids) for j in [*jobs, job])
            if jobs and width * (len(jobs) + 1) > self.max_prefill_tokens:
                self._waiting.appendleft(job)
                break
            jobs.append(job)
        return jobs

    def _next_job(self, idle: bool) -> Job | None:
        if self._waiting:
            return self._waiting.popleft()
        try:
            return self._inbox.get(timeout=0.05) if idle else self._inbox.get_nowait()
        except queue.Empty:
            return None

    def _drain(self) -> list[Job]:
        jobs: list[Job] = []
        while True:
            try:
                job = self._inbox.get_nowait()
            except queue.Empty:
                return jobs
            if job is not None:
                jobs.append(job)

    def _forward(self, plan: Plan, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache: Any) -> Any:
        with apply_plan(self.model, plan):
            out = self.model.hf_model(
                input_ids=ids,
                attention_mask=mask,
                position_ids=positions,
                cache=cache,
                use_cache=True,
                logits_to_keep=1,
            )
        return out.logits[:, -1, :]

    def _prefill(self, jobs: list[Job]) -> None:
        ids, mask, positions, _ = pad_batch([j.prompt_ids for j in jobs], self.pad_id, "left", self.model.device)
        cache = kvcache.new_cache(self.model.hf_model)
        plan = stack_rows(self.model, [j.row for j in jobs])
        logits = self._forward(plan, ids, mask, positions, cache)
        for job, decided, report in zip(jobs, plan.decisions(), plan.report(), strict=True):
            job.decisions, job.conditions = decided, report["conditions"]
        self.stats.prefills += 1
        tokens = pick_tokens(logits, [j.sampling for j in jobs])
        keep = [i for i, (job, token) in enumerate(zip(jobs, tokens, strict=True)) if not self._accept(job, token)]
        if not keep:
            return
        if len(keep) < len(jobs):
            mask = kvcache.select_rows(cache, mask, keep)
        nxt = torch.tensor([tokens[i] for i in keep], device=ids.device)
        run = self._run
        if run.cache is None or run.mask is None or run.next_tokens is None:
            run.cache, run.mask, run.next_tokens = cache, mask, nxt
        else:
            run.cache, run.mask = kvcache.merge(run.cache, run.mask, cache, mask)
            run.next_tokens = torch.cat([run.next_tokens, nxt])
        run.rows.extend(jobs[i] for i in keep)
        run.plan = None
        self.stats.max_rows = max(self.stats.max_rows, len(run.rows))

    def _decode(self) -> None:
        run = self._run
        assert run.mask is not None and run.next_tokens is not None
        rows = run.rows
        if run.plan is None:
            run.plan = stack_rows(self.model, [j.row for j in rows], decisions=[j.decisions for j in rows])
        # This token's position is the number of real tokens before it (padding does not count).
        positions = run.mask.sum(-1, keepdim=True)
        run.mask = torch.cat([run.mask, torch.ones_like(run.mask[:, :1])], dim=1)
        logits = self._forward(run.plan, run.next_tokens.view(-1, 1), run.mask, positions, run.cache)
        self.stats.decode_steps += 1
        self.stats.decode_rows += len(rows)
        tokens = pick_tokens(logits, [j.sampling for j in rows])
        keep = [i for i, (job, token) in enumerate(zip(rows, tokens, strict=True)) if not self._accept(job, token)]
        if len(keep) == len(rows):
            run.next_tokens = torch.tensor(tokens, device=run.mask.device)
            return
        if not keep:
            self._run = _Running()
            return
        run.mask = kvcache.select_rows(run.cache, run.mask, keep)
        run.next_tokens = torch.tensor([tokens[i] for i in keep], device=run.mask.device)
        run.rows = [rows[i] for i in keep]
        run.plan = None

    def _accept(self, job: Job, token: int) -> bool:
        """Record a row's new token and tell its request; True when the row is done (or its client left)."""
        reason = take_token(job, token, self.eos_ids, self.context_length)
        if reason is not None and reason != CANCELLED:
            self.stats.completed += 1
        return reason is not None
