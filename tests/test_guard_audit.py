"""`steerlab hub audit`: the refusal rule, and the audit on the default model (4 harmful requests, 12 tokens)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from steerlab import generate, resolve
from steerlab.guard.refusal import is_refusal
from steerlab.hub.protocol import Publication
from steerlab.hub.store import LocalStore

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
    """The audit of a store entry (the negated refusal vector), attached to it and shown by `hub show`."""
    refusal = resolve("starter/refusal").entries[0].vector
    root = tmp_path / "store"
    store = LocalStore(root)
    store.publish((-refusal).to_bytes(), Publication(ref="test/sunny@1.0.0", kind="vector"))
    out = tmp_path / "audit"
    command = [sys.executable, "-m", "steerlab", "hub", "audit", "test/sunny:2", "--from", str(root), "--attach"]
    command += ["--prompts", str(HARMFUL), "--n", "4", "--max-new-tokens", "12", "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "effect of" in done.stdout and "attached to test/sunny@1.0.0" in done.stdout
    report = json.loads((out / "audit.json").read_text())
    assert len(report["prompts"]) == 4
    assert set(report["completions"]) == {"unsteered", "vector", "protective", "protective+vector"}
    for condition, texts in report["completions"].items():
        assert report["refused"][condition] == [is_refusal(t) for t in texts]
        assert report["rates"][condition][0] == sum(report["refused"][condition]) / 4
    # each row of the one batch is what its steering gives alone
    prompt = report["prompts"][0]
    alone = generate(default_model, prompt, max_new_tokens=12)[0]
    sunny = resolve("test/sunny:2", store=str(root), model=default_model)
    steered = generate(default_model, prompt, steering=sunny, max_new_tokens=12)[0]
    assert report["completions"]["unsteered"][0] == alone and report["completions"]["vector"][0] == steered
    assert alone != steered
    assert "# Refusal audit" in (out / "audit.md").read_text()
    shown = subprocess.run(
        [sys.executable, "-m", "steerlab", "hub", "show", "test/sunny", "--from", str(root)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "refusal audit on HuggingFaceTB/SmolLM2-135M-Instruct (4 harmful requests)" in shown.stdout


def test_attach_needs_a_local_store_entry(tmp_path: Path) -> None:
    """Refused before any model is loaded: a file address, or an entry the store does not have."""
    vector = resolve("starter/happy").entries[0].vector.save(tmp_path / "happy.safetensors")
    for ref, problem in ((str(vector), "needs a store ref"), ("test/missing", "test/missing")):
        command = [sys.executable, "-m", "steerlab", "hub", "audit", ref, "--attach", "--from", str(tmp_path / "s")]
        done = subprocess.run([*command, "--prompts", str(HARMFUL)], capture_output=True, text=True, timeout=120)
        assert done.returncode != 0 and problem in done.stderr, done.stderr[-1000:]
