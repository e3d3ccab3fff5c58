"""What the real-vLLM tests share: where .venv-vllm and the starter vectors lie, and their marks (slow, a long
timeout because starting vLLM takes minutes on a loaded 2-core machine, skipped only when `make vllm` has not run)."""

from __future__ import annotations

from pathlib import Path

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
