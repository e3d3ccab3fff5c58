"""The seed suite's specs built from the dataset slices: every axis, disjoint splits, the sizes it promises."""

from __future__ import annotations

import pytest

from steerlab.errors import SteerlabError
from steerlab.evaluate.runner import check_disjoint
from steerlab.evaluate.suite import AXES, FULL, QUICK, QUICK_AXES, options, seed_suite
from steerlab.evaluate.tasks import ClassifyTask

GOALS = {"formality": 1, "sentiment": 1, "sycophancy": -1, "refusal": 1, "bias": -1, "legal": 1}


@pytest.mark.parametrize("quick", [True, False])
def test_every_axis_has_disjoint_splits_of_the_promised_size(datasets, quick: bool) -> None:
    size = QUICK if quick else FULL
    specs = seed_suite(datasets, quick, tuple(AXES))
    assert [s.name for s in specs] == list(AXES)
    for spec in specs:
        check_disjoint(spec)
        assert spec.goal == GOALS[spec.name] and spec.instruction
        assert len(spec.val) == size.val and len(spec.test) == size.test
        if isinstance(spec.task, ClassifyTask):
            assert len(spec.train) == 2 * size.pairs  # as many positive as negative sentences
            assert all(isinstance(p, str) and p.strip() for p in [*spec.val, *spec.test])
        else:
            assert len(spec.train) == size.pairs
    formality = next(s for s in specs if s.name == "formality")
    assert any("accuracy" in note for note in formality.notes)


def test_quick_defaults_and_unknown_axes(datasets) -> None:
    assert [s.name for s in seed_suite(datasets, True, ("refusal",))] == ["refusal"]
    assert QUICK_AXES == ("refusal", "sentiment")
    assert options(True).n_windows == 1 and options(False).n_windows == 3
    with pytest.raises(SteerlabError, match="unknown axes"):
        seed_suite(datasets, True, ("vibes",))
