"""Inside vLLM's model runner: the slot tables installed on the loaded model, and each step's token -> row map.

After `load_model`, every decoder layer's forward is wrapped (the instance's own `forward`; no file is patched) to
call `steerlab::steer_` on its output with that layer's table views. vLLM compiles the model later (warm-up), so the
compiled graph contains the op and reads the tables' fixed addresses. Before each forward, outside the graph,
`_prepare_inputs` has ordered the batch: we walk `input_batch.req_ids` in that order and with the same token counts,
give each request its kit's slot (resolving and filling it on first use), and write one row per token: the slot's
prompt row for positions before the request's prompt length, its generated row after, row 0 for unsteered requests.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from torch import nn

from steerlab.anatomy import find_anatomy
from steerlab.errors import SteerlabError
from steerlab.plan import compile_row
from steerlab.vllm import op
from steerlab.vllm.kits import KitResolver, Steering
from steerlab.vllm.settings import Settings
from steerlab.vllm.slots import SlotPool
from steerlab.vllm.tables import NO_STEERING, SlotTables, TableShape, row_of
from steerlab.vllm.target import build_target

log = logging.getLogger("steerlab.vllm")
ATTR = "_steerlab_state"


class RunnerState:
    """What one model runner holds: the tables, the slot pool, the kit resolver, and which kit each request has."""

    def __init__(self, runner: Any, settings: Settings) -> None:
        config = runner.vllm_config
        model = runner.model
        device = next(model.parameters()).device
        dtype = config.model_config.dtype
        self.target = build_target(config.model_config.hf_config, config.model_config.model, device, dtype)
        max_seqs = int(config.scheduler_config.max_num_seqs)
        # Fewer slots than sequences is fine: the scheduler holds back a kit that finds no free slot
        # (steerlab.vllm.waiting), so a step never has more distinct kits than slots.
        slots = settings.max_slots or max_seqs
        shape = TableShape(
            n_layers=self.target.n_layers,
            hidden=self.target.hidden_size,
            n_slots=slots,
            max_ablations=settings.max_ablations,
            max_tokens=int(config.scheduler_config.max_num_batched_tokens),
            dtype=dtype,
            device=device,
        )
        self.tables = SlotTables(shape)
        self.pool = SlotPool(slots)
        self.resolver = KitResolver(settings, self.target)
        self.kit_of: dict[str, str | None] = {}  # request id -> kit digest (None: unsteered)
        self.steering: dict[str, Steering] = {}  # kit digest -> its kit, for (re)filling a slot
        self.fills = 0  # how many times a slot was (re)filled: what the slot tests read
        _wrap_layers(model, self.target.n_layers, self.tables)

    def map_tokens(self, runner: Any, num_scheduled: np.ndarray) -> None:
        batch = runner.input_batch
        n = batch.num_reqs
        req_ids = list(batch.req_ids[:n])
        self.pool.hold_only(set(req_ids))
        rows = []
        for i, req_id in enumerate(req_ids):
            slot = self._slot(runner, req_id)
            count = int(num_scheduled[i])
            if slot is None:
                rows.append(np.full(count, NO_STEERING, dtype=np.int64))
                continue
            positions = int(batch.num_computed_tokens_cpu[i]) + np.arange(count)
            generated = positions >= int(batch.num_prompt_tokens[i])
            rows.append(np.where(generated, row_of(slot, 1), row_of(slot, 0)).astype(np.int64))
        flat = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
        self.tables.token_rows.zero_()  # padded rows, if any, stay unsteered
        self.tables.set_token_rows(torch.from_numpy(flat))

    def forget(self, finished: set[str]) -> None:
        for req_id in finished:
            self.kit_of.pop(req_id, None)
            self.pool.release(req_id)
        if finished:  # a kit no live request has is resolved again if it comes back
            live = set(self.kit_of.values())
            self.steering = {d: s for d, s in self.steering.items() if d in live}

    def _slot(self, runner: Any, req_id: str) -> int | None:
        if req_id not in self.kit_of:
            params = runner.requests[req_id].sampling_params
            steering = self.resolver.for_request(getattr(params, "extra_args", None))
            self.kit_of[req_id] = None if steering is None else steering.digest
            if steering is not None:
                self.steering[steering.digest] = steering
        digest = self.kit_of[req_id]
        if digest is None:
            return None
        got = self.pool.acquire(digest, req_id)
        if got is None:  # the scheduler's gate rules this out; should it ever fail, refuse rather than steer wrongly
            raise SteerlabError(f"no free steering slot for request {req_id}; every slot is held by a running kit.")
        slot, fresh = got
        if fresh:
            self.tables.fill(slot, compile_row(self.target, self.steering[digest].kit))
            self.fills += 1
        return slot


def _wrap_layers(model: nn.Module, n_layers: int, tables: SlotTables) -> None:
    inner: Any = getattr(model, "model", None)
    layers: Any = inner.layers if isinstance(getattr(inner, "layers", None), nn.ModuleList) else None
    if layers is None:
        layers = find_anatomy(model).layers
    if len(layers) != n_layers:
        raise SteerlabError(f"vLLM's model has {len(layers)} decoder layers; its config says {n_layers}.")
    empty = torch.empty(0, dtype=tables.shape.dtype, device=tables.shape.device)
    for index, layer in enumerate(layers):
        if type(layer).__name__ == "PPMissingLayer":  # another pipeline stage owns it
            continue
        layer.forward = _steered_forward(layer.forward, tables.layer_buffers(index), empty)


def _steered_forward(inner: Any, buffers: tuple[torch.Tensor, ...], empty: torch.Tensor) -> Any:
    def forward(*args: Any, **kwargs: Any) -> Any:
        out = inner(*args, **kwargs)
        if isinstance(out, tuple):
            residual = out[1] if len(out) > 1 and out[1] is not None else empty
            torch.ops.steerlab.steer_(out[0], residual, *buffers)
        else:
            torch.ops.steerlab.steer_(out, empty, *buffers)
        return out

    return forward


def install(runner: Any) -> None:
    """After the model is loaded: tables and wrapped layers (once per runner)."""
    if getattr(runner, ATTR, None) is None:
        op.register()
        setattr(runner, ATTR, RunnerState(runner, Settings.from_env()))
        log.info("steerlab: steering tables installed")


def before_forward(runner: Any, scheduler_output: Any, num_scheduled: np.ndarray) -> None:
    state = getattr(runner, ATTR, None)
    if state is None:
        return
    state.forget(set(getattr(scheduler_output, "finished_req_ids", ()) or ()))
    state.map_tokens(runner, num_scheduled)


def patch_runner() -> None:
    """Wrap the model runner classes' `load_model` and `_prepare_inputs` (methods, not files)."""
    from vllm.v1.worker.gpu_model_runner import GPUModelRunner

    classes: list[type] = [GPUModelRunner]
    try:
        from vllm.v1.worker.cpu_model_runner import CPUModelRunner

        classes.append(CPUModelRunner)
    except ImportError:  # a build without the CPU runner
        pass
    for cls in classes:
        if "load_model" in cls.__dict__ and not getattr(cls.__dict__["load_model"], "_steerlab", False):
            cls.load_model = _after_load(cls.__dict__["load_model"])  # type: ignore[attr-defined]
    prepare = GPUModelRunner.__dict__["_prepare_inputs"]
    if not getattr(prepare, "_steerlab", False):
        GPUModelRunner._prepare_inputs = _after_prepare(prepare)  # type: ignore[method-assign]


def _after_load(load: Any) -> Any:
    def load_model(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = load(self, *args, **kwargs)
        install(self)
        return result

    load_model._steerlab = True  # type: ignore[attr-defined]
    return load_model


def _after_prepare(prepare: Any) -> Any:
    def _prepare_inputs(self: Any, scheduler_output: Any, num_scheduled_tokens: Any, *args: Any, **kw: Any) -> Any:
        result = prepare(self, scheduler_output, num_scheduled_tokens, *args, **kw)
        before_forward(self, scheduler_output, num_scheduled_tokens)
        return result

    _prepare_inputs._steerlab = True  # type: ignore[attr-defined]
    return _prepare_inputs
