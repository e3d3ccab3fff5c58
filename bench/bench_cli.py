"""CLI start-up: how long `steerlab --help` and `steerlab hub list` take, end to end, as a user runs them.

Each round starts every command once as a fresh process (the installed console script), conditions alternating
ABBA round by round; the figure is the median wall time over the rounds, with its spread. Two references run in the
same rounds: a bare Python start (the floor no CLI can go under) and `import steerlab.models` (torch and
transformers: what every command paid before the CLI imported them lazily). The store listed holds 50 tiny signed
vectors, as many as the starter pack. Each command is also traced once with PYTHONPROFILEIMPORTTIME, and the JSON
records whether torch or transformers was imported (tests/test_cli_fast.py asserts that they are not).
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import interleave, summary

TARGET_S = 1.0
ENTRIES = 50
HEAVY = ("torch", "transformers")


def console_script() -> list[str]:
    script = Path(sys.executable).with_name("steerlab")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "steerlab"]


def build_store(root: Path, entries: int) -> None:
    """`entries` signed random vectors (hidden size 8, 4 layers) published to a local store at `root`."""
    import torch

    from steerlab.card import Card
    from steerlab.hub.publish import prepare
    from steerlab.hub.store import LocalStore
    from steerlab.vector import Vector

    store, key = LocalStore(root), root.parent / "publisher.pem"
    gen = torch.Generator().manual_seed(0)
    for i in range(entries):
        card = Card(hidden_size=8, n_layers=4, method="mean_diff", name=f"axis{i}", description=f"bench axis {i}")
        vector = Vector({layer: torch.randn(8, generator=gen) for layer in range(4)}, card)
        file = vector.save(root.parent / f"axis{i}.safetensors")
        store.publish(*prepare(file, f"bench/axis{i}@1.0.0", ["bench"], None, key, True))


def launcher(command: list[str], env: dict[str, str], cpu: list[float]) -> Callable[[], None]:
    """Runs the command (timed by the caller's wall clock) and appends the CPU seconds it used to `cpu`.

    CPU time (user + system) moves much less with other work on the machine than wall time does: it is the better
    guess of what the command takes on a quiet machine.
    """

    def start() -> None:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)

    return start


def heavy_imports(command: list[str], env: dict[str, str]) -> list[str]:
    """The torch/transformers modules the command imports (from Python's own import trace)."""
    proc = subprocess.run(command, env={**env, "PYTHONPROFILEIMPORTTIME": "1"}, capture_output=True, text=True)
    names = {line.rsplit("|", 1)[1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    return sorted(n for n in names if n.split(".")[0] in HEAVY)


def seconds_row(
    name: str, stats: dict[str, Any], cpu: dict[str, Any], target: float | None, note: str
) -> dict[str, Any]:
    row = {
        "name": name,
        "value": round(stats["median"], 3),
        "unit": "s",
        "spread": f"IQR {stats['q1']:.3f}-{stats['q3']:.3f} s, range {stats['min']:.3f}-{stats['max']:.3f} s "
        f"(n={stats['n']})",
        "spread_low": stats["q1"],  # the runner judges the target against the IQR
        "spread_high": stats["q3"],
        "note": f"{note}; CPU {cpu['median']:.3f} s (median user + system)",
    }
    if target is not None:
        row["target_max"] = target
    return row


def run(results_dir: Path, quick: bool) -> dict[str, Any]:
    rounds = 5 if quick else 15
    with tempfile.TemporaryDirectory(prefix="bench-cli-") as tmp:
        base = Path(tmp)
        build_store(base / "store", ENTRIES)
        env = {**os.environ, "STEERLAB_HOME": str(base / "home"), "COLUMNS": "120"}
        commands = {
            "steerlab --help": [*console_script(), "--help"],
            "steerlab hub list": [*console_script(), "hub", "list", "--from", str(base / "store"), "--json"],
            "python -c pass": [sys.executable, "-c", "pass"],
            "import steerlab.models": [sys.executable, "-c", "import steerlab.models"],
        }
        heavy = {name: heavy_imports(command, env) for name, command in commands.items()}
        cpu: dict[str, list[float]] = {name: [] for name in commands}
        launchers = {name: launcher(command, env, cpu[name]) for name, command in commands.items()}
        times = interleave(launchers, rounds=rounds)
    stats = {name: summary(samples) for name, samples in times.items()}
    cpu_stats = {name: summary(samples[-rounds:]) for name, samples in cpu.items()}  # the warm-up round left out
    rows = [
        ("steerlab --help", "`steerlab --help`, wall time", TARGET_S, _imports(heavy["steerlab --help"])),
        (
            "steerlab hub list",
            f"`steerlab hub list --json`, {ENTRIES} entries, wall time",
            TARGET_S,
            _imports(heavy["steerlab hub list"]),
        ),
        ("python -c pass", "reference: bare `python -c pass`", None, "the floor"),
        ("import steerlab.models", "reference: `import steerlab.models`", None, "torch + transformers: the old cost"),
    ]
    headline = [seconds_row(label, stats[key], cpu_stats[key], target, note) for key, label, target, note in rows]
    notes = [
        f"Each figure is the median of {rounds} fresh processes per command, rounds alternating ABBA (one untimed "
        "warm-up round first, so the page cache is warm as it is for a user's second call). "
        "`hub list` reads a local store of 50 signed vectors and prints them as JSON (catalogue in SQLite). "
        "The note gives each command's CPU time (user + system), which moves much less than wall time when other "
        "work shares the cores: under a load above the core count, read it as the quiet-machine estimate.",
    ]
    return {
        "title": "CLI start-up: `steerlab --help` and `steerlab hub list`",
        "headline": headline,
        "notes": notes,
        "details": {
            "rounds": rounds,
            "entries": ENTRIES,
            # torch alone brings hundreds of modules: how many, and the first few, are enough to see what came in
            "heavy_imports": {name: {"count": len(found), "first": found[:5]} for name, found in heavy.items()},
            "samples_s": times,
            "cpu_samples_s": cpu,
            "stats": stats,
            "cpu_stats": cpu_stats,
        },
    }


def _imports(heavy: list[str]) -> str:
    return f"**imports {', '.join(heavy[:3])}**" if heavy else "imports neither torch nor transformers"
