"""`steerlab serve` as a user runs it: a subprocess on a free loopback port, a tiny model folder, a kits folder."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import torch
from test_serve_support import serve_process
from tiny import tiny_model

from steerlab import Card, Vector


@pytest.fixture(scope="module")
def cli_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    model = tiny_model("llama")
    model.hf_model.save_pretrained(root / "tiny-llama")
    model.tokenizer.save_pretrained(root / "tiny-llama")
    kits = root / "kits"
    gen = torch.Generator().manual_seed(0)
    Vector({i: torch.randn(32, generator=gen) for i in range(4)}, Card(name="rnd", recommended_scale=0.5)).save(
        kits / "rnd.safetensors"
    )
    audit = root / "audit.jsonl"
    args = ["--model", str(root / "tiny-llama"), "--kits", str(kits)]
    args += ["--audit-log", str(audit), "--max-scale", "2", "--max-batch", "4"]
    args += ["--protect", str(kits / "rnd.safetensors")]  # rnd protects itself: -rnd is refused
    with serve_process(args) as url:
        yield url, audit, root / "tiny-llama"


def test_cli_serves_the_api_the_page_and_its_limits(cli_server) -> None:
    url, audit, _model = cli_server
    assert [m["id"] for m in httpx.get(f"{url}/v1/models").json()["data"]] == ["tiny-llama"]
    body = {"model": "tiny-llama", "prompt": "hello", "max_tokens": 4, "temperature": 0}
    ok = httpx.post(f"{url}/v1/completions", json={**body, "steering": [{"vector": "rnd", "scale": 1.5}]}, timeout=120)
    assert ok.status_code == 200 and ok.json()["usage"]["completion_tokens"] <= 4
    capped = httpx.post(f"{url}/v1/completions", json={**body, "steering": [{"vector": "rnd", "scale": 2.5}]})
    assert capped.status_code == 400 and capped.json()["error"]["code"] == "scale_too_large"  # --max-scale 2
    page = httpx.get(f"{url}/")
    assert page.status_code == 200 and "/static/app.js" in page.text
    assert httpx.get(f"{url}/static/app.js").status_code == 200
    negated = httpx.post(f"{url}/v1/completions", json={**body, "steering": [{"vector": "rnd", "scale": -2.0}]})
    assert negated.status_code == 400 and negated.json()["error"]["code"] == "protected_direction"
    records = [json.loads(line) for line in Path(audit).read_text().splitlines()]
    assert [r["status"] for r in records] == ["ok", "rejected", "rejected"] and records[0]["vectors"][0]["scale"] == 1.5
    assert records[2]["error"] == "protected_direction"


def test_cli_norms_writes_what_a_store_reads(cli_server, tmp_path: Path) -> None:
    from steerlab.guard.norms import read_norms

    model = Path(cli_server[2])
    out = tmp_path / "norms.json"
    done = subprocess.run(
        [sys.executable, "-m", "steerlab", "serve", "norms", "--model", str(model), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    norms = read_norms(out)
    assert sorted(norms) == [0, 1, 2, 3] and all(h > 0 for h in norms.values())


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--engine", "tgi"], "use transformers or vllm"),
        (["--engine", "vllm", "--device", "cpu"], "--device is for --engine transformers"),
    ],
)
def test_cli_engine_flags_are_checked_before_any_model_loads(flags: list[str], message: str) -> None:
    """An unknown engine, or what the vLLM engine does not do yet, is a usage error (exit 2) naming the fix. Where
    vLLM is missing (this virtualenv), --engine vllm says so and where it is."""
    import importlib.util

    if "--device" in flags and importlib.util.find_spec("vllm") is None:
        flags, message = ["--engine", "vllm"], "needs vLLM in this Python"
    done = subprocess.run(
        [sys.executable, "-m", "steerlab", "serve", "--model", "/nonexistent", *flags],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert message in " ".join((done.stdout + done.stderr).split()), done.stderr
