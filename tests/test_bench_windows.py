"""Trained methods get one vector per calibration window (tiny model); extracted methods one extraction."""

from __future__ import annotations

import torch
from tiny import FAST_PREFERENCE as FAST
from tiny import preference_pairs as _pairs
from tiny import tiny_model

from steerlab import extract
from steerlab.evaluate.windows import adopt_window, extract_per_window

WINDOWS = [[1], [2]]


def _extractor(model, method: str, calls: list[list[int]]):
    def one(layers):
        calls.append(list(layers))
        options = FAST if method == "preference" else {"progress": False}
        return extract(model, _pairs(12), layers=list(layers), method=method, chat=False, seed=3, **options)

    return one


def test_a_trained_method_is_trained_on_each_window_alone() -> None:
    model = tiny_model("llama")
    calls: list[list[int]] = []
    merged = extract_per_window(_extractor(model, "preference", calls), "preference", WINDOWS)
    assert calls == WINDOWS and merged.layers == [1, 2]
    # each window's directions are exactly those of a vector trained on that window alone
    alone = extract(model, _pairs(12), layers=[2], method="preference", chat=False, seed=3, **FAST)
    assert torch.equal(merged.directions[2], alone.directions[2])
    joint = extract(model, _pairs(12), layers=[1, 2], method="preference", chat=False, seed=3, **FAST)
    assert not torch.equal(merged.directions[2], joint.directions[2])
    by_window = merged.card.metadata["training_by_window"]
    assert [t["layers"] for t in by_window] == WINDOWS
    adopt_window(merged, [2])
    assert merged.card.metadata["training"]["layers"] == [2]
    assert merged.card.metadata["training"]["held_out_accuracy"] == by_window[1]["held_out_accuracy"]


def test_an_extracted_method_reads_every_window_in_one_pass() -> None:
    model = tiny_model("llama")
    calls: list[list[int]] = []
    vector = extract_per_window(_extractor(model, "mean_diff", calls), "mean_diff", WINDOWS)
    assert calls == [[1, 2]] and vector.layers == [1, 2]
    assert "training_by_window" not in vector.card.metadata
    # overlapping windows cannot be merged: a trained method then trains once over their union
    calls.clear()
    extract_per_window(_extractor(model, "preference", calls), "preference", [[1, 2], [2]])
    assert calls == [[1, 2]]
