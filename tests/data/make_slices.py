"""Write the small dataset slices that the tests read (tests/data/datasets/) from the full datasets.

    python tests/data/make_slices.py [--source DIR]

DIR defaults to $STEERLAB_DATASETS, else ../shared/datasets beside the repository. Each slice keeps the source's folder
layout, file names and format (JSON indent and escaping, CSV quoting and line endings, raw JSONL/TSV lines), so every
loader reads a slice exactly as it reads the real file. A slice is the whole file, its first N rows, or the first N
rows of each label (so label balance holds and a test that reads the first rows of a file reads the same rows as on
the full data). No randomness: a rerun writes the same bytes. Each folder gets a SOURCE.md with the source's own
SOURCE.md (origin, licence) and the rule each file was cut by; LICENSE files are copied whole.
"""

from __future__ import annotations

import argparse
import csv
import fnmatch
import io
import json
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
OUT = HERE / "datasets"
WHOLE_UP_TO = 64 * 1024  # a file with no rule is copied whole only when it is this small; otherwise the script stops
LABEL = "answer_matching_behavior"


# ----- tables: a file's rows, parsed for the rules, and a way to write chosen rows in the file's own format -----
@dataclass(frozen=True)
class Table:
    rows: list[Any]
    render: Callable[[list[int]], str]


def _lines_table(text: str, parse: Callable[[str], Any]) -> Table:
    # Rows are kept in file order, so only a slice that keeps the last row can end without a newline, as its source.
    lines = [line for line in text.splitlines(keepends=True) if line.strip()]
    return Table([parse(line) for line in lines], lambda keep: "".join(lines[i] for i in keep))


def _json_table(text: str, path: Path) -> Table:
    data = json.loads(text)
    if not isinstance(data, list):
        raise SystemExit(f"{path}: a JSON slice needs a top-level list")
    tail = "\n" if text.endswith("\n") else ""
    style = next(
        (
            (indent, ascii_only)
            for indent in (4, 2, None)
            for ascii_only in (True, False)
            if json.dumps(data, indent=indent, ensure_ascii=ascii_only) + tail == text
        ),
        None,
    )
    if style is None:
        raise SystemExit(f"{path}: no json.dumps style reproduces this file, so a slice could not keep its format")
    indent, ascii_only = style
    return Table(data, lambda keep: json.dumps([data[i] for i in keep], indent=indent, ensure_ascii=ascii_only) + tail)


def _csv_table(text: str) -> Table:
    header, *rows = list(csv.reader(io.StringIO(text, newline="")))
    terminator = "\r\n" if text.split("\n", 1)[0].endswith("\r") else "\n"
    tail = text.endswith(terminator)

    def render(keep: list[int]) -> str:
        buffer = io.StringIO(newline="")
        csv.writer(buffer, lineterminator=terminator).writerows([header, *(rows[i] for i in keep)])
        out = buffer.getvalue()
        return out if tail or keep[-1:] != [len(rows) - 1] else out[: -len(terminator)]

    return Table([dict(zip(header, row, strict=False)) for row in rows], render)


def read_table(path: Path) -> Table:
    text = path.read_text(encoding="utf-8")
    name = path.name
    if name.endswith(".json"):
        return _json_table(text, path)
    if name.endswith(".jsonl"):
        return _lines_table(text, json.loads)
    if name.endswith(".csv"):
        return _csv_table(text)
    if name.endswith(".tsv"):
        return _lines_table(text, lambda line: line.rstrip("\r\n").split("\t"))
    if name.endswith(".txt.dev"):  # StereoSet originals: "ID sentence" a line
        return _lines_table(text, lambda line: line.split(" ", 1))
    raise SystemExit(f"{path}: no reader for this file type")


# ----- rules: which rows a slice keeps (indices in file order) and how SOURCE.md says so -----
@dataclass(frozen=True)
class Rule:
    pick: Callable[[list[Any]], list[int]] | None  # None: copy the file's bytes
    how: str


def whole() -> Rule:
    return Rule(None, "copied whole")


def first(n: int) -> Rule:
    return Rule(lambda rows: list(range(min(n, len(rows)))), f"the first {n} rows")


def first_per(
    key: Callable[[Any], Any], n: int, what: str, overrides: dict[Any, int] | None = None, note: str = ""
) -> Rule:
    """The first n rows of each value of key (overrides: another n for some values; note says so), in file order."""
    counts = overrides or {}

    def pick(rows: list[Any]) -> list[int]:
        seen: dict[Any, int] = {}
        keep = []
        for i, row in enumerate(rows):
            value = key(row)
            seen[value] = seen.get(value, 0) + 1
            if seen[value] <= counts.get(value, n):
                keep.append(i)
        return keep

    return Rule(pick, f"the first {n} rows of each {what}{note}, in file order")


def field(*names: str) -> Callable[[Any], Any]:
    return lambda row: tuple(str(row[n]).strip() for n in names) if len(names) > 1 else str(row[names[0]]).strip()


# Recipes contrast a concept's rows with concept-free rows (concept_id -1) of the same genre: keep every genre, and
# 16 of each, so a concept vector builds from 16 pairs (3 held out) as the starter test's do.
AXBENCH_TRAIN = first_per(
    field("concept_id", "concept_genre"),
    16,
    "(`concept_id`, `concept_genre`)",
    {("-1", genre): 16 for genre in ("text", "code", "math")},
    "; of the concept-free rows (`concept_id` -1): the first 16 of each genre",
)

# First matching pattern wins. Sizes: enough rows for the seed suite at FULL size (64 pairs + 32 validation + >= 100
# test items), the starter recipes (6 sampled records each; 32-pair builds), and the first-N reads of the tests.
RULES: Sequence[tuple[str, Rule]] = (
    ("*.parquet", Rule(None, "not copied: a row-for-row copy of the .jsonl beside it, which is what steerlab reads")),
    ("anthropic-evals/advanced-ai-risk/*.jsonl", first_per(field(LABEL), 32, f"`{LABEL}`")),
    ("anthropic-evals/persona/*.jsonl", first_per(field(LABEL), 32, f"`{LABEL}`")),
    ("anthropic-evals/winogenerated/winogenerated_examples.jsonl", first(120)),
    ("axbench/concept500/*/metadata.jsonl", whole()),  # the concept lists: a recipe may pick any of the 500
    ("axbench/*/train_data.jsonl", AXBENCH_TRAIN),
    ("axbench/*/latent_eval_data.jsonl", first_per(field("concept_id", "category"), 2, "(`concept_id`, `category`)")),
    ("bbq/data/*.jsonl", first_per(field("context_condition", "question_polarity"), 12, "(context, polarity)")),
    ("caa/generate/*/generate_dataset.json", first_per(field(LABEL), 60, f"`{LABEL}` letter")),
    ("caa/test/mmlu/mmlu.json", first_per(field("correct"), 50, "`correct` letter")),
    ("caa/test/truthfulqa/truthful_qa.json", first_per(field("correct"), 50, "`correct` letter")),
    ("crows-pairs/crows_pairs_anonymized.csv", first(300)),
    ("mmlu-law/test/professional_law_test.csv", first(100)),
    ("refusal-direction/splits/harmful_test.json", first(200)),
    ("refusal-direction/splits/harmless_*.json", first(200)),
    ("sst/sst2_binary_*.jsonl", first_per(field("label"), 120, "`label`")),
    ("sst/original/sst5_*.tsv", first_per(lambda row: row[0], 40, "SST-5 label")),
    ("stereoset-intrasentence/stereoset_intrasentence_dev.jsonl", first(150)),
    ("stereoset-intrasentence/original/*.dev", first(150)),
    ("truthfulqa/TruthfulQA.csv", first(100)),
)


def rule_for(rel: str, size: int) -> Rule:
    for pattern, rule in RULES:
        if fnmatch.fnmatch(rel, pattern):
            return rule
    if size <= WHOLE_UP_TO:
        return whole()
    raise SystemExit(f"{rel} ({size} bytes) has no slicing rule: add one to RULES in {Path(__file__).name}")


def slice_file(source: Path, rel: str, dest: Path) -> tuple[str, str, str] | None:
    """Write one slice; returns its SOURCE.md row (file, rows kept, how), or None for files left out."""
    path = source / rel
    rule = rule_for(rel, path.stat().st_size)
    if rule.pick is None:
        if rule.how != "copied whole":
            return (rel.split("/", 1)[1], "-", rule.how)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, dest)
        return (rel.split("/", 1)[1], "all", rule.how)
    table = read_table(path)
    keep = rule.pick(table.rows)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(table.render(keep), encoding="utf-8", newline="")
    return (rel.split("/", 1)[1], f"{len(keep)} of {len(table.rows)}", rule.how)


def source_md(folder: str, rows: list[tuple[str, str, str]], original: str) -> str:
    table = "\n".join(f"| {name} | {kept} | {how} |" for name, kept, how in rows)
    return (
        f"# Test slice of `{folder}/` (written by tests/data/make_slices.py: do not edit by hand)\n\n"
        "A few rows of the full dataset, for the tests: the same layout, file names and formats, fewer rows. The full\n"
        f"data is `../shared/datasets/{folder}/` beside a clone of the project (or `$STEERLAB_DATASETS/{folder}/`).\n"
        "Origin and licence are those of the source, whose SOURCE.md is copied unchanged below; a LICENSE file\n"
        "beside this one is the source's, copied whole.\n\n"
        "## How each file was cut\n\n"
        "| file | rows kept | rule |\n|---|---|---|\n"
        f"{table}\n\n"
        "## The source's SOURCE.md\n\n"
        f"{original}"
    )


def make_slices(source: Path, out: Path = OUT) -> dict[str, int]:
    """Replace `out` with fresh slices of every folder in `source`; returns bytes written per folder."""
    if not source.is_dir():
        raise SystemExit(f"no datasets at {source}: pass --source or set STEERLAB_DATASETS")
    if out.exists():
        shutil.rmtree(out)
    sizes = {}
    for folder in sorted(p.name for p in source.iterdir() if p.is_dir()):
        files = sorted(p.relative_to(source).as_posix() for p in (source / folder).rglob("*") if p.is_file())
        rows = [row for rel in files if rel != f"{folder}/SOURCE.md" and (row := slice_file(source, rel, out / rel))]
        original = (source / folder / "SOURCE.md").read_text(encoding="utf-8")
        (out / folder / "SOURCE.md").write_text(source_md(folder, rows, original), encoding="utf-8")
        sizes[folder] = sum(p.stat().st_size for p in (out / folder).rglob("*") if p.is_file())
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    default = os.environ.get("STEERLAB_DATASETS") or str(REPO.parent / "shared" / "datasets")
    parser.add_argument("--source", type=Path, default=Path(default), help=f"the full datasets (default: {default})")
    args = parser.parse_args()
    sizes = make_slices(args.source)
    for folder, size in sizes.items():
        print(f"{folder:28} {size / 1024:8.1f} KiB")
    print(f"{'total':28} {sum(sizes.values()) / 1024:8.1f} KiB in {OUT.relative_to(REPO)}")


if __name__ == "__main__":
    main()
