"""The benchmark verdict rule (bench/run_all.py): 'met' or 'not met' only when the whole spread is on one side."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.run_all import render, spread_bounds, summary_markdown, verdict

RESULTS = Path(__file__).resolve().parents[1] / "bench" / "results"


def _row(value: float, spread: str | None = None, **target: float) -> dict[str, object]:
    row: dict[str, object] = {"name": "r", "value": value, "unit": "x", **target}
    if spread is not None:
        row["spread"] = spread
    return row


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        (_row(0.997, "IQR 0.941-1.038 (n=100)", target_max=1.01), "inconclusive"),  # straddles: within noise
        (_row(0.974, "IQR 0.912-1.006 (n=10)", target_max=1.01), "met"),  # all of it below the ceiling
        (_row(1.05, "IQR 1.020-1.080 (n=10)", target_max=1.01), "not met"),  # all of it above the ceiling
        (_row(1.016, "IQR 0.817-1.205 (n=4)", target_min=0.9), "inconclusive"),
        (_row(0.95, "IQR 0.910-0.990 (n=4)", target_min=0.9), "met"),
        (_row(0.85, "IQR 0.800-0.880 (n=4)", target_min=0.9), "not met"),
        (_row(1.01, "IQR 0.990-1.010 (n=4)", target_max=1.01), "met"),  # on the target counts as within it
        (_row(0.5, "IQR 0.4-0.6 (n=4)", target_min=0.3, target_max=0.55), "inconclusive"),  # one of two straddles
        (_row(0.5, "IQR 0.4-0.6 (n=4)", target_min=0.7, target_max=0.55), "not met"),  # a miss outweighs the rest
        (_row(285.0, target_max=300.0), "met"),  # no spread: judged on the value alone
        (_row(0.997, "IQR 0.941-1.038 (n=100)"), None),  # no target, no verdict
        ({"name": "r", "value": None, "error": "did not run", "target_max": 1.0}, None),
    ],
)
def test_verdict_needs_the_whole_spread_on_one_side(row: dict[str, object], expected: str | None) -> None:
    assert verdict(row) == expected


def test_spread_bounds_from_numbers_or_text() -> None:
    assert spread_bounds({"spread": "IQR 0.941-1.038 (n=100)"}) == (0.941, 1.038)
    assert spread_bounds({"spread_low": 0.5, "spread_high": 0.7, "spread": "IQR 0.1-0.2 (n=3)"}) == (0.5, 0.7)
    assert spread_bounds({"spread": ""}) is None and spread_bounds({}) is None
    # A value outside its own spread (possible for a median of few rounds) widens the range judged.
    assert verdict(_row(1.02, "IQR 0.90-1.00 (n=3)", target_max=1.01)) == "inconclusive"


def test_summary_shows_value_with_spread_and_the_verdict() -> None:
    rows = [_row(0.997, "IQR 0.941-1.038 (n=100)", target_max=1.01), _row(0.784, "IQR 0.769-0.789 (n=5)")]
    rows[0]["verdict"] = verdict(rows[0])
    text = summary_markdown([{"module": "core", "headline": rows}])
    assert "| 0.997x [0.941-1.038] | ≤ 1.010x | inconclusive |" in text
    assert "| 0.784x [0.769-0.789] | — | — |" in text


def test_render_rejudges_committed_results_without_running(tmp_path: Path) -> None:
    for path in RESULTS.glob("*.json"):  # every committed result, as `--render` reads them
        shutil.copy(path, tmp_path / path.name)
    stale = json.loads((tmp_path / "core.json").read_text())
    for row in stale["headline"]:
        row["met"] = True if row.get("target_max") is not None else row.get("met")  # the old, value-only marks
        row.pop("verdict", None)
    (tmp_path / "core.json").write_text(json.dumps(stale))
    render(tmp_path)
    core = json.loads((tmp_path / "core.json").read_text())
    judged = {row["name"]: (row["verdict"], row["met"]) for row in core["headline"]}
    assert judged["hook cost per decode step, batch 1"] == ("inconclusive", None)
    assert judged["extraction, 50 pairs: steerlab vs one plain forward"] == ("met", True)
    summary = (tmp_path / "summary.md").read_text()
    assert summary == (RESULTS / "summary.md").read_text()  # the committed summary is this rendering
    assert "| inconclusive | IQR 0.941-1.038 (n=100) |" in (tmp_path / "core.md").read_text()
