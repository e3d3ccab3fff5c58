"""Between HTTP and the batcher: prompts to token ids, one job per choice, events back onto the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from steerlab import prompts
from steerlab.errors import SteerlabError
from steerlab.guard.screen import Guard
from steerlab.models import LoadedModel
from steerlab.serve.access import KeyRing, authorize
from steerlab.serve.audit import AuditLog
from steerlab.serve.batcher import Event, Job
from steerlab.serve.engine import Engine
from steerlab.serve.errors import ApiError
from steerlab.serve.keys import ApiKey
from steerlab.serve.protocol import ChatMessage, SamplingFields, Steering
from steerlab.serve.registry import Registry, Resolved
from steerlab.serve.sampling import Sampling
from steerlab.serve.textstream import TextStream


@dataclass
class ServeConfig:
    model_id: str
    default_max_tokens: int = 256
    max_tokens_cap: int = 2048


@dataclass
class Choice:
    index: int
    text: str = ""
    finish_reason: str | None = None
    completion_tokens: int = 0


@dataclass
class Run:
    """One request in flight: its jobs (one per choice) and the queue their events arrive on."""

    id: str
    resolved: Resolved
    prompt_tokens: int
    jobs: list[Job] = field(default_factory=list)
    queue: asyncio.Queue[tuple[int, Event]] = field(default_factory=asyncio.Queue)
    choices: list[Choice] = field(default_factory=list)
    created: int = field(default_factory=lambda: int(time.time()))

    def cancel(self) -> None:
        for job in self.jobs:
            job.cancel()

    async def events(self) -> AsyncIterator[tuple[int, Event]]:
        """Every event of every choice, until all have finished. An error ends the run with ApiError."""
        open_choices = len(self.jobs)
        while open_choices:
            index, event = await self.queue.get()
            if event.error is not None:
                self.cancel()
                raise ApiError(event.error, status=500, code="generation_failed")
            choice = self.choices[index]
            choice.text += event.text
            choice.completion_tokens = event.completion_tokens
            if event.finish_reason is not None:
                choice.finish_reason = event.finish_reason
                open_choices -= 1
            yield index, event

    @property
    def completion_tokens(self) -> int:
        return sum(c.completion_tokens for c in self.choices)

    def usage(self) -> dict[str, int]:
        done = self.completion_tokens
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": done,
            "total_tokens": self.prompt_tokens + done,
        }


class Service:
    def __init__(
        self,
        model: LoadedModel,
        registry: Registry,
        batcher: Engine,
        audit: AuditLog,
        config: ServeConfig,
        keys: KeyRing | None = None,
        guard: Guard | None = None,
    ) -> None:
        self.model = model
        self.registry = registry
        self.batcher = batcher
        self.audit = audit
        self.config = config
        self.keys = keys  # None: no authentication (the server then listens on loopback only)
        self.guard = guard  # None: no protected directions

    def admit(self, key: ApiKey | None, spec: Steering, resolved: Resolved) -> None:
        """The checks after resolution: what the key may use, then the protected directions (on the combined kit)."""
        if key is not None:
            authorize(key, spec, resolved.kit)
        self.batcher.check_kit(resolved.kit)
        if self.guard is not None:
            breach = self.guard.screen(resolved.kit)
            if breach is not None:
                raise ApiError(breach.message(), code="protected_direction", param="steering")

    # ----- checks and encoding -----
    def check_model(self, name: str) -> None:
        accepted = {"", self.config.model_id, self.model.name}
        if name not in accepted:
            raise ApiError(
                f"model {name!r} is not served here; this server serves {self.config.model_id!r} (see /v1/models).",
                status=404,
                code="model_not_found",
                param="model",
            )

    def chat_ids(self, messages: list[ChatMessage]) -> list[int]:
        """The chat endpoint's prompt, rendered as extraction and the bench render theirs (developer = system)."""
        turns = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in messages]
        try:
            return prompts.messages_ids(self.model.tokenizer, turns)
        except SteerlabError as exc:
            raise ApiError(str(exc), code="invalid_messages", param="messages") from exc

    def text_ids(self, prompt: str) -> list[int]:
        return prompts.text_ids(self.model.tokenizer, prompt)

    def max_tokens(self, asked: int | None, prompt_len: int) -> int:
        limit = self.batcher.context_length
        if limit is not None and prompt_len >= limit:
            raise ApiError(
                f"the prompt has {prompt_len} tokens; this model's context is {limit}. Shorten the prompt.",
                code="context_length_exceeded",
                param="messages",
            )
        if asked is not None and asked > self.config.max_tokens_cap:
            raise ApiError(
                f"max_tokens {asked} is above this server's cap of {self.config.max_tokens_cap}.",
                code="max_tokens_too_large",
                param="max_tokens",
            )
        return asked or self.config.default_max_tokens

    # ----- running -----
    def start(self, body: SamplingFields, resolved: Resolved, prompts: list[list[int]]) -> Run:
        """Submit n jobs per prompt; choice k*n + j is prompt k's j-th sample."""
        loop = asyncio.get_running_loop()
        run = Run(id=uuid.uuid4().hex[:24], resolved=resolved, prompt_tokens=sum(len(p) for p in prompts))
        for ids in prompts:
            limit = self.max_tokens(body.token_limit(), len(ids))
            for _ in range(body.n):
                index = len(run.jobs)
                seed = None if body.seed is None else body.seed + index
                job = Job(
                    prompt_ids=ids,
                    row=resolved.row,
                    sampling=Sampling(temperature=body.temperature, top_p=body.top_p, seed=seed),
                    stream=TextStream(self.model.tokenizer, body.stop_list()),
                    max_tokens=limit,
                    sink=_sink(loop, run.queue, index),
                    ignore_eos=body.ignore_eos,
                    kit=resolved.kit,
                )
                run.jobs.append(job)
                run.choices.append(Choice(index))
        for job in run.jobs:
            self.batcher.submit(job)
        return run

    def log(
        self,
        endpoint: str,
        body: SamplingFields,
        run: Run | None,
        status: str,
        client: str | None,
        principal: str | None = None,
        **extra: Any,
    ) -> None:
        """`principal`: the authenticated key's id (None without --api-keys); `user` is only what the client says."""
        resolved = run.resolved if run is not None else None
        self.audit.write(
            {
                "request_id": run.id if run is not None else None,
                "endpoint": endpoint,
                "model": self.config.model_id,
                "client": client,
                "principal": principal,
                "user": body.user,
                "status": status,
                "kit": resolved.label if resolved is not None else None,
                "steering_hash": resolved.steering_hash if resolved is not None else None,
                "vectors": resolved.entries if resolved is not None else [],
                "n": body.n,
                "stream": body.stream,
                "prompt_tokens": run.prompt_tokens if run is not None else 0,
                "completion_tokens": run.completion_tokens if run is not None else 0,
                "finish_reasons": [c.finish_reason for c in run.choices] if run is not None else [],
                **_conditions(run),
                **extra,
            }
        )

    def log_unauthenticated(self, endpoint: str, client: str | None, error: ApiError) -> None:
        self.audit.write(
            {
                "endpoint": endpoint,
                "model": self.config.model_id,
                "client": client,
                "principal": None,
                "status": "unauthorized" if error.status == 401 else "rejected",
                "error": error.code,
            }
        )


def _conditions(run: Run | None) -> dict[str, Any]:
    """Conditional steering's per-choice record (each condition's score and decision); nothing when there is none."""
    if run is None or not any(job.conditions for job in run.jobs):
        return {}
    return {"conditions": [job.conditions for job in run.jobs]}


def _sink(loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[tuple[int, Event]], index: int) -> Any:
    def deliver(event: Event) -> None:
        # Called on the batcher thread; the queue belongs to the event loop, which may have closed meanwhile.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(queue.put_nowait, (index, event))

    return deliver
