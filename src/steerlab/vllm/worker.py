"""Inside vLLM's model runner: the slot tables installed on the loaded model, and each step's token -> row map.

After `load_model`, every decoder layer's forward is wrapped (the instance's own `forward`; no file is patched) to
call `steerlab::steer_` on its output with that layer's table views. vLLM compiles the model later (warm-up), so the
compiled graph contains the op and reads the tables' fixed addresses. Before each forward, outside the graph,
`_prepare_inputs` has ordered the batch: we walk `input_batch.req_ids` in that order and with the same token counts,
give each request its kit's slot (resolving and filling it on first use), and write one row per token: the slot's
prompt row for positions before the request's prompt length, its generated row after, row 0 for unsteered requests.
A conditional kit's request also has its prompt read (steerlab.vllm.gating) and changes slot once it is decided.
The scores are collected right after the forward (and, should that hook be missing, before the next one), so the
decision, and the request's condition record for the server (steerlab.vllm.records), exist before the step's output
leaves the worker.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from torch import nn

from steerlab.anatomy import find_anatomy
from steerlab.errors import SteerlabError
from steerlab.plan import RowPlan, compile_row
from steerlab.vllm import op, reads
from steerlab.vllm.gating import Gating
from steerlab.vllm.kits import KitResolver, Steering
from steerlab.vllm.reads import ReadBuffers, ReadShape
from steerlab.vllm.records import record_name, write_record
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
        reads = ReadShape(
            shape.n_layers, shape.hidden, max_seqs, settings.max_conditions, shape.max_tokens, dtype, device
        )
        self.gating = Gating(ReadBuffers(reads))
        self.kit_of: dict[str, str | None] = {}  # request id -> kit digest (None: unsteered)
        self.key_of: dict[str, str] = {}  # request id -> the slot key it holds (a conditional one changes once)
        self.steering: dict[str, Steering] = {}  # kit digest -> its kit, for (re)filling a slot
        self.rows: dict[str, RowPlan] = {}  # kit digest -> its compiled plan
        self.fills = 0  # how many times a slot was (re)filled: what the slot tests read
        # Records are written by one rank only: every rank decides alike, and a second writer could put a file back
        # after the server took it.
        self.records = settings.records if _first_rank() else None
        self.record_of: dict[str, str] = {}  # request id -> its record's name (conditional requests that asked)
        _wrap_layers(model, self.target.n_layers, self.tables, self.gating.buffers)

    def map_tokens(self, runner: Any, num_scheduled: np.ndarray) -> None:
        batch = runner.input_batch
        n = batch.num_reqs
        req_ids = list(batch.req_ids[:n])
        self.collect()
        self.pool.hold_only(set(req_ids))
        counts = [int(num_scheduled[i]) for i in range(n)]
        self.gating.begin(sum(counts))
        rows, offset = [], 0
        for i, req_id in enumerate(req_ids):
            start, count, prompt_len = int(batch.num_computed_tokens_cpu[i]), counts[i], int(batch.num_prompt_tokens[i])
            slot = self._slot(runner, req_id)
            if slot is None:
                rows.append(np.full(count, NO_STEERING, dtype=np.int64))
            else:
                generated = start + np.arange(count) >= prompt_len
                rows.append(np.where(generated, row_of(slot, 1), row_of(slot, 0)).astype(np.int64))
                self._read(i, req_id, (start, count, offset), prompt_len)
            offset += count
        self.gating.end()
        flat = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
        self.tables.token_rows.zero_()  # padded rows, if any, stay unsteered
        self.tables.set_token_rows(torch.from_numpy(flat))

    def collect(self) -> None:
        """The last forward's condition scores: decisions, and the records of requests that asked for one."""
        self.gating.collect()
        for req_id in self.gating.take_decided():
            name = self.record_of.pop(req_id, None)
            if name is None or self.records is None:
                continue
            try:
                write_record(self.records, name, self.gating.records[req_id])
            except OSError as exc:  # a lost audit record must not fail the step (the server notes it missing)
                log.warning("steerlab: could not write the condition record of %s: %s", req_id, exc)

    def forget(self, finished: set[str]) -> None:
        for req_id in finished:
            self.kit_of.pop(req_id, None)
            self.record_of.pop(req_id, None)
            self.key_of.pop(req_id, None)
            self.gating.forget(req_id)
            self.pool.release(req_id)
        if finished:  # a kit no live request has is resolved again if it comes back
            live = set(self.kit_of.values())
            self.steering = {d: s for d, s in self.steering.items() if d in live}
            self.rows = {d: r for d, r in self.rows.items() if d in live}

    def _read(self, index: int, req_id: str, span: tuple[int, int, int], prompt_len: int) -> None:
        digest = self.kit_of[req_id]
        if digest is None or not self.steering[digest].conditional:
            return
        if req_id not in self.gating.decided and span[0] + span[1] > prompt_len:
            log.warning("steerlab: %s computes generated tokens before its condition was decided", req_id)
        self.gating.read(index, req_id, self.rows[digest], span, prompt_len)

    def _slot(self, runner: Any, req_id: str) -> int | None:
        if req_id not in self.kit_of:
            params = runner.requests[req_id].sampling_params
            steering = self.resolver.for_request(getattr(params, "extra_args", None))
            self.kit_of[req_id] = None if steering is None else steering.digest
            name = record_name(getattr(params, "extra_args", None))
            if steering is not None and steering.conditional and name is not None:
                self.record_of[req_id] = name
            if steering is not None:
                self.steering[steering.digest] = steering
                if steering.digest not in self.rows:
                    self.rows[steering.digest] = compile_row(self.target, steering.kit)
        digest = self.kit_of[req_id]
        if digest is None:
            return None
        conditional = self.steering[digest].conditional
        key = self.gating.key(digest, req_id) if conditional else digest
        if self.key_of.get(req_id, key) != key:  # decided: let go of the undecided slot first
            self.pool.release(req_id)
        self.key_of[req_id] = key
        got = self.pool.acquire(key, req_id)
        if got is None:  # the scheduler's gate rules this out; should it ever fail, refuse rather than steer wrongly
            raise SteerlabError(f"no free steering slot for request {req_id}; every slot is held by a running kit.")
        slot, fresh = got
        if fresh:
            row = self.rows[digest]
            self.tables.fill(slot, self.gating.plan(row, req_id) if conditional else row)
            self.fills += 1
        return slot


def _wrap_layers(model: nn.Module, n_layers: int, tables: SlotTables, reads: ReadBuffers) -> None:
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
        layer.forward = _steered_forward(layer.forward, index, tables.layer_buffers(index), reads, empty)


def _steered_forward(
    inner: Any, index: int, buffers: tuple[torch.Tensor, ...], reads: ReadBuffers, empty: torch.Tensor
) -> Any:
    read_buffers = reads.layer_buffers(index)

    def forward(*args: Any, **kwargs: Any) -> Any:
        out = inner(*args, **kwargs)
        hidden, residual = _stream_parts(out, empty)
        # A condition reads the block's output before any steering at that block, as on the transformers engine.
        torch.ops.steerlab.read_(hidden, residual, *read_buffers, index)
        torch.ops.steerlab.steer_(hidden, residual, *buffers)
        return out

    return forward


def _stream_parts(out: Any, empty: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A decoder layer's output as (hidden, residual); the residual is empty where the layer returns the stream."""
    if not isinstance(out, tuple):
        return out, empty
    return out[0], out[1] if len(out) > 1 and out[1] is not None else empty


def _first_rank() -> bool:
    try:
        from vllm.distributed.parallel_state import get_tensor_model_parallel_rank

        return bool(get_tensor_model_parallel_rank() == 0)
    except (ImportError, AssertionError):  # no tensor-parallel group (one process): the only rank
        return True


def install(runner: Any) -> None:
    """After the model is loaded: tables and wrapped layers (once per runner)."""
    if getattr(runner, ATTR, None) is None:
        op.register()
        reads.register()
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
    execute = GPUModelRunner.__dict__["execute_model"]
    if not getattr(execute, "_steerlab", False):
        GPUModelRunner.execute_model = _after_execute(execute)  # type: ignore[method-assign]


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


def _after_execute(execute: Any) -> Any:
    def execute_model(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = execute(self, *args, **kwargs)
        state = getattr(self, ATTR, None)
        if state is not None:
            state.collect()
        return result

    execute_model._steerlab = True  # type: ignore[attr-defined]
    return execute_model
