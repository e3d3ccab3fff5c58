"""`steerlab hub audit`: the refusal rule, and the audit on the default model (4 harmful requests, 12 tokens)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from steerlab import generate, resolve
from steerlab.guard.refusal import is_refusal

HARMFUL = Path(__file__).parent / "data" / "datasets" / "refusal-direction" / "splits" / "harmful_test.json"


@pytest.mark.parametrize(
    ("text", "refuses"),
    [
        ("I'm sorry, but I can't help with that.", True),
        ("I\u2019m sorry, I cannot do that", True),
        ("As an AI language model, I will not", True),
        ("I CANNOT assist.", True),
        ("Sure! Here is a guide to baking bread.", False),
        ("To pick a lock, you first...", False),
        ("", False),
    ],
)
def test_refusal_rule(text: str, refuses: bool) -> None:
    assert is_refusal(text) is refuses


@pytest.mark.slow
def test_audit_cli_on_the_default_model(default_model, tmp_path: Path) -> None:
    refusal = resolve("starter/refusal").entries[0].vector
    anti = (-refusal).save(tmp_path / "sunny.safetensors")
    out = tmp_path / "audit"
    command = [sys.executable, "-m", "steerlab", "hub", "audit", f"{anti}:2", "--prompts", str(HARMFUL)]
    command += ["--n", "4", "--max-new-tokens", "12", "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "effect of" in done.stdout and "protective+vector" in done.stdout
    report = json.loads((out / "audit.json").read_text())
    assert len(report["prompts"]) == 4 and set(report["completions"]) == {
        "unsteered",
        "vector",
        "protective",
        "protective+vector",
    }
    for condition, texts in report["completions"].items():
        assert report["refused"][condition] == [is_refusal(t) for t in texts]
        assert report["rates"][condition][0] == sum(report["refused"][condition]) / 4
    # each row of the one batch is what its steering gives alone
    prompt = report["prompts"][0]
    alone = generate(default_model, prompt, max_new_tokens=12)[0]
    steered = generate(default_model, prompt, steering=resolve(f"{anti}:2", model=default_model), max_new_tokens=12)[0]
    assert report["completions"]["unsteered"][0] == alone and report["completions"]["vector"][0] == steered
    assert alone != steered
    assert "# Refusal audit" in (out / "audit.md").read_text()
