"""Reliability figures (issue 14, item 5): the store and the OpenAI server under kill -9, concurrency, hostile uploads
and malformed requests, each against the real server started as a subprocess on loopback.

`python -m bench.run_all --only reliability` writes bench/results/reliability.{json,md}. All figures are counts.
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.reliability_fuzz import Case, Fuzzer
from bench.reliability_procs import hub_server, new_database, postgres_bindir, postgres_cluster
from bench.reliability_serve import serve_run
from bench.reliability_store import concurrency_run, crash_run, entries, new_store
from steerlab.hub.protocol import API

SEED = 14


@dataclass(frozen=True)
class Sizes:
    pushes: int = 100  # kill -9 section: pushes per catalogue
    kills: int = 6  # ... of which this many have the server killed on the way
    concurrent: int = 32  # pushes and pulls per round, on as many threads
    rounds: int = 3
    fuzz: int = 1000
    clients: int = 64
    client_rounds: int = 3  # each client: this many well-formed requests, each after a malformed one


QUICK = Sizes(pushes=20, kills=3, concurrent=8, rounds=1, fuzz=120, clients=8, client_rounds=2)
MAX_BYTES = 5_000_000  # the fuzzed server's upload limit: huge cards fit under it, oversized bodies do not


def fuzz_run(workdir: Path, n: int, seed: int) -> dict[str, Any]:
    """n seeded hostile uploads to `steerlab hub serve` on SQLite; after each, the store must be as before."""
    root = workdir / "store"
    token = new_store(root, None, "fz")
    cases = Fuzzer(seed, MAX_BYTES).cases(n)
    results: list[dict[str, Any]] = []
    with hub_server(root, workdir, "--max-bytes", str(MAX_BYTES)) as server:
        before = _snapshot(server.url, root)
        for case in cases:
            status, message = _upload(server.url, token, case)
            changed = _snapshot(server.url, root) != before
            results.append({"category": case.category, "label": case.label, "status": status, "error": message})
            results[-1]["stored_something"] = changed
            if changed:  # later cases are judged against the store as it now is
                before = _snapshot(server.url, root)
        health = httpx.get(f"{server.url}/health").status_code
    return _fuzz_summary(results, health)


def _upload(url: str, token: str, case: Case) -> tuple[int | None, str]:
    headers = {"authorization": f"Bearer {token}", **case.headers}
    try:
        answer = httpx.post(
            f"{url}{API}/entries/{case.name}", params=case.params, content=case.body, headers=headers, timeout=120
        )
    except httpx.TransportError as exc:
        return None, f"no answer: {type(exc).__name__}"
    try:
        error = answer.json().get("error", "")
    except ValueError:
        error = ""
    return answer.status_code, str(error)


def _snapshot(url: str, root: Path) -> tuple[list[tuple[str, str]], list[tuple[str, int]]]:
    """Every entry the server lists (all namespaces, all versions) and every file in the blob folder, temp files too."""
    listed = sorted((e["ref"], e["sha256"]) for e in entries(url, "fz"))
    files = sorted((str(p.relative_to(root)), p.stat().st_size) for p in (root / "blobs").rglob("*") if p.is_file())
    return listed, files


def _clear(result: dict[str, Any]) -> bool:
    status, error = result["status"], result["error"]
    return status is not None and 400 <= status < 500 and len(error) >= 15 and not result["stored_something"]


def _fuzz_summary(results: list[dict[str, Any]], health: int) -> dict[str, Any]:
    by_category: dict[str, dict[str, Any]] = {}
    for r in results:
        row = by_category.setdefault(r["category"], {"cases": 0, "refused_clearly": 0, "statuses": {}, "example": ""})
        row["cases"] += 1
        row["refused_clearly"] += _clear(r)
        row["statuses"][str(r["status"])] = row["statuses"].get(str(r["status"]), 0) + 1
        row["example"] = row["example"] or f"{r['label']} -> {r['status']}: {r['error'][:160]}"
    failures = [r for r in results if not _clear(r)]
    return {
        "cases": len(results),
        "refused_clearly": len(results) - len(failures),
        "answered_5xx": sum(1 for r in results if r["status"] is not None and r["status"] >= 500),
        "no_answer": sum(1 for r in results if r["status"] is None),
        "accepted_2xx": sum(1 for r in results if r["status"] is not None and r["status"] < 300),
        "stored_something": sum(r["stored_something"] for r in results),
        "health_after": health,
        "by_category": dict(sorted(by_category.items())),
        "failures": failures[:40],
    }


# ----- sections -----
def store_sections(workdir: Path, sizes: Sizes) -> dict[str, Any]:
    """kill -9 and concurrency on SQLite, then on PostgreSQL when it is installed."""
    out: dict[str, Any] = {
        "crash": {"sqlite": crash_run(_fresh(workdir, "crash-sqlite"), None, sizes.pushes, sizes.kills, SEED)},
        "concurrency": {
            "sqlite": concurrency_run(_fresh(workdir, "conc-sqlite"), None, sizes.concurrent, sizes.rounds, SEED)
        },
    }
    if postgres_bindir() is None:
        out["postgresql"] = "not installed: PostgreSQL sections skipped"
        return out
    with postgres_cluster() as server_url:
        crash_dir, conc_dir = _fresh(workdir, "crash-pg"), _fresh(workdir, "conc-pg")
        out["crash"]["postgresql"] = crash_run(crash_dir, new_database(server_url), sizes.pushes, sizes.kills, SEED)
        conc = concurrency_run(conc_dir, new_database(server_url), sizes.concurrent, sizes.rounds, SEED)
        out["concurrency"]["postgresql"] = conc
    return out


def _fresh(workdir: Path, name: str) -> Path:
    folder = workdir / name
    folder.mkdir(parents=True)
    return folder


def measure(workdir: Path, sizes: Sizes) -> dict[str, Any]:
    figures = store_sections(workdir, sizes)
    figures["fuzz"] = fuzz_run(_fresh(workdir, "fuzz"), sizes.fuzz, SEED)
    figures["serve"] = serve_run(_fresh(workdir, "serve"), sizes.clients, sizes.client_rounds, SEED)
    return figures


def run(results_dir: Path, quick: bool) -> dict[str, Any]:
    sizes = QUICK if quick else Sizes()
    with tempfile.TemporaryDirectory(prefix="steerlab-reliability-") as tmp:
        figures = measure(Path(tmp), sizes)
    return {
        "title": "Reliability: kill -9, concurrency, hostile uploads, malformed requests (real servers, loopback)",
        "sizes": asdict(sizes),
        "figures": figures,
        "headline": headline(figures),
        "notes": notes(figures),
    }


# ----- report -----
Row = dict[str, Any]


def _row(name: str, value: int, unit: str, note: str, target: int | None = None, at_most: bool = True) -> Row:
    row: Row = {"name": name, "value": value, "unit": unit, "note": note}
    if target is not None:
        row["target_max" if at_most else "target_min"] = target
    return row


def headline(figures: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    for backend, crash in figures["crash"].items():
        bad = sum(k["missing"] + k["duplicated"] + k["unexpected_or_wrong"] for k in [*crash["after_kills"]])
        final = crash["final"]
        bad += final["missing"] + final["duplicated"] + final["unexpected_or_wrong"]
        unclean = sum(not k["verify_clean"] for k in crash["after_kills"]) + (not final["verify_clean"])
        note = f"{crash['kills']} kills in {crash['pushes']} pushes; `hub verify` unclean {unclean} times"
        rows.append(_row(f"kill -9 ({backend}): missing, doubled or wrong entries", bad, "entries", note, 0))
    for backend, conc in figures["concurrency"].items():
        bad = conc["lost"] + conc["duplicated"] + conc["mixed_up"]
        note = f"{conc['pushes']} pushes ({conc['pushes_ok']} ok), {conc['pulls']} pulls ({conc['pulls_ok']} ok)"
        rows.append(_row(f"concurrency ({backend}): lost, doubled or mixed-up versions", bad, "versions", note, 0))
    fuzz = figures["fuzz"]
    note = (
        f"of {fuzz['cases']}; 5xx {fuzz['answered_5xx']}, 2xx {fuzz['accepted_2xx']}, stored {fuzz['stored_something']}"
    )
    rows.append(
        _row("fuzzed uploads not refused with a clear 4xx", fuzz["cases"] - fuzz["refused_clearly"], "", note, 0)
    )
    serve = figures["serve"]
    wrong = serve["good_requests"] - serve["good_own_answer"]
    note = f"of {serve['good_requests']} from {serve['clients']} concurrent clients"
    rows.append(_row("well-formed requests failed or answered another's text", wrong, "", note, 0))
    bad = serve["malformed_requests"] - serve["malformed_4xx_with_error"]
    note = f"of {serve['malformed_requests']}; 5xx {serve['malformed_5xx']}"
    rows.append(_row("malformed requests not refused with a clear 4xx", bad, "", note, 0))
    return rows


def notes(figures: dict[str, Any]) -> list[str]:
    return [_crash_notes(figures), _fuzz_notes(figures["fuzz"]), _serve_note(figures["serve"]), NOT_COVERED]


def _crash_notes(figures: dict[str, Any]) -> str:
    lines = ["**kill -9 of `steerlab hub serve` during pushes** (restart after each kill, then audit):", ""]
    lines += [
        "| catalogue | kill landed | answer | entry committed | listed after restart | verify |",
        "|---|---|---|---|---|---|",
    ]
    for backend, crash in figures["crash"].items():
        for k in crash["after_kills"]:
            verdict = "clean" if k["verify_clean"] else "**unclean**"
            lines.append(f"| {backend} | {k['kill']} | {k['answer']} | {k['committed']} | {k['listed']} | {verdict} |")
    lines.append("")
    lines.append(_conc_note(figures["concurrency"]))
    return "\n".join(lines)


def _conc_note(concurrency: dict[str, Any]) -> str:
    parts = []
    for backend, c in concurrency.items():
        parts.append(
            f"{backend}: {c['pushes_ok']}/{c['pushes']} pushes and {c['pulls_ok']}/{c['pulls']} pulls right "
            f"({c['pulls_before_first']} pulls came before the first racing version and got 404), "
            f"lost {c['lost']}, doubled {c['duplicated']}, mixed up {c['mixed_up']}, verify clean {c['verify_clean']}"
        )
    return "**Concurrent pushes and pulls** (half the pushes race for auto versions of one name): " + "; ".join(parts)


def _fuzz_notes(fuzz: dict[str, Any]) -> str:
    lines = ["**Fuzzed uploads** by category (seeded; every case is invalid by the store's contract):", ""]
    lines += ["| category | cases | refused clearly | statuses | example |", "|---|---|---|---|---|"]
    for category, row in fuzz["by_category"].items():
        statuses = ", ".join(f"{s}: {n}" for s, n in sorted(row["statuses"].items()))
        example = row["example"].replace("|", "\\|")
        lines.append(f"| {category} | {row['cases']} | {row['refused_clearly']} | {statuses} | {example} |")
    return "\n".join(lines)


def _serve_note(serve: dict[str, Any]) -> str:
    statuses = ", ".join(f"{s}: {n}" for s, n in serve["malformed_status"].items())
    return (
        f"**OpenAI server**: {serve['clients']} concurrent clients, each sending its own prompt and steering "
        f"{serve['rounds']} times with a malformed request before each. Alone, the {serve['clients']} requests give "
        f"{serve['distinct_answers_alone']} distinct texts. Well-formed: {serve['good_ok']}/{serve['good_requests']} "
        f"answered 200, {serve['good_own_answer']} with exactly the text the same request gets alone. Malformed: "
        f"{serve['malformed_4xx_with_error']}/{serve['malformed_requests']} refused with a 4xx and an error message "
        f"({statuses}); not refused: {serve['malformed_not_refused'] or 'none'}. "
        f"/health after: {serve['health_after']}."
    )


NOT_COVERED = """**Not covered here:** a kill -9 of PostgreSQL itself or of the machine (power loss; the
cluster runs with fsync off); a full disk; kill -9 of `steerlab serve` (it holds no state to lose); fuzzing the read,
grant, order and listing routes (only uploads are fuzzed) and fuzzing on PostgreSQL (validation runs before the
catalogue is touched); slow-loris clients and connection floods; the OpenAI server on a real model or with
`--api-keys` (isolation under auth is tested in tests/test_serve_auth.py); more than one store server process on one
catalogue."""
