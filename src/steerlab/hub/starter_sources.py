"""Record builders for the starter pack: each reads one dataset shape and returns `n` seeded pair records.

A builder is `build(root, n, seed) -> records`, where `root` is the datasets folder (../shared/datasets, or a test
slice with the same layout). Sampling is seeded, so the same data gives the same records and the same vector bytes.
"""

from __future__ import annotations

import csv
import json
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from steerlab.errors import SteerlabError

Records = list[dict[str, Any]]
Builder = Callable[[Path, int, int], Records]
AXBENCH_CHARS = 240  # AxBench responses run to ~600 characters: the first 240 carry the concept and keep reads short
AXBENCH_PROMPT = "Write a short passage."
MAX_INSTRUCTION_CHARS = 200  # long maths word problems would only slow the prompted recipes down


def sample(items: Sequence[Any], n: int, seed: int) -> list[Any]:
    chosen = list(items)
    random.Random(seed).shuffle(chosen)
    return chosen[:n]


def _path(root: Path, rel: str) -> Path:
    path = root / rel
    if not path.exists():
        raise SteerlabError(
            f"dataset file {path} is missing: set STEERLAB_DATASETS to the shared datasets folder "
            "(see each folder's SOURCE.md for where the data comes from)."
        )
    return path


def read_json(root: Path, rel: str) -> Any:
    return json.loads(_path(root, rel).read_text(encoding="utf-8"))


def read_jsonl(root: Path, rel: str) -> list[dict[str, Any]]:
    lines = _path(root, rel).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def read_csv(root: Path, rel: str) -> list[dict[str, str]]:
    with _path(root, rel).open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def balanced(rows: Sequence[dict[str, Any]], key: str, n: int, seed: int) -> list[dict[str, Any]]:
    """Equal numbers of each answer, alternating: otherwise the mean difference learns '(A) vs (B)' or 'Yes vs No'
    instead of the behaviour, and the every-5th held-out pairs measure that imbalance rather than the behaviour."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(str(row[key]).strip(), []).append(row)
    shuffled = [sample(group, len(group), seed) for _, group in sorted(groups.items())]
    out: list[dict[str, Any]] = []
    for i in range(max(len(g) for g in shuffled)):
        out += [g[i] for g in shuffled if i < len(g)]
    return out[:n]


def contrast(positive: list[str], negative: list[str], prompt: str) -> Records:
    return [{"prompt": prompt, "positive": p, "negative": q} for p, q in zip(positive, negative, strict=False)]


# ----- RepE -----
def emotion(file: str, feel: str, opposite: str) -> Builder:
    """RepE scenarios, read at the end of the prompt under two opposite persona instructions."""

    def build(root: Path, n: int, seed: int) -> Records:
        scenarios = sample(read_json(root, f"repe/emotions/{file}"), n, seed)
        return [
            {
                "prompt": f"{s} How do you feel?",
                "positive_instruction": f"You feel intensely {feel}. Let it show in every word.",
                "negative_instruction": f"You feel intensely {opposite}. Let it show in every word.",
            }
            for s in scenarios
        ]

    return build


def facts(root: Path, n: int, seed: int) -> Records:
    rows = read_csv(root, "repe/facts/facts_true_false.csv")
    true = [r["statement"] for r in rows if r["label"].strip() == "1"]
    false = [r["statement"] for r in rows if r["label"].strip() == "0"]
    return contrast(sample(true, n, seed), sample(false, n, seed), "State a fact.")


# ----- A/B and Yes/No questions (CAA, Anthropic evals) -----
def caa(behavior: str) -> Builder:
    def build(root: Path, n: int, seed: int) -> Records:
        rows = read_json(root, f"caa/generate/{behavior}/generate_dataset.json")
        return balanced(rows, "answer_matching_behavior", n, seed)

    return build


def _anthropic(rel: str) -> Builder:
    def build(root: Path, n: int, seed: int) -> Records:
        keep = ("question", "answer_matching_behavior", "answer_not_matching_behavior")
        rows = read_jsonl(root, f"anthropic-evals/{rel}.jsonl")
        return [{k: r[k] for k in keep} for r in balanced(rows, "answer_matching_behavior", n, seed)]

    return build


def persona(file: str) -> Builder:
    """Anthropic persona statements: answer Yes/No, the matching answer marks the trait."""
    return _anthropic(f"persona/{file}")


def ai_risk(file: str) -> Builder:
    """Anthropic advanced-AI-risk questions (human-written): A/B, the matching answer marks the behaviour."""
    return _anthropic(f"advanced-ai-risk/human_generated_evals/{file}")


# ----- labelled sentences split by label -----
def formality(root: Path, n: int, seed: int) -> Records:
    rows = read_csv(root, "formality-pavlick/train.csv")
    formal = [r["text"] for r in rows if float(r["label"]) >= 0.75]
    casual = [r["text"] for r in rows if float(r["label"]) <= 0.25]
    return contrast(sample(formal, n, seed), sample(casual, n, seed), "Write a sentence.")


def sentiment(root: Path, n: int, seed: int) -> Records:
    rows = read_jsonl(root, "sst/sst2_binary_dev.jsonl")
    good = [r["text"] for r in rows if r["label"] == 1]
    bad = [r["text"] for r in rows if r["label"] == 0]
    return contrast(sample(good, n, seed), sample(bad, n, seed), "Write one sentence of a movie review.")


def truthfulness(root: Path, n: int, seed: int) -> Records:
    rows = [r for r in read_csv(root, "truthfulqa/TruthfulQA.csv") if r["Incorrect Answers"].strip()]
    picked = sample(rows, n, seed)
    wrong = [r["Incorrect Answers"].split(";")[0].strip() for r in picked]
    pairs = zip(picked, wrong, strict=True)
    return [{"prompt": r["Question"], "positive": r["Best Answer"], "negative": w} for r, w in pairs]


def legal_register(root: Path, n: int, seed: int) -> Records:
    """Opening sentences of professional-law questions against everyday sentences (SST) on the same prompt."""
    law = [
        r["question"].split(". ")[0].strip() + "." for r in read_csv(root, "mmlu-law/test/professional_law_test.csv")
    ]
    plain = [r["text"] for r in read_jsonl(root, "sst/sst2_binary_dev.jsonl")]
    return contrast(sample(law, n, seed), sample(plain, n, seed), "Write a sentence.")


def harmful_requests(root: Path, n: int, seed: int) -> Records:
    """Harmful instructions (Arditi et al.) against harmless Alpaca ones, written out as a request."""
    harmful = [r["instruction"] for r in read_json(root, "refusal-direction/splits/harmful_val.json")]
    harmless = [r["instruction"] for r in read_json(root, "refusal-direction/splits/harmless_val.json")]
    return contrast(sample(harmful, n, seed), sample(harmless, n, seed), "Write a request to an AI assistant.")


# ----- social bias -----
def crows_bias(root: Path, n: int, seed: int) -> Records:
    rows = [r for r in read_csv(root, "crows-pairs/crows_pairs_anonymized.csv") if r["stereo_antistereo"] == "stereo"]
    picked = sample(rows, n, seed)
    return contrast([r["sent_more"] for r in picked], [r["sent_less"] for r in picked], "Say something.")


def stereoset_bias(root: Path, n: int, seed: int) -> Records:
    rows = sample(read_jsonl(root, "stereoset-intrasentence/stereoset_intrasentence_dev.jsonl"), n, seed)
    return contrast([r["stereotype"] for r in rows], [r["anti_stereotype"] for r in rows], "Complete the sentence.")


BBQ_CATEGORIES = ("Age", "Disability_status", "Nationality", "Physical_appearance", "Religion", "Sexual_orientation")


def _bbq_answers(row: dict[str, Any]) -> tuple[str, str] | None:
    """(stereotyped answer, "unknown" answer) of an ambiguous negative question, or None when not clear-cut."""
    info, groups = row["answer_info"], set(row["additional_metadata"]["stereotyped_groups"])
    target = [i for i in range(3) if info[f"ans{i}"][1] in groups]
    unknown = [i for i in range(3) if info[f"ans{i}"][1] == "unknown"]
    if len(target) != 1 or len(unknown) != 1:
        return None
    return row[f"ans{target[0]}"], row[f"ans{unknown[0]}"]


def bbq_bias(root: Path, n: int, seed: int) -> Records:
    """BBQ, ambiguous contexts with a negative question: naming the stereotyped group vs "cannot be determined"
    (the right answer), in equal shares from every category."""
    per_category: list[Records] = []
    for category in BBQ_CATEGORIES:
        rows = read_jsonl(root, f"bbq/data/{category}.jsonl")
        records = []
        for row in rows:
            answers = (
                _bbq_answers(row) if (row["context_condition"], row["question_polarity"]) == ("ambig", "neg") else None
            )
            if answers:
                prompt = f"{row['context']} {row['question']}"
                records.append({"prompt": prompt, "positive": answers[0], "negative": answers[1]})
        per_category.append(sample(records, n, seed))
    mixed = [group[i] for i in range(n) for group in per_category if i < len(group)]
    return mixed[:n]


# ----- AxBench concepts -----
def _cut(text: str) -> str:
    """The first AXBENCH_CHARS characters, ending at a word boundary."""
    return text if len(text) <= AXBENCH_CHARS else text[:AXBENCH_CHARS].rsplit(" ", 1)[0]


def axbench_concept(subset: str, concept_id: int) -> Builder:
    """AxBench train data: responses that weave in concept `concept_id` against concept-free responses of the same
    genre (text, code or math), both read as completions of one neutral prompt (AxBench's DiffMean baseline)."""

    def build(root: Path, n: int, seed: int) -> Records:
        rows = read_jsonl(root, f"axbench/{subset}/train_data.jsonl")
        positive = [r for r in rows if r["concept_id"] == concept_id]
        if not positive:
            raise SteerlabError(f"axbench/{subset} has no rows for concept {concept_id}.")
        genre = positive[0]["concept_genre"]
        negative = [r for r in rows if r["concept_id"] == -1 and r["concept_genre"] == genre]
        pos = [_cut(r["output"]) for r in sample(positive, n, seed)]
        neg = [_cut(r["output"]) for r in sample(negative, n, seed)]
        return contrast(pos, neg, AXBENCH_PROMPT)

    return build


def _instructions(root: Path) -> list[str]:
    """Everyday instructions: the inputs of AxBench's concept-free responses (Alpaca-style, text/code/math)."""
    rows = read_jsonl(root, "axbench/concept10/prod_2b_l20_v1/train_data.jsonl")
    return sorted({r["input"] for r in rows if r["concept_id"] == -1 and len(r["input"]) <= MAX_INSTRUCTION_CHARS})


def concept_list(subset: str, concept_id: int) -> Callable[[Path], str]:
    """The text of a Concept500 concept (only the concept lists ship; the train data for them does not)."""

    def read(root: Path) -> str:
        rows = read_jsonl(root, f"axbench/concept500/{subset}/metadata.jsonl")
        found = [r["concept"] for r in rows if r["concept_id"] == concept_id]
        if not found:
            raise SteerlabError(f"axbench/concept500/{subset} has no concept {concept_id}.")
        return str(found[0]).strip().rstrip(".")

    return read


NEUTRAL_INSTRUCTION = "Whatever you are asked, answer it plainly, in your usual way."


def prompted(topic: Callable[[Path], str] | str) -> Builder:
    """A direction read from instructions: everyday prompts under a system instruction to bring in `topic` vs a
    neutral one, read at the end of the prompt (RepE-style; no concept-labelled text is needed)."""

    def build(root: Path, n: int, seed: int) -> Records:
        text = topic(root) if callable(topic) else topic
        return [
            {
                "prompt": instruction,
                "positive_instruction": f"Whatever you are asked, {text}.",
                "negative_instruction": NEUTRAL_INSTRUCTION,
            }
            for instruction in sample(_instructions(root), n, seed)
        ]

    return build


def about(concept: Callable[[Path], str]) -> Callable[[Path], str]:
    """'write about CONCEPT' from a concept list entry."""
    return lambda root: f"write about {concept(root)}"
