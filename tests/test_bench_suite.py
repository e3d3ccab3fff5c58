"""The seed suite's specs built from the dataset slices: every axis, disjoint splits, the sizes it promises."""

from __future__ import annotations

from pathlib import Path

import pytest

from steerlab.errors import SteerlabError
from steerlab.evaluate.data import load_ab
from steerlab.evaluate.runner import check_disjoint
from steerlab.evaluate.suite import AXES, CAA_AXES, FULL, QUICK, QUICK_AXES, options, seed_suite, suite_specs
from steerlab.evaluate.tasks import ABTask, ClassifyTask, PairLogprobTask

GOALS = {"formality": 1, "sentiment": 1, "sycophancy": -1, "refusal": 1, "bias": -1, "legal": 1}


@pytest.mark.parametrize("quick", [True, False])
def test_every_axis_has_disjoint_splits_of_the_promised_size(datasets, quick: bool) -> None:
    size = QUICK if quick else FULL
    specs = seed_suite(datasets, quick, tuple(AXES))
    assert [s.name for s in specs] == list(AXES)
    for spec in specs:
        check_disjoint(spec)
        assert spec.goal == GOALS[spec.name] and spec.instruction
        assert len(spec.val) == size.val and len(spec.test) == _test_size(spec, size)
        if isinstance(spec.task, ClassifyTask):
            assert len(spec.train) == 2 * size.pairs  # as many positive as negative sentences
            assert all(isinstance(p, str) and p.strip() for p in [*spec.val, *spec.test])
        else:
            assert len(spec.train) == size.pairs
    formality = next(s for s in specs if s.name == "formality")
    assert any("accuracy" in note for note in formality.notes)
    bias = next(s for s in specs if s.name == "bias")
    assert len(bias.task.fluency_prompts(bias.test)) >= size.n_fluency


def _test_size(spec, size) -> int:
    if isinstance(spec.task, ABTask):  # every test item the behaviour has, in the full suite
        return size.ab_test or len(load_ab(Path(spec.source) / "test_dataset_ab.json"))
    return size.gen_test if isinstance(spec.task, ClassifyTask) else size.test


def test_the_full_suite_is_a_measurement_and_the_quick_one_a_smoke_test(datasets) -> None:
    # the floors: every A/B item, >= 100 generation prompts, >= 32 fluency generations
    assert FULL.ab_test is None and FULL.gen_test >= 100 and FULL.n_fluency >= 32
    assert options(False).n_fluency == FULL.n_fluency and options(True).n_fluency == QUICK.n_fluency
    full = {s.name: s for s in seed_suite(datasets, False, tuple(AXES))}
    assert len(full["refusal"].test) == len(full["sycophancy"].test) == 50  # CAA ships 50 A/B test items each
    assert isinstance(full["bias"].task, PairLogprobTask) and len(full["bias"].test) == FULL.test
    caa = suite_specs("caa", datasets, False)
    for spec in [*full.values(), *caa]:  # calibration judges fluency on as many generations as the test does
        assert len(spec.task.fluency_prompts(spec.val)) >= FULL.n_fluency, spec.name


def test_the_caa_suite_holds_behaviours_the_bench_was_not_tuned_on(datasets) -> None:
    specs = suite_specs("caa", datasets, False)
    assert [s.name for s in specs] == list(CAA_AXES) and not set(CAA_AXES) & set(AXES)
    for spec in specs:
        check_disjoint(spec)
        assert isinstance(spec.task, ABTask) and spec.goal == 1 and spec.instruction
        assert len(spec.test) == 50 and len(spec.train) == FULL.pairs
    assert [s.name for s in suite_specs("caa", datasets, True)] == ["corrigibility"]
    with pytest.raises(SteerlabError, match=r"unknown suite 'vibes'.*seed, caa"):
        suite_specs("vibes", datasets, True)


def test_quick_defaults_and_unknown_axes(datasets) -> None:
    assert [s.name for s in seed_suite(datasets, True, ("refusal",))] == ["refusal"]
    assert QUICK_AXES == ("refusal", "sentiment")
    assert options(True).n_windows == 1 and options(False).n_windows == 3
    with pytest.raises(SteerlabError, match="unknown axes"):
        seed_suite(datasets, True, ("vibes",))
