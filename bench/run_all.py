"""`make bench`: run every bench/bench_*.py module and write its results as JSON and Markdown, plus a summary.

Each module has `run(results_dir: pathlib.Path, quick: bool) -> dict`. The dict may hold anything JSON can;
these keys are rendered (see bench/README.md):
- `title`: one line;
- `headline`: rows {name, value, unit, target_max | target_min, spread, note}; `verdict` and `met` are filled in
  here (see `verdict`): a target is "met" or "not met" only when the whole spread lies on one side of it;
- `notes`: Markdown paragraphs shown under the table.
The runner adds `module`, `quick`, `started_at`, `wall_s`, `environment`, and `error` when `run` raised.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import os
import platform
import re
import sys
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
QUICK_DIR = RESULTS_DIR / "quick"  # quick runs never overwrite the committed full results

RunFn = Callable[[Path, bool], dict[str, Any]]


def available() -> list[str]:
    """Benchmark names, from the files bench/bench_<name>.py (nothing imported)."""
    return sorted(p.stem.removeprefix("bench_") for p in BENCH_DIR.glob("bench_*.py"))


def discover(only: Sequence[str] = ()) -> dict[str, RunFn]:
    """name -> run function, for bench/bench_<name>.py; `only` keeps the names given (with or without `bench_`)."""
    names = available()
    wanted = [n.removeprefix("bench_") for n in only]
    unknown = sorted(set(wanted) - set(names))
    if unknown:
        raise SystemExit(f"unknown benchmark(s) {unknown}; available: {names}")
    chosen = [n for n in names if not wanted or n in wanted]
    return {name: importlib.import_module(f"bench.bench_{name}").run for name in chosen}


def environment() -> dict[str, Any]:
    """What the figures depend on: cores, threads, load, versions."""
    env: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    for package in ("torch", "transformers", "numpy", "steerlab"):
        env[package] = _version(package)
    try:
        import torch

        env["torch_threads"] = torch.get_num_threads()
        env["torch_interop_threads"] = torch.get_num_interop_threads()
    except ImportError:
        pass
    return env


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def run_one(name: str, fn: RunFn, results_dir: Path, quick: bool) -> dict[str, Any]:
    """Run one module; an exception becomes an `error` entry in its result instead of ending the whole run."""
    started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    env_before = environment()
    t0 = time.perf_counter()
    try:
        result = dict(fn(results_dir, quick))
    except Exception as exc:  # a failing benchmark is recorded; the others still run
        result = {"title": name, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
    result.update(module=name, quick=quick, started_at=started, wall_s=round(time.perf_counter() - t0, 1))
    env_before["load_average_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    result["environment"] = {**env_before, **result.get("environment", {})}
    result["headline"] = [_judge(row) for row in result.get("headline", [])]
    return result


def _judge(row: Mapping[str, Any]) -> dict[str, Any]:
    """Fill `verdict` (see `verdict`) and `met`: True or False only for a clear verdict, else None."""
    out = dict(row)
    out["verdict"] = verdict(out)
    out["met"] = {"met": True, "not met": False}.get(out["verdict"] or "")
    return out


# "IQR 0.941-1.038 (n=100)": the two numbers of a spread written by bench.spread_text.
_SPREAD = re.compile(r"(-?\d+(?:\.\d+)?)\s*-\s*(-?\d+(?:\.\d+)?)")


def spread_bounds(row: Mapping[str, Any]) -> tuple[float, float] | None:
    """The row's spread as numbers: `spread_low`/`spread_high` if given, else read from its `spread` text."""
    if isinstance(row.get("spread_low"), int | float) and isinstance(row.get("spread_high"), int | float):
        return float(row["spread_low"]), float(row["spread_high"])
    found = _SPREAD.search(str(row.get("spread") or ""))
    if found is None:
        return None
    low, high = sorted((float(found.group(1)), float(found.group(2))))
    return low, high


def verdict(row: Mapping[str, Any]) -> str | None:
    """'met' / 'not met' when the whole spread is on one side of every target, 'inconclusive' when it straddles one.

    None when there is no value or no target. A row without a spread is judged on its value alone (nothing says
    how noisy it is; the benchmarks give every targeted ratio a spread).
    """
    value = row.get("value")
    targets = [(row.get("target_max"), "max"), (row.get("target_min"), "min")]
    targets = [(float(t), kind) for t, kind in targets if t is not None]
    if not isinstance(value, int | float) or not targets:
        return None
    low, high = spread_bounds(row) or (float(value), float(value))
    low, high = min(low, value), max(high, value)  # the value itself always counts
    verdicts = []
    for target, kind in targets:
        inside, outside = (high <= target, low > target) if kind == "max" else (low >= target, high < target)
        verdicts.append("met" if inside else "not met" if outside else "inconclusive")
    if "not met" in verdicts:
        return "not met"
    return "inconclusive" if "inconclusive" in verdicts else "met"


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    """Write through a .tmp file, so a killed run never leaves half a result."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
    tmp.replace(path)


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "—"
    text = str(value)
    if isinstance(value, float):
        text = f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}"
    return f"{text}{unit}" if unit in ("x", "%") else f"{text} {unit}".rstrip()


def _target(row: Mapping[str, Any]) -> str:
    parts = []
    if row.get("target_max") is not None:
        parts.append(f"≤ {_fmt(row['target_max'], row.get('unit', ''))}")
    if row.get("target_min") is not None:
        parts.append(f"≥ {_fmt(row['target_min'], row.get('unit', ''))}")
    return ", ".join(parts) or "—"


def _met(row: Mapping[str, Any]) -> str:
    found = row["verdict"] if "verdict" in row else verdict(row)
    return {"met": "met", "not met": "**not met**", "inconclusive": "inconclusive"}.get(found or "", "—")


def _value(row: Mapping[str, Any]) -> str:
    """'0.997x [0.941-1.038]': the value and its spread, so a reader sees both sides of the verdict."""
    if row.get("error"):
        return str(row["error"])
    text = _fmt(row.get("value"), row.get("unit", ""))
    bounds = spread_bounds(row) if row.get("value") is not None else None
    return f"{text} [{bounds[0]:.3f}-{bounds[1]:.3f}]" if bounds else text


def headline_table(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    lines = ["| measure | value | target | | spread | note |", "|---|---|---|---|---|---|"]
    for row in rows:
        value = row.get("error") or _fmt(row.get("value"), row.get("unit", ""))
        cells = [row["name"], value, _target(row), _met(row), row.get("spread", ""), row.get("note", "")]
        lines.append("| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in cells) + " |")
    return lines


def to_markdown(result: Mapping[str, Any]) -> str:
    env = result.get("environment", {})
    lines = [f"# {result.get('title', result['module'])}", ""]
    lines.append(
        f"Run {result.get('started_at')} ({'quick' if result.get('quick') else 'full'}, {result.get('wall_s')} s); "
        f"{env.get('cpus_usable')} usable CPUs ({env.get('cpu_model')}), torch {env.get('torch')} with "
        f"{env.get('torch_threads')} threads, transformers {env.get('transformers')}, "
        f"load average {_load(env.get('load_average'))} → {_load(env.get('load_average_end'))}."
    )
    lines.append("")
    if result.get("error"):
        lines += ["**The benchmark failed:**", "", "```", str(result.get("traceback", result["error"])).strip(), "```"]
        return "\n".join(lines) + "\n"
    lines += headline_table(result.get("headline", []))
    for note in result.get("notes", []):
        lines += ["", note]
    return "\n".join(lines) + "\n"


def _load(values: Sequence[float] | None) -> str:
    return "/".join(f"{v:.1f}" for v in values) if values else "?"


def summary_markdown(results: Sequence[Mapping[str, Any]]) -> str:
    lines = [
        "# Benchmark summary",
        "",
        "Ratios are measured side by side in one run. Each value is shown with its spread in brackets (for a ratio:",
        "the interquartile range of its per-round ratios; see each file). A target is **met** or **not met** only",
        "when the whole spread lies on one side of it; where the spread straddles the target the run is",
        "**inconclusive**: the difference is within this run's noise.",
        "",
    ]
    lines += ["| benchmark | measure | value [spread] | target | |", "|---|---|---|---|---|"]
    for result in results:
        link = f"[{result['module']}]({result['module']}.md)"
        if result.get("error"):
            lines.append(f"| {link} | failed: {result['error']} | — | — | **not met** |")
            continue
        for row in result.get("headline", []):
            lines.append(f"| {link} | {row['name']} | {_value(row)} | {_target(row)} | {_met(row)} |")
    return "\n".join(lines) + "\n"


def run_all(modules: Mapping[str, RunFn], results_dir: Path, quick: bool) -> list[dict[str, Any]]:
    """Run the modules in turn, writing <name>.json/.md after each, and summary.md over all results in the folder."""
    results_dir.mkdir(parents=True, exist_ok=True)
    if results_dir == QUICK_DIR:
        (results_dir / ".gitignore").write_text("*\n")
    results = []
    for name, fn in modules.items():
        print(f"[bench] {name} ({'quick' if quick else 'full'}) ...", flush=True)
        result = run_one(name, fn, results_dir, quick)
        write_json(results_dir / f"{name}.json", result)
        (results_dir / f"{name}.md").write_text(to_markdown(result))
        print(f"[bench] {name}: {result['wall_s']} s{', FAILED: ' + result['error'] if result.get('error') else ''}")
        results.append(result)
    (results_dir / "summary.md").write_text(summary_markdown(_all_results(results_dir)))
    return results


def render(results_dir: Path) -> list[dict[str, Any]]:
    """Judge and write again every result in the folder from its JSON (no benchmark runs): verdicts, .md, summary."""
    results = _all_results(results_dir)
    for result in results:
        result["headline"] = [_judge(row) for row in result.get("headline", [])]
        write_json(results_dir / f"{result['module']}.json", result)
        (results_dir / f"{result['module']}.md").write_text(to_markdown(result))
    (results_dir / "summary.md").write_text(summary_markdown(results))
    return results


def _all_results(results_dir: Path) -> list[dict[str, Any]]:
    """Every module's latest result in the folder, so `--only` refreshes one line of the summary, not all of it."""
    found = []
    for path in sorted(results_dir.glob("*.json")):
        data = json.loads(path.read_text())
        if isinstance(data, dict) and "module" in data:
            found.append(data)
    return found


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run_all", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small rounds: checks the machinery in minutes")
    parser.add_argument("--only", action="append", default=[], metavar="NAME", help="run only this module (repeat)")
    parser.add_argument("--results-dir", type=Path, default=None, help="default bench/results (quick: .../quick)")
    parser.add_argument("--render", action="store_true", help="run nothing: re-render the folder's results from JSON")
    args = parser.parse_args(argv)
    results_dir = args.results_dir or (QUICK_DIR if args.quick else RESULTS_DIR)
    if args.render:
        render(results_dir.resolve())
        print((results_dir / "summary.md").read_text())
        return 0
    results = run_all(discover(args.only), results_dir.resolve(), args.quick)
    print((results_dir / "summary.md").read_text())
    return 1 if any(r.get("error") for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
