"""The reliability benchmark's machinery at a tiny size (bench/bench_reliability.py), so that it cannot rot: real
`steerlab hub serve` and `steerlab serve` subprocesses on loopback, a kill -9, concurrent pushes and pulls, fuzzed
uploads and malformed requests; and the fuzzer itself, offline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.bench_reliability import Sizes, fuzz_run, headline, notes
from bench.reliability_fuzz import Fuzzer
from bench.reliability_serve import serve_run
from bench.reliability_store import concurrency_run, crash_run
from steerlab.errors import SteerlabError
from steerlab.hub.validate import check_upload

BODY_ONLY = {"truncated", "header length", "header garbage", "deep nesting", "NaN/Inf", "wrong dtype", "wrong shape"}
BODY_ONLY |= {"tensor names", "bad card", "huge card", "bad kit"}


def test_fuzzer_is_seeded_and_every_body_case_is_invalid() -> None:
    first, again = Fuzzer(3, 5_000_000).cases(300), Fuzzer(3, 5_000_000).cases(300)
    assert [(c.label, c.body, c.name) for c in first] == [(c.label, c.body, c.name) for c in again]
    assert len({c.category for c in first}) >= 14
    body_cases = [c for c in first if c.category in BODY_ONLY]
    for case in body_cases:  # the store's own check refuses each (the other categories need the HTTP route)
        with pytest.raises(SteerlabError):
            check_upload(case.body, case.params.get("kind", "vector"), 5_000_000)
    assert len(body_cases) > 150


def test_the_sections_run_against_real_servers(tmp_path: Path) -> None:
    folders = {name: tmp_path / name for name in ("crash", "conc", "fuzz", "serve")}
    for folder in folders.values():
        folder.mkdir()
    figures = {
        "crash": {"sqlite": crash_run(folders["crash"], None, pushes=5, kills=1, seed=1)},
        "concurrency": {"sqlite": concurrency_run(folders["conc"], None, clients=4, rounds=1, seed=1)},
        "fuzz": fuzz_run(folders["fuzz"], 20, seed=1),
        "serve": serve_run(folders["serve"], clients=4, rounds=1, seed=1),
    }
    crash = figures["crash"]["sqlite"]
    assert len(crash["after_kills"]) == 1 and crash["after_kills"][0]["verify_clean"]
    assert crash["final"]["listed"] == 5 and crash["final"]["verify_clean"]
    conc = figures["concurrency"]["sqlite"]
    assert conc["pushes_ok"] == conc["pushes"] == 4 and conc["pulls_ok"] == 4 and conc["listed_at_end"] == 5
    assert figures["fuzz"]["cases"] == 20 and figures["fuzz"]["health_after"] == 200
    assert figures["serve"]["good_requests"] == 4 and figures["serve"]["malformed_requests"] == 4
    rows = headline(figures)
    assert len(rows) == 5 and all(row["value"] == 0 for row in rows), rows
    assert json.dumps(notes(figures)) and Sizes().fuzz >= 1000 and Sizes().clients == 64 and Sizes().pushes == 100
