"""What the server asks of an engine: the transformers Batcher (steerlab.serve.batcher) or vLLM's
(steerlab.vllm.serving). The HTTP side, the registry, the audit log and the page are the same for both."""

from __future__ import annotations

from typing import Protocol

from steerlab.kit import Kit
from steerlab.serve.batcher import Job, Stats


class Engine(Protocol):
    stats: Stats
    context_length: int | None

    @property
    def active(self) -> int:
        """Sequences running or waiting."""
        ...

    def start(self) -> object:
        """Ready to take jobs when this returns."""
        ...

    def submit(self, job: Job) -> None: ...

    def close(self, timeout: float = 30.0) -> None:
        """Stop; every job not finished gets an error event."""
        ...

    def check_kit(self, kit: Kit | None) -> None:
        """Refuse (ApiError) a resolved kit this engine cannot run, at admission."""
        ...
