"""In vLLM's scheduler (the engine core): a request whose kit finds no free steering slot waits.

The worker's slot pool can give a slot to every kit of a step only when a step holds no more distinct kits than
there are slots. So the scheduler keeps that true: `Scheduler._handle_blocked_waiting_request` (the method vLLM
already asks, per waiting request and step, "may this one start now?") is wrapped (a method, not a file). A steered
request may start when its kit is already running, or when the running requests hold fewer distinct kits than
`--max-steering-slots`; otherwise it is skipped this step and stays first in line, exactly as vLLM skips a LoRA
request past `max_loras`. Running requests are never refused, so nothing is dropped, and no request ever runs without
its kit or with another's. The running list counts every started request, scheduled in this step or not, so the
kits in any one step are at most the slots. A kit comes from the same resolver the worker uses (the same digest).
A conditional kit's request counts as a kit of its own: it holds one slot at a time, but which one depends on its
decision (steerlab.vllm.gating), so two requests with the same conditional kit may need two.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from steerlab.errors import SteerlabError
from steerlab.vllm.kits import KitResolver
from steerlab.vllm.settings import Settings
from steerlab.vllm.target import build_target

log = logging.getLogger("steerlab.vllm")
KIT_ATTR = "_steerlab_kit"  # on each vLLM Request: its kit digest, "" when unsteered (resolved once)
STATE_ATTR = "_steerlab_waiting"


class SlotGate:
    """One scheduler's view: the slot count and the resolver that turns a request's steering into its digest."""

    def __init__(self, resolver: KitResolver, slots: int) -> None:
        self.resolver = resolver
        self.slots = slots
        self.waited = 0  # how many times a request was held back for want of a slot

    @classmethod
    def for_config(cls, vllm_config: Any, settings: Settings) -> SlotGate:
        """The gate of one engine: the worker's slot count (settings, else one per sequence) and resolver."""
        config = vllm_config.model_config
        target = build_target(config.hf_config, config.model, torch.device("cpu"), config.dtype)
        return cls(KitResolver(settings, target), settings.max_slots or int(vllm_config.scheduler_config.max_num_seqs))

    def kit_of(self, request: Any) -> str:
        found = getattr(request, KIT_ATTR, None)
        if found is None:
            found = self._digest(request)
            setattr(request, KIT_ATTR, found)
        return str(found)

    def may_start(self, request: Any, running: list[Any]) -> bool:
        kit = self.kit_of(request)
        if not kit:
            return True
        kits = {self.kit_of(r) for r in running} - {""}
        if kit in kits or len(kits) < self.slots:
            return True
        self.waited += 1
        log.debug("steerlab: %s waits for a steering slot (%d kits running)", request.request_id, len(kits))
        return False

    def _digest(self, request: Any) -> str:
        params = getattr(request, "sampling_params", None)
        try:
            steering = self.resolver.for_request(getattr(params, "extra_args", None))
        except SteerlabError:
            # Admission refuses bad steering before it gets here; if one slips through, count it as a kit of its
            # own (it needs a slot as much as any), and let the worker refuse it.
            return f"unresolved:{request.request_id}"
        if steering is None:
            return ""
        return f"{steering.digest}#{request.request_id}" if steering.conditional else steering.digest


def gate_of(scheduler: Any) -> SlotGate:
    gate = getattr(scheduler, STATE_ATTR, None)
    if gate is None:
        gate = SlotGate.for_config(scheduler.vllm_config, Settings.from_env())
        setattr(scheduler, STATE_ATTR, gate)
    return gate


def patch_scheduler() -> None:
    from vllm.v1.core.sched.scheduler import Scheduler

    handle = Scheduler.__dict__["_handle_blocked_waiting_request"]
    if getattr(handle, "_steerlab", False):
        return

    def _handle_blocked_waiting_request(self: Any, request: Any) -> bool:
        return bool(handle(self, request)) and gate_of(self).may_start(request, self.running)

    _handle_blocked_waiting_request._steerlab = True  # type: ignore[attr-defined]
    Scheduler._handle_blocked_waiting_request = _handle_blocked_waiting_request  # type: ignore[method-assign]
