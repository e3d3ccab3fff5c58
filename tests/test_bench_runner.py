"""The benchmark runner's machinery (bench/run_all.py, bench/__init__.py) on small real functions; nothing is timed."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import interleave, ratio, round_order, summary
from bench.run_all import available, discover, main, run_all


def _sum_squares(results_dir: Path, quick: bool) -> dict[str, Any]:
    """A trivially small benchmark with the real contract: it computes something and reports it with targets."""
    n = 10 if quick else 1000
    total = sum(i * i for i in range(n))
    (results_dir / "scratch.txt").write_text(str(total))
    return {
        "title": "Sum of squares",
        "headline": [
            {"name": "sum", "value": float(total), "target_max": 300.0, "unit": ""},
            {"name": "n", "value": n, "target_min": 100},
            {"name": "untargeted", "value": 1.5, "unit": "x"},
        ],
        "notes": ["## Detail\n\nplain text"],
        "details": {"n": n},
    }


def _broken(results_dir: Path, quick: bool) -> dict[str, Any]:
    raise ValueError("bad input on purpose")


def test_run_all_writes_json_markdown_and_summary(tmp_path: Path) -> None:
    results = run_all({"squares": _sum_squares, "broken": _broken}, tmp_path, quick=True)

    squares = json.loads((tmp_path / "squares.json").read_text())
    assert squares["module"] == "squares" and squares["quick"] is True
    assert squares["details"] == {"n": 10}
    assert [row["met"] for row in squares["headline"]] == [True, False, None]  # 285 <= 300; 10 < 100; no target
    assert squares["environment"]["cpu_count"] >= 1 and "torch" in squares["environment"]
    assert (tmp_path / "scratch.txt").read_text() == "285"

    md = (tmp_path / "squares.md").read_text()
    assert md.startswith("# Sum of squares")
    assert "| sum | 285.0 | ≤ 300.0 | met |" in md
    assert "**not met**" in md and "## Detail" in md

    broken = json.loads((tmp_path / "broken.json").read_text())
    assert broken["error"] == "ValueError: bad input on purpose" and "Traceback" in broken["traceback"]
    assert "The benchmark failed" in (tmp_path / "broken.md").read_text()
    assert [r["module"] for r in results] == ["squares", "broken"]

    summary_md = (tmp_path / "summary.md").read_text()
    assert "[squares](squares.md) | sum | 285.0" in summary_md
    assert "[broken](broken.md) | failed: ValueError: bad input on purpose" in summary_md


def test_summary_keeps_modules_from_earlier_runs(tmp_path: Path) -> None:
    run_all({"squares": _sum_squares}, tmp_path, quick=True)
    run_all({"other": _sum_squares}, tmp_path, quick=False)
    summary_md = (tmp_path / "summary.md").read_text()
    assert "[squares](squares.md)" in summary_md and "[other](other.md)" in summary_md
    assert not list(tmp_path.glob("*.tmp"))


def test_discover_finds_bench_modules_and_rejects_unknown_names() -> None:
    assert "core" in available()
    found = discover(["bench_core"])
    assert list(found) == ["core"] and callable(found["core"])
    with pytest.raises(SystemExit, match="unknown benchmark"):
        discover(["nope"])
    with pytest.raises(SystemExit):
        main(["--only", "nope"])


def test_interleave_alternates_order_and_counts_rounds() -> None:
    calls: list[str] = []

    def cond(name: str, seconds: float | None) -> Any:
        def call() -> float | None:
            calls.append(name)
            return seconds

        return call

    times = interleave({"a": cond("a", 2.0), "b": cond("b", None)}, rounds=3, warmup=1)
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b"]  # warm-up, then AB BA AB
    assert times["a"] == [2.0, 2.0, 2.0]  # a condition's own figure wins over the wall clock
    assert len(times["b"]) == 3 and all(t >= 0 for t in times["b"])
    assert round_order(["x", "y", "z"], 1) == ["z", "y", "x"]


def test_ratio_and_summary_statistics() -> None:
    stats = ratio([2.0, 3.0, 4.0], [1.0, 1.0, 2.0])
    assert stats["ratio"] == pytest.approx(2.0)  # per-round ratios 2, 3, 2
    assert stats["ratio_of_medians"] == pytest.approx(3.0)  # median 3 / median 1
    assert (stats["paired_min"], stats["paired_max"], stats["n"]) == (2.0, 3.0, 3)
    s = summary([4.0, 1.0, 3.0, 2.0])
    assert (s["median"], s["min"], s["max"], s["q1"], s["q3"]) == (2.5, 1.0, 4.0, 1.75, 3.25)
    with pytest.raises(ValueError):
        ratio([1.0], [])


TOY_WORKER = """
import _worker


def setup(spec):
    return {"n": spec["n"]}


def train(state):
    if state["n"] < 0:
        raise ValueError("negative n")
    print("library chatter on stdout must not break the protocol")
    return sum(range(state["n"]))


def describe(state, result):
    return {"total": result, "n_tokens": state["n"], "directions": {}}


if __name__ == "__main__":
    _worker.serve(["pytest"], setup, train, describe)
"""


def _toy_worker(tmp_path: Path, n: int) -> Any:
    from bench.refs.client import RefWorker

    script = tmp_path / "toy_worker.py"
    script.write_text(TOY_WORKER)
    worker = RefWorker("toy", script, {"threads": 1, "n": n}, python=Path(sys.executable))
    worker.wait_ready()
    return worker


def test_reference_worker_protocol_round_trip(tmp_path: Path) -> None:
    worker = _toy_worker(tmp_path, 10)
    try:
        assert worker.error is None and worker.ready["versions"]["pytest"]
        assert worker.run() >= 0 and worker.last["total"] == 45
        assert worker.run() >= 0 and worker.last["total"] == 45  # the loaded worker serves round after round
    finally:
        worker.close()
    assert worker.proc is not None and worker.proc.returncode == 0


def test_reference_worker_keeps_the_exact_error(tmp_path: Path) -> None:
    from bench.refs.client import RefWorker

    worker = _toy_worker(tmp_path, -1)
    try:
        with pytest.raises(RuntimeError, match="negative n"):
            worker.run()
        assert worker.error == "ValueError: negative n" and "Traceback" in worker.traceback
    finally:
        worker.close()
    missing = RefWorker("gone", "x.py", {}, python=tmp_path / "venv" / "bin" / "python")
    assert missing.error is not None and "make bench-refs" in missing.error
