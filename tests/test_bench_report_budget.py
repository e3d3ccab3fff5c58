"""Out-of-budget calibrations are marked in every bench table, re-rendering the committed quick run."""

from __future__ import annotations

import json
from pathlib import Path

from steerlab.evaluate.report import OUT_LEGEND, OUT_MARK, SMOKE_NOTE, html_page, markdown

QUICK = Path(__file__).resolve().parents[1] / "bench" / "results" / "seed-quick"


def _doc() -> dict:
    doc = json.loads((QUICK / "results.json").read_text())
    # The committed quick run calibrated refusal within budget and sentiment outside it.
    assert {t["name"]: t["calibration"]["within_budget"] for t in doc["tasks"]} == {"refusal": True, "sentiment": False}
    return doc


def _table_rows(text: str, heading: str) -> list[str]:
    section = text.split(heading, 1)[1].split("\n## ", 1)[0]
    return [line for line in section.splitlines() if line.startswith("| ")]


def test_out_of_budget_axis_is_marked_in_the_summary_and_its_table():
    text = markdown(_doc())
    assert OUT_LEGEND in text
    summary = {row.split("|")[1].strip(): row for row in _table_rows(text, "## Summary")}
    assert f"sentiment{OUT_MARK}" in summary and "refusal" in summary
    assert OUT_MARK not in summary["refusal"]
    sentiment = _table_rows(text, "## sentiment")
    steered = [r for r in sentiment if r.startswith("| steering |") or r.startswith(f"| steering{OUT_MARK} |")]
    assert steered and all(OUT_MARK in r for r in steered)
    assert all(OUT_MARK not in r for r in sentiment if r.startswith("| unsteered |"))
    assert all(OUT_MARK not in r for r in _table_rows(text, "## refusal"))
    assert "OUTSIDE the fluency budget" in text.split("## sentiment", 1)[1]


def test_no_mark_or_legend_when_every_axis_is_within_budget():
    doc = _doc()
    for task in doc["tasks"]:
        task["calibration"]["within_budget"] = True
    text = markdown(doc)
    assert OUT_LEGEND not in text and OUT_MARK not in text.split("## Across axes", 1)[0]


def test_html_page_carries_the_mark():
    doc = _doc()
    page = html_page(doc, markdown(doc), QUICK)
    assert f"<td>sentiment{OUT_MARK}</td>" in page and "from an OUTSIDE-budget calibration" in page


def test_calibration_line_shows_the_dose_when_recorded():
    doc = _doc()
    assert "relative dose" not in markdown(doc)  # the committed run predates doses
    doc["tasks"][0]["calibration"]["dose"] = 0.5
    assert "(relative dose 0.5)" in markdown(doc).split("## refusal", 1)[1]


def test_the_quick_report_says_it_is_a_smoke_test():
    doc = _doc()
    assert doc["meta"]["quick"] and SMOKE_NOTE in markdown(doc)
    doc["meta"]["quick"] = False
    assert SMOKE_NOTE not in markdown(doc)


# A frozen copy of a committed CAA run (its SOURCE.md says which), so a re-run of the bench changes nothing here.
CAA_RESULTS = Path(__file__).parent / "data" / "bench" / "caa_coordination_results.json"


def test_a_calibration_within_budget_whose_test_generations_break_it_is_marked_too():
    """A committed CAA run: coordination's trained vector was calibrated within budget on 32 validation
    generations, but its 32 test generations fell more than 10% below unsteered's mean log-prob; steering+prompting's
    stayed within 10% of prompting's."""
    from steerlab.evaluate.report import TEST_LEGEND, TEST_MARK, budget_broken_on_test

    doc = json.loads(CAA_RESULTS.read_text())
    tasks = {t["name"]: t for t in doc["tasks"]}
    assert tasks["coordination"]["calibration_by_method"]["preference"]["within_budget"]
    assert budget_broken_on_test(tasks["coordination"], "steering:preference")
    assert not budget_broken_on_test(tasks["coordination"], "steering+prompting")
    assert not budget_broken_on_test(tasks["coordination"], "prompting")  # not steered: no budget of its own
    text = markdown(doc)
    assert TEST_LEGEND in text
    summary = {row.split("|")[1].strip(): row for row in _table_rows(text, "## Summary")}
    cells = [c.strip() for c in summary["coordination"].split("|")]
    assert f"0.758*{TEST_MARK}" in cells and "0.699*" in cells  # steering:preference, steering+prompting
    methods = [r for r in _table_rows(text, "## coordination") if r.startswith("| preference |")]
    assert methods and ": OUTSIDE |" in methods[0]
    # Lift the steered generations' log-prob to unsteered's: the mark and the legend go.
    rows = tasks["coordination"]["rows"]
    base = next(r for r in rows if r["condition"] == "unsteered" and r["metric"] == "fluency_logprob")["value"]
    for r in rows:
        if r["metric"] == "fluency_logprob" and r["condition"].startswith("steering"):
            r["value"] = base
    assert not budget_broken_on_test(tasks["coordination"], "steering:preference")
    # A NaN fails the budget, as in calibration.
    trained = next(r for r in rows if r["condition"] == "steering:preference" and r["metric"] == "fluency_logprob")
    trained["value"] = None
    assert budget_broken_on_test(tasks["coordination"], "steering:preference")
