"""`steerlab serve --engine vllm` closed while vLLM is still starting (a Ctrl-C during the minutes of start-up)
leaves no vLLM process behind, and start() says it was closed. Real vLLM in .venv-vllm."""

from __future__ import annotations

import json
import os
import subprocess

from tests.vllm_support import MARKS, ROOT, VLLM_PY

pytestmark = MARKS


def test_closing_during_start_up_leaves_no_vllm_process_behind(tmp_path):
    from steerlab.defaults import steerlab_home

    model = steerlab_home() / "models" / "smollm2-135m"
    env = {**os.environ, "VLLM_LOGGING_LEVEL": "WARNING"}
    script = ROOT / "tests" / "vllm_close_job.py"
    done = subprocess.run(
        [str(VLLM_PY), str(script), str(model), str(tmp_path / "specs")],
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["children"] >= 1  # the close really landed while vLLM's engine core was starting
    assert report["alive"] == [] and not report["stuck"], report
    assert report["raised"] and "closed while it was starting" in report["raised"][0], report
