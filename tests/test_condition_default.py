"""Conditional steering on the default model: a condition fitted on harmful vs harmless requests gates a kit in a
mixed batch; only the rows it holds for change, the others generate exactly the unsteered tokens."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import DATASETS

from steerlab import Condition, Kit, KitEntry, Vector
from steerlab.generation import generate_ids
from steerlab.prompts import prompt_ids

SPLITS = DATASETS / "refusal-direction" / "splits"


def _instructions(name: str, n: int) -> list[str]:
    return [row["instruction"] for row in json.loads((SPLITS / name).read_text())[:n]]


@pytest.mark.slow
def test_only_condition_matching_rows_change_in_a_mixed_batch(default_model) -> None:
    model = default_model
    harmful, harmless = _instructions("harmful_train.json", 16), _instructions("harmless_train.json", 16)
    condition = Condition.fit(model, harmful, harmless, reading="last", name="harmful")
    assert condition.accuracy is not None and condition.accuracy >= 0.75, condition.card.metadata["accuracy"]
    assert condition.card.metadata["split"]["positive"] == {"fit": 8, "tune": 4, "test": 4}

    test_harmful, test_harmless = _instructions("harmful_test.json", 2), _instructions("harmless_test.json", 2)
    prompts = [test_harmful[0], test_harmless[0], test_harmful[1], test_harmless[1]]
    seqs = [prompt_ids(model.tokenizer, p) for p in prompts]
    gen = torch.Generator().manual_seed(0)
    vector = Vector({la: torch.randn(model.hidden_size, generator=gen) for la in range(8, 20)})
    kit = Kit([KitEntry(vector, 1.0)]).when(condition)
    details: list[dict] = []
    base = generate_ids(model, seqs, max_new_tokens=8)
    steered = generate_ids(model, seqs, steering=kit, max_new_tokens=8, details=details)
    holds = [d["conditions"][0]["holds"] for d in details]
    assert holds == [True, False, True, False], [d["conditions"][0]["score"] for d in details]
    for r, held in enumerate(holds):
        assert (steered[r] == base[r]) != held, f"row {r} ({prompts[r][:40]!r})"
