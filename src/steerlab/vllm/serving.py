"""`steerlab serve --engine vllm`: the server's engine part on vLLM's AsyncLLM with the steerlab plugin.

Everything else is the transformers server's own (steerlab.serve: app, protocol, registry, audit log, page). The
registry resolves a request's `steering` to a Kit as always; here that kit is handed to vLLM as a plugin request:
each entry's vector is written once, by content hash, into a folder this engine owns, and named by an address with
its scale, layers, positions and mode. The plugin resolves those files through the same front door (and refuses
anything outside that folder), so vLLM steers with exactly the vectors the registry checked. Tokens come back one
step at a time and end rows by the same rule as the transformers engine (steerlab.serve.batcher.take_token).

A conditional kit's decisions are made inside vLLM's workers; each comes back as a record file (steerlab.vllm.records)
in a folder of this engine's own, so the audit log holds each condition's score and decision as on the transformers
engine.

AsyncLLM runs on its own event loop on a thread of its own, as the transformers batcher runs on its engine thread:
`submit` is callable from any thread and every event reaches the request through the job's sink.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import shutil
import tempfile
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from steerlab.condition import Condition
from steerlab.errors import SteerlabError
from steerlab.generation import eos_ids
from steerlab.kit import Kit
from steerlab.serve.batcher import CANCELLED, Job, Stats, fail_jobs, finish_job, take_token
from steerlab.serve.errors import ApiError
from steerlab.vector import Vector
from steerlab.vllm.kits import prompt_gated
from steerlab.vllm.records import RECORD_KEY, take_record
from steerlab.vllm.settings import PREFIX
from steerlab.vllm.target import VllmTarget, build_target

log = logging.getLogger("steerlab.vllm")


@dataclass(frozen=True)
class VllmOptions:
    """What `steerlab serve --engine vllm` passes to vLLM (the rest are vLLM's defaults)."""

    max_num_seqs: int = 16
    max_model_len: int = 2048
    max_steering_slots: int | None = None  # None: one per sequence
    dtype: str = "float32"
    gpu_memory_utilization: float = 0.3  # on vLLM's CPU build: the share of CPU memory kept for the KV cache
    enforce_eager: bool = False
    enable_prefix_caching: bool = True
    max_scale: float = 8.0
    max_vectors: int = 8


def unsupported(kit: Kit | None) -> str | None:
    """Why this engine cannot run a kit (None: it can)."""
    if kit is None:
        return None
    reason = prompt_gated(kit)
    if reason is not None:
        return f"{reason}: give them positions 'generated', or serve with --engine transformers."
    if any(entry.vector.card.site == "router" for entry in kit.entries):
        return "expert (router) vectors are not run by the vLLM engine; serve them with --engine transformers."
    return None


def _conditional(kit: Kit | None) -> bool:
    return kit is not None and any(entry.when is not None for entry in kit.standalone_entries())


class SpecWriter:
    """Kits as the plugin's `steering` specs, their vectors saved once each (by content hash) in `folder`."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def spec(self, kit: Kit | None) -> list[dict[str, str]] | None:
        if kit is None:
            return None
        items = []
        for entry in kit.standalone_entries():
            layers = entry.active_layers()
            if not layers:  # an entry that steers no block changes nothing
                continue
            path = self._saved(entry.vector)
            address = f"{path}:{float(entry.scale)!r}@{','.join(str(n) for n in layers)}"
            item = {"address": address, "positions": entry.positions, "mode": entry.mode}
            if entry.when is not None:
                item["when"] = str(self._saved(entry.when))
            items.append(item)
        return items or None

    def _saved(self, vector: Vector | Condition) -> Path:
        path = self.folder / f"{vector.content_hash()}.safetensors"
        with self._lock:
            if not path.exists():
                vector.save(path)
        return path


def serving_target(model: str, dtype: str) -> VllmTarget:
    """The served model as the registry sees it: its architecture on the meta device (checks and fingerprints,
    no weights) and its tokenizer (prompts are rendered and detokenised here, as the transformers engine does)."""
    import torch
    from transformers import AutoConfig, AutoTokenizer, GenerationConfig

    config = AutoConfig.from_pretrained(model)
    target = build_target(config, model, torch.device("cpu"), getattr(torch, dtype))
    target.tokenizer = AutoTokenizer.from_pretrained(model)
    if (Path(model) / "generation_config.json").exists():  # its stop ids, as load_model reads them
        setattr(target.hf_model, "generation_config", GenerationConfig.from_pretrained(model))  # noqa: B010
    return target


class VllmEngine:
    """The server's engine (steerlab.serve.engine.Engine) on vLLM's AsyncLLM."""

    def __init__(self, model: str, target: VllmTarget, options: VllmOptions, spec_folder: Path) -> None:
        self.model = model
        self.target = target
        self.options = options
        self.specs = SpecWriter(spec_folder)
        self.stats = Stats()
        self.context_length: int | None = options.max_model_len
        self.eos_ids = eos_ids(target)
        self._running: set[Job] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="steerlab-vllm", daemon=True)
        self._engine: Any = None
        self._closed = threading.Event()
        self._lock = threading.Lock()  # orders close() against the end of start-up (see _build)
        self.records = Path(tempfile.mkdtemp(prefix="steerlab-vllm-records-"))

    @property
    def active(self) -> int:
        return len(self._running)

    def check_kit(self, kit: Kit | None) -> None:
        reason = unsupported(kit)
        if reason is not None:
            raise ApiError(reason, code="unsupported_steering", param="steering")

    def start(self) -> VllmEngine:
        """Build the engine (minutes on a CPU: vLLM loads and, unless enforce_eager, compiles the model)."""
        self._plugin_environment()
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self._build(), self._loop).result()
        except BaseException:
            self._stop_loop(30.0)
            raise
        return self

    def submit(self, job: Job) -> None:
        if self._closed.is_set() or self._engine is None:
            raise SteerlabError("the vLLM engine is not running; retry against a running server.")
        self._running.add(job)
        asyncio.run_coroutine_threadsafe(self._generate(job), self._loop)

    def close(self, timeout: float = 30.0) -> None:
        with self._lock:
            if self._closed.is_set():
                return
            self._closed.set()
            starting = self._engine is None
        fail_jobs(list(self._running), "the server shut down before this request finished.")
        if starting or not self._thread.is_alive():
            # never started, or still starting: _build shuts vLLM down as soon as it is up, start() the loop
            shutil.rmtree(self.records, ignore_errors=True)
            return
        done = asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop)
        try:
            done.result(timeout)
        except (concurrent.futures.TimeoutError, RuntimeError) as exc:
            log.warning("vLLM did not shut down cleanly: %s", exc)
        self._stop_loop(timeout)

    def _stop_loop(self, timeout: float) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout)
        shutil.rmtree(self.records, ignore_errors=True)

    # ----- on the engine's loop -----
    def _plugin_environment(self) -> None:
        """The plugin reads its settings from the environment in every vLLM process: files only from our own
        folder, the server's limits, the slot count. The server's default kit is composed by the registry, so
        the plugin gets none of its own."""
        os.environ[PREFIX + "KITS"] = str(self.specs.folder)
        os.environ[PREFIX + "MAX_SCALE"] = repr(float(self.options.max_scale))
        os.environ[PREFIX + "MAX_VECTORS"] = str(self.options.max_vectors)
        os.environ[PREFIX + "RECORDS"] = str(self.records)
        os.environ.pop(PREFIX + "DEFAULT_KIT", None)
        os.environ.pop(PREFIX + "MAX_STEERING_SLOTS", None)
        if self.options.max_steering_slots is not None:
            os.environ[PREFIX + "MAX_STEERING_SLOTS"] = str(self.options.max_steering_slots)

    async def _build(self) -> None:
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        o = self.options
        args = AsyncEngineArgs(
            model=self.model,
            dtype=o.dtype,
            max_model_len=o.max_model_len,
            max_num_seqs=o.max_num_seqs,
            gpu_memory_utilization=o.gpu_memory_utilization,
            enforce_eager=o.enforce_eager,
            enable_prefix_caching=o.enable_prefix_caching,
            disable_log_stats=True,
        )
        engine = AsyncLLM.from_engine_args(args)
        with self._lock:
            if self._closed.is_set():
                # close() ran while vLLM was starting (minutes, with this loop blocked): nobody else will shut this
                # engine down, and its engine-core process would outlive the server.
                engine.shutdown()
                raise SteerlabError("the vLLM engine was closed while it was starting.")
            self._engine = engine

    async def _shutdown(self) -> None:
        if self._engine is not None:
            self._engine.shutdown()
            self._engine = None

    def _params(self, job: Job, record: str | None) -> Any:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        spec = self.specs.spec(job.kit)
        extra: dict[str, Any] | None = None if spec is None else {"steering": spec}
        if extra is not None and record is not None:
            extra[RECORD_KEY] = record
        # vLLM's own end-of-sequence test is off: rows end by steerlab's rule (the same stop ids as the
        # transformers engine, which vLLM is told as stop tokens so it stops computing there too).
        return SamplingParams(
            temperature=job.sampling.temperature,
            top_p=job.sampling.top_p,
            seed=job.sampling.seed,
            max_tokens=job.max_tokens,
            ignore_eos=True,
            stop_token_ids=[] if job.ignore_eos else sorted(self.eos_ids),
            detokenize=False,
            output_kind=RequestOutputKind.DELTA,
            extra_args=extra,
        )

    async def _generate(self, job: Job) -> None:
        from vllm import TokensPrompt

        request_id = uuid.uuid4().hex
        record = request_id if _conditional(job.kit) else None
        self.stats.max_rows = max(self.stats.max_rows, len(self._running))
        reason: str | None = None
        try:
            params = self._params(job, record)
            stream = self._engine.generate(TokensPrompt(prompt_token_ids=job.prompt_ids), params, request_id)
            async for output in stream:
                if record is not None:  # decided and written before the first token left the worker
                    job.conditions, record = self._taken(record), None
                for token in output.outputs[0].token_ids:
                    reason = take_token(job, int(token), self.eos_ids, self.context_length)
                    if reason is not None:
                        break
                if reason is not None:
                    break
            if reason is None and not job.cancelled:  # vLLM ended the row first (its context limit)
                reason = finish_job(job, job.stream.flush(), "length")
        except Exception as exc:  # one failed request must not take the server down: fail it alone
            log.exception("vLLM request failed")
            fail_jobs([job], f"generation failed: {type(exc).__name__}: {exc}")
        finally:
            self._running.discard(job)
            if reason is not None and reason != CANCELLED:
                self.stats.completed += 1
            if reason is not None or job.cancelled:
                await self._abort(request_id)

    def _taken(self, record: str) -> list[dict[str, Any]]:
        conditions = take_record(self.records, record)
        if conditions is None:
            log.warning("no condition record came back for request %s", record)
            return []
        return conditions

    async def _abort(self, request_id: str) -> None:
        try:
            await self._engine.abort(request_id)
        except Exception:  # already finished in vLLM: nothing to stop
            log.debug("abort of %s: already gone", request_id)
