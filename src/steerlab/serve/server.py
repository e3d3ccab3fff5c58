"""Putting it together: a Service from options, run by uvicorn in the foreground or on a background thread."""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import uvicorn

from steerlab.errors import SteerlabError
from steerlab.guard.screen import DEFAULT_THRESHOLD, Guard
from steerlab.models import LoadedModel
from steerlab.serve.access import KeyRing
from steerlab.serve.app import create_app
from steerlab.serve.audit import AuditLog
from steerlab.serve.batcher import Batcher
from steerlab.serve.engine import Engine
from steerlab.serve.registry import Limits, Registry
from steerlab.serve.service import ServeConfig, Service


def build_service(
    model: LoadedModel,
    kits_dir: str | Path | None = None,
    store: str | None = None,
    default: str | None = None,
    limits: Limits | None = None,
    audit_path: str | Path | None = None,
    max_batch: int = 16,
    max_prefill_tokens: int = 8192,
    model_id: str | None = None,
    default_max_tokens: int = 256,
    max_tokens_cap: int = 2048,
    require_trusted: bool = False,
    api_keys: str | Path | KeyRing | None = None,
    protect: Sequence[str] = (),
    protect_threshold: float = DEFAULT_THRESHOLD,
    protect_norms: dict[int, float] | None = None,
    engine: Engine | None = None,
) -> Service:
    """`api_keys`: a key file (or KeyRing); None serves without authentication. `protect`: addresses of protected
    directions, screened against each request's combined steering (steerlab.guard), with doses measured against
    `protect_norms` (None: see build_guard). `engine`: what generates (None:
    steerlab's own transformers batcher on `model`; steerlab.vllm.serving gives vLLM's)."""
    registry = Registry(
        model, kits_dir=kits_dir, store=store, default=default, limits=limits, require_trusted=require_trusted
    )
    config = ServeConfig(
        model_id=model_id or model.name, default_max_tokens=default_max_tokens, max_tokens_cap=max_tokens_cap
    )
    keys = KeyRing.load(Path(api_keys)) if isinstance(api_keys, str | Path) else api_keys
    guard = build_guard(model, protect, protect_threshold, registry.store, protect_norms) if protect else None
    if guard is not None and default is not None:
        guard.check(registry.resolve(default).kit)  # a default that breaches would refuse every request: say so now
    batcher = engine or Batcher(model, max_batch=max_batch, max_prefill_tokens=max_prefill_tokens)
    return Service(model, registry, batcher, AuditLog(audit_path), config, keys=keys, guard=guard)


def build_guard(
    model: LoadedModel,
    protect: Sequence[str],
    threshold: float,
    store: object = None,
    norms: dict[int, float] | None = None,
) -> Guard:
    """Protected directions measured against `norms`, by default the served model's own residual norms, or, for a
    model without weights here (vLLM's skeleton), the norms shipped for it (store refs: the server's store, else the
    default local one, which holds the starter pack)."""
    from steerlab.guard.norms import measure_reference_norms, shipped_norms
    from steerlab.guard.protected import load_protected

    if norms is None:
        weightless = any(p.is_meta for p in model.hf_model.parameters())
        norms = shipped_norms(model.fingerprint, model.name) if weightless else measure_reference_norms(model)
    return Guard([load_protected(address, norms, store, model) for address in protect], threshold)


def check_listen(host: str, authenticated: bool, insecure: bool = False) -> None:
    """Without API keys the server answers anyone who can reach it: only loopback, unless --insecure says so."""
    if authenticated or insecure or is_loopback(host):
        return
    raise SteerlabError(
        f"--host {host} is reachable from other machines, and this server has no --api-keys: anyone who reaches it "
        "could steer the model. Give --api-keys FILE (make one with `steerlab serve keygen`), listen on 127.0.0.1, "
        "or pass --insecure if you mean it."
    )


def is_loopback(host: str) -> bool:
    """Every address `host` resolves to is a loopback one (a name that does not resolve is not loopback)."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(str(info[4][0]).split("%")[0]).is_loopback for info in infos)


def serve(service: Service, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Blocks until interrupted."""
    service.batcher.start()
    uvicorn.run(create_app(service), host=host, port=port, log_level="info")


class BackgroundServer:
    """A real HTTP server on loopback, on a free port, on a thread: for tests, benchmarks and notebooks."""

    def __init__(self, service: Service, host: str = "127.0.0.1") -> None:
        self.service = service
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, 0))
        self.host, self.port = self._sock.getsockname()[:2]
        config = uvicorn.Config(create_app(service), log_level="warning", lifespan="on")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> BackgroundServer:
        self.service.batcher.start()
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise SteerlabError(f"the server on {self.url} did not start within {timeout:.0f} s.")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(30)
        self.service.batcher.close()
        self._sock.close()

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()
