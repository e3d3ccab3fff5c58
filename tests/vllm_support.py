"""What the real-vLLM tests share: where .venv-vllm and the starter vectors lie, and their marks (slow, a long
timeout because starting vLLM takes minutes on a loaded 2-core machine, skipped only when `make vllm` has not run)."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]
VLLM_PY = ROOT / ".venv-vllm" / "bin" / "python"
STARTER = ROOT / "src" / "steerlab" / "data" / "starter"
MARKS = [
    pytest.mark.slow,
    pytest.mark.timeout(2400),
    pytest.mark.skipif(
        not (ROOT / ".venv-vllm" / ".installed").exists(), reason="vLLM is not installed: run `make vllm` first"
    ),
]
QUESTIONS = [
    "How was your weekend?",
    "Describe your commute to work this morning.",
    "What do you think about rainy days?",
    "Tell me about your favourite meal.",
    "How do you feel about Mondays?",
    "Write one sentence about the sea.",
    "What is a good way to spend an evening?",
    "Describe the city you live in.",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_up(proc: subprocess.Popen[bytes], url: str, log: Path, minutes: int = 20) -> None:
    """Until `url`/health answers 200; fails with the server's log tail if it exits, or after `minutes`."""
    deadline = time.monotonic() + 60 * minutes
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the server exited with {proc.returncode}: {log.read_text()[-3000:]}"
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(2)
    pytest.fail(f"the server did not come up in {minutes} minutes")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
