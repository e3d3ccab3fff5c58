"""The parent's side of the reference-worker protocol (bench/refs/_worker.py): start, run a round, close.

A worker that cannot start or run keeps its exact error instead of a number, and the benchmark goes on.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from steerlab import Vector

REFS_DIR = Path(__file__).resolve().parent
REFS_PYTHON = REFS_DIR.parent / ".venv-refs" / "bin" / "python"
MARK = "@@bench "
LOAD_TIMEOUT_S = 600.0
RUN_TIMEOUT_S = 900.0


class RefWorker:
    """One reference library in its own process, loaded once, timing its own training call per `run()`."""

    def __init__(self, name: str, script: str | Path, spec: dict[str, Any], python: Path = REFS_PYTHON) -> None:
        self.name = name
        self.error: str | None = None
        self.ready: dict[str, Any] = {}
        self.last: dict[str, Any] = {}
        self.traceback = ""
        self.proc: subprocess.Popen[bytes] | None = None
        self._buffer = b""
        self._dir = Path(tempfile.mkdtemp(prefix=f"steerlab-bench-{name}-"))
        self._log = self._dir / "stderr.log"
        failed = python.parents[1] / "install-failed.log"
        if failed.exists():
            self.error = f"`make bench-refs` could not install the references: {_tail(failed)}"
            return
        if not python.exists():
            self.error = f"{python} does not exist: run `make bench-refs` to create the reference environment"
            return
        (self._dir / "spec.json").write_text(json.dumps(spec))
        env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REFS_DIR)}
        with self._log.open("w") as log:
            self.proc = subprocess.Popen(
                [str(python), str(REFS_DIR / script), str(self._dir / "spec.json")],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                cwd=REFS_DIR,
                env=env,
                bufsize=0,
            )

    def wait_ready(self) -> None:
        if self.error is None:
            self.ready = self._read(LOAD_TIMEOUT_S)

    def run(self) -> float | None:
        """One training call: the seconds the worker measured around it. Raises once the worker has failed."""
        if self.error is not None or self.proc is None or self.proc.stdin is None:
            raise RuntimeError(f"{self.name} is not running: {self.error}")
        self.proc.stdin.write(b"run\n")
        self.proc.stdin.flush()
        reply = self._read(RUN_TIMEOUT_S)
        if self.error is not None:
            raise RuntimeError(f"{self.name} failed: {self.error}")
        self.last = reply
        return float(reply["seconds"])

    def _read(self, timeout: float) -> dict[str, Any]:
        """The next protocol line; on a crash, a timeout or an error reply, record why in `self.error`."""
        assert self.proc is not None and self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while True:
            line = self._next_line(deadline)
            if line is None:
                self.error = f"no answer within {timeout:.0f} s: {self._stderr_tail()}"
                return {}
            if line == "":
                self.error = f"exited with code {self.proc.wait()}: {self._stderr_tail()}"
                return {}
            if line.startswith(MARK):
                message: dict[str, Any] = json.loads(line[len(MARK) :])
                if "error" in message:
                    self.error = message["error"]
                    self.traceback = message.get("traceback", "")
                return message

    def _next_line(self, deadline: float) -> str | None:
        """A whole line from the worker's stdout ("" at end of file, None past the deadline), via os.read so that
        nothing waits in a Python buffer unseen by select()."""
        assert self.proc is not None and self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                return ""
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode(errors="replace")

    def _stderr_tail(self) -> str:
        return _tail(self._log)

    def report(self, vector: Vector) -> dict[str, Any]:
        """Versions, load time, tokens read and cosines with steerlab's directions, or the exact error."""
        out: dict[str, Any] = {"versions": self.ready.get("versions", {}), "load_s": self.ready.get("load_s")}
        if self.error is not None:
            out["error"] = self.error
            out["traceback"] = self.traceback
            return out
        out["n_tokens"] = self.last.get("n_tokens")
        out["layers"] = self.last.get("layers")
        out["cosine"] = {
            layer: float(torch.nn.functional.cosine_similarity(torch.tensor(d), vector.directions[int(layer)], dim=0))
            for layer, d in self.last.get("directions", {}).items()
            if int(layer) in vector.directions
        }
        return out

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                if self.proc.stdin is not None:
                    self.proc.stdin.write(b"quit\n")
                    self.proc.stdin.close()
                self.proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


def _tail(path: Path, chars: int = 1500) -> str:
    """The end of a log, where the exact error is; warnings about missing local indexes are left out."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    kept = [line for line in lines if "is ignored: it is neither a file nor a directory" not in line]
    return "\n".join(kept)[-chars:].strip()
