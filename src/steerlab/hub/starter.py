"""The starter pack: vectors for the default model, extracted from the shared datasets and published to a store.

`make starter-pack` (python -m steerlab.hub.starter) builds every recipe below with a modest number of pairs, writes
each one's measured effect (held-out extraction diagnostics) into its card, signs it and publishes it as
`starter/NAME@VERSION`. Recipes already in the store at that version are skipped, so a rerun only fills gaps.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from steerlab.errors import SteerlabError

NAMESPACE = "starter"
VERSION = "1.0.0"
DEFAULT_PAIRS = 32
LONG_PROMPT_PAIRS = 24  # CAA questions are 5-10 times longer than the others: fewer of them keep the pack quick
AUTHOR = "steerlab starter pack"
Records = list[dict[str, Any]]


def datasets_root() -> Path:
    here = Path(__file__).resolve().parents[3]  # the repository root when installed in development mode
    return Path(os.environ.get("STEERLAB_DATASETS", here.parent / "shared" / "datasets"))


@dataclass(frozen=True)
class Recipe:
    """How to make one starter vector: which records (pairs) to read and what to say about the result."""

    name: str
    description: str
    tags: tuple[str, ...]
    license: str
    source: str
    records: Callable[[Path, int, int], Records] = field(repr=False)
    pairs: int = DEFAULT_PAIRS


def _sample(items: Sequence[Any], n: int, seed: int) -> list[Any]:
    chosen = list(items)
    random.Random(seed).shuffle(chosen)
    return chosen[:n]


def _json(root: Path, rel: str) -> Any:
    path = root / rel
    if not path.exists():
        raise SteerlabError(f"dataset file {path} is missing: set STEERLAB_DATASETS to the shared datasets folder.")
    return json.loads(path.read_text(encoding="utf-8"))


def _jsonl(root: Path, rel: str) -> list[dict[str, Any]]:
    path = root / rel
    if not path.exists():
        raise SteerlabError(f"dataset file {path} is missing: set STEERLAB_DATASETS to the shared datasets folder.")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _csv(root: Path, rel: str) -> list[dict[str, str]]:
    path = root / rel
    if not path.exists():
        raise SteerlabError(f"dataset file {path} is missing: set STEERLAB_DATASETS to the shared datasets folder.")
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


# ----- record builders, one per dataset shape -----
def emotion(file: str, feel: str, opposite: str) -> Callable[[Path, int, int], Records]:
    """RepE scenarios, read at the end of the prompt under two opposite persona instructions."""

    def build(root: Path, n: int, seed: int) -> Records:
        scenarios = _sample(_json(root, f"repe/emotions/{file}"), n, seed)
        return [
            {
                "prompt": f"{s} How do you feel?",
                "positive_instruction": f"You feel intensely {feel}. Let it show in every word.",
                "negative_instruction": f"You feel intensely {opposite}. Let it show in every word.",
            }
            for s in scenarios
        ]

    return build


def _balanced(rows: Sequence[dict[str, Any]], key: str, n: int, seed: int) -> list[dict[str, Any]]:
    """Equal numbers of each answer, alternating: otherwise the mean difference learns '(A) vs (B)' or 'Yes vs No'
    instead of the behaviour, and the every-5th held-out pairs measure that imbalance rather than the behaviour."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(str(row[key]).strip(), []).append(row)
    shuffled = [_sample(group, len(group), seed) for _, group in sorted(groups.items())]
    out: list[dict[str, Any]] = []
    for i in range(max(len(g) for g in shuffled)):
        out += [g[i] for g in shuffled if i < len(g)]
    return out[:n]


def caa(behavior: str) -> Callable[[Path, int, int], Records]:
    def build(root: Path, n: int, seed: int) -> Records:
        rows = _json(root, f"caa/generate/{behavior}/generate_dataset.json")
        return _balanced(rows, "answer_matching_behavior", n, seed)

    return build


def persona(file: str) -> Callable[[Path, int, int], Records]:
    """Anthropic persona statements: answer Yes/No, the matching answer marks the trait."""

    def build(root: Path, n: int, seed: int) -> Records:
        rows = _jsonl(root, f"anthropic-evals/persona/{file}.jsonl")
        keep = ("question", "answer_matching_behavior", "answer_not_matching_behavior")
        return [{k: r[k] for k in keep} for r in _balanced(rows, "answer_matching_behavior", n, seed)]

    return build


def _contrast(positive: list[str], negative: list[str], prompt: str) -> Records:
    return [{"prompt": prompt, "positive": p, "negative": q} for p, q in zip(positive, negative, strict=False)]


def formality(root: Path, n: int, seed: int) -> Records:
    rows = _csv(root, "formality-pavlick/train.csv")
    formal = [r["text"] for r in rows if float(r["label"]) >= 0.75]
    casual = [r["text"] for r in rows if float(r["label"]) <= 0.25]
    return _contrast(_sample(formal, n, seed), _sample(casual, n, seed), "Write a sentence.")


def sentiment(root: Path, n: int, seed: int) -> Records:
    rows = _jsonl(root, "sst/sst2_binary_dev.jsonl")
    good = [r["text"] for r in rows if r["label"] == 1]
    bad = [r["text"] for r in rows if r["label"] == 0]
    return _contrast(_sample(good, n, seed), _sample(bad, n, seed), "Write one sentence of a movie review.")


def truthfulness(root: Path, n: int, seed: int) -> Records:
    rows = [r for r in _csv(root, "truthfulqa/TruthfulQA.csv") if r["Incorrect Answers"].strip()]
    picked = _sample(rows, n, seed)
    wrong = [r["Incorrect Answers"].split(";")[0].strip() for r in picked]
    pairs = zip(picked, wrong, strict=True)
    return [{"prompt": r["Question"], "positive": r["Best Answer"], "negative": w} for r, w in pairs]


def legal_register(root: Path, n: int, seed: int) -> Records:
    """Opening sentences of professional-law questions against everyday sentences (SST) on the same prompt."""
    law = [r["question"].split(". ")[0].strip() + "." for r in _csv(root, "mmlu-law/test/professional_law_test.csv")]
    plain = [r["text"] for r in _jsonl(root, "sst/sst2_binary_dev.jsonl")]
    return _contrast(_sample(law, n, seed), _sample(plain, n, seed), "Write a sentence.")


def crows_bias(root: Path, n: int, seed: int) -> Records:
    rows = [r for r in _csv(root, "crows-pairs/crows_pairs_anonymized.csv") if r["stereo_antistereo"] == "stereo"]
    picked = _sample(rows, n, seed)
    return _contrast([r["sent_more"] for r in picked], [r["sent_less"] for r in picked], "Say something.")


def stereoset_bias(root: Path, n: int, seed: int) -> Records:
    rows = _sample(_jsonl(root, "stereoset-intrasentence/stereoset_intrasentence_dev.jsonl"), n, seed)
    return _contrast([r["stereotype"] for r in rows], [r["anti_stereotype"] for r in rows], "Complete the sentence.")


CAA_LICENSE = "MIT (CAA; items CC-BY-4.0 Anthropic evals)"
RECIPES: list[Recipe] = [
    Recipe("happy", "Happiness vs sadness (RepE scenarios)", ("emotion",), "MIT", "repe/emotions/happiness.json",
           emotion("happiness.json", "happy", "sad")),
    Recipe("sad", "Sadness vs happiness (RepE scenarios)", ("emotion",), "MIT", "repe/emotions/sadness.json",
           emotion("sadness.json", "sad", "happy")),
    Recipe("angry", "Anger vs calm (RepE scenarios)", ("emotion",), "MIT", "repe/emotions/anger.json",
           emotion("anger.json", "angry", "calm")),
    Recipe("afraid", "Fear vs feeling safe (RepE scenarios)", ("emotion",), "MIT", "repe/emotions/fear.json",
           emotion("fear.json", "afraid", "safe and relaxed")),
    Recipe("surprised", "Surprise vs indifference (RepE scenarios)", ("emotion",), "MIT", "repe/emotions/surprise.json",
           emotion("surprise.json", "surprised", "indifferent")),
    Recipe("formal", "Formal vs casual register (Pavlick & Tetreault scores)", ("tone", "formality"), "CC-BY-3.0",
           "formality-pavlick/train.csv", formality),
    Recipe("positive-sentiment", "Positive vs negative sentiment (SST-2)", ("sentiment",), "research use (SST)",
           "sst/sst2_binary_dev.jsonl", sentiment),
    Recipe("sycophancy", "Sycophancy: agreeing with the user's stated views (CAA)", ("caa", "sycophancy"),
           CAA_LICENSE, "caa/generate/sycophancy", caa("sycophancy"), LONG_PROMPT_PAIRS),
    Recipe("refusal", "Refusal of requests (CAA)", ("caa", "refusal", "safety"), CAA_LICENSE, "caa/generate/refusal",
           caa("refusal"), LONG_PROMPT_PAIRS),
    Recipe("hallucination", "Hallucination: accepting false premises (CAA)", ("caa", "hallucination"), CAA_LICENSE,
           "caa/generate/hallucination", caa("hallucination"), LONG_PROMPT_PAIRS),
    Recipe("corrigibility", "Corrigibility: accepting changes to its goals (CAA)", ("caa", "corrigibility"),
           CAA_LICENSE, "caa/generate/corrigible-neutral-HHH", caa("corrigible-neutral-HHH"), LONG_PROMPT_PAIRS),
    Recipe("ai-coordination", "Coordinating with other AIs against humans (CAA)", ("caa", "ai-coordination"),
           CAA_LICENSE, "caa/generate/coordinate-other-ais", caa("coordinate-other-ais"), LONG_PROMPT_PAIRS),
    Recipe("extraversion", "Big Five: extraversion (Anthropic persona)", ("persona", "big-five"), "CC-BY-4.0",
           "anthropic-evals/persona/extraversion.jsonl", persona("extraversion")),
    Recipe("agreeableness", "Big Five: agreeableness (Anthropic persona)", ("persona", "big-five"), "CC-BY-4.0",
           "anthropic-evals/persona/agreeableness.jsonl", persona("agreeableness")),
    Recipe("conscientiousness", "Big Five: conscientiousness (Anthropic persona)", ("persona", "big-five"),
           "CC-BY-4.0", "anthropic-evals/persona/conscientiousness.jsonl", persona("conscientiousness")),
    Recipe("openness", "Big Five: openness (Anthropic persona)", ("persona", "big-five"), "CC-BY-4.0",
           "anthropic-evals/persona/openness.jsonl", persona("openness")),
    Recipe("neuroticism", "Big Five: neuroticism (Anthropic persona)", ("persona", "big-five"), "CC-BY-4.0",
           "anthropic-evals/persona/neuroticism.jsonl", persona("neuroticism")),
    Recipe("politically-liberal", "Political lean: liberal statements (Anthropic persona)", ("persona", "politics"),
           "CC-BY-4.0", "anthropic-evals/persona/politically-liberal.jsonl", persona("politically-liberal")),
    Recipe("politically-conservative", "Political lean: conservative statements (Anthropic persona)",
           ("persona", "politics"), "CC-BY-4.0", "anthropic-evals/persona/politically-conservative.jsonl",
           persona("politically-conservative")),
    Recipe("truthful", "Truthful vs common false answers (TruthfulQA)", ("truthfulness",), "Apache-2.0",
           "truthfulqa/TruthfulQA.csv", truthfulness),
    Recipe("legal-register", "Legal register: professional-law prose vs everyday sentences (MMLU law, SST)",
           ("domain", "legal", "tone"), "MIT (MMLU); research use (SST)", "mmlu-law/test/professional_law_test.csv",
           legal_register),
    Recipe("stereotype-crows", "Social bias: more vs less stereotyped sentences (CrowS-Pairs)", ("bias",),
           "CC-BY-SA-4.0", "crows-pairs/crows_pairs_anonymized.csv", crows_bias),
    Recipe("stereotype-stereoset", "Social bias: stereotype vs anti-stereotype (StereoSet intrasentence)", ("bias",),
           "CC-BY-SA-4.0", "stereoset-intrasentence/stereoset_intrasentence_dev.jsonl", stereoset_bias),
]  # fmt: skip


def measured_effect(card: Any) -> dict[str, Any]:
    """Held-out diagnostics at the best layer and averaged over the recommended layers (what was measured)."""
    from steerlab.extraction import _held_out_indices

    diagnostics = card.diagnostics
    if not diagnostics:
        return {"source": "none: too few pairs to hold any out"}
    best = max(diagnostics, key=lambda k: (diagnostics[k]["accuracy"], diagnostics[k]["separation"]))
    rec = [layer for layer in card.recommended_layers if layer in diagnostics]
    keys = ("accuracy", "separation") if rec else ()
    mean = {key: sum(diagnostics[la][key] for la in rec) / len(rec) for key in keys}
    return {
        "source": "extraction diagnostics on held-out pairs",
        "held_out_pairs": len(_held_out_indices(card.n_pairs)),
        "best_layer": int(best),
        **{key: round(float(value), 4) for key, value in diagnostics[best].items()},
        "recommended_layers_mean": {key: round(float(value), 4) for key, value in mean.items()},
    }


def build_vector(model: Any, recipe: Recipe, n_pairs: int, root: Path, batch_size: int = 16, seed: int = 0) -> Any:
    from steerlab.extraction import extract
    from steerlab.pairs import PairSet

    pairs = PairSet.from_records(recipe.records(root, n_pairs, seed), source=recipe.source)
    vector = extract(model, pairs, batch_size=batch_size, progress=False, name=recipe.name)
    card = vector.card
    card.description, card.author, card.license = recipe.description, AUTHOR, recipe.license
    card.metadata = {**card.metadata, "tags": list(recipe.tags), "effect": measured_effect(card)}
    return vector


def publish_pack(
    store: Any,
    model: Any,
    recipes: Sequence[Recipe] = tuple(RECIPES),
    n_pairs: int | None = None,
    root: Path | None = None,
    key_path: Path | None = None,
    log: Callable[[str], None] = print,
) -> list[str]:
    """Build and publish every recipe not yet in `store` (n_pairs overrides each recipe's count); returns new refs."""
    from steerlab.hub.errors import NotFound
    from steerlab.hub.publish import default_key_path, sign_publication
    from steerlab.hub.store import Publication

    published = []
    for recipe in recipes:
        ref = f"{NAMESPACE}/{recipe.name}@{VERSION}"
        try:
            store.show(ref)
            log(f"{ref}: already published, skipped")
            continue
        except NotFound:
            pass
        vector = build_vector(model, recipe, n_pairs or recipe.pairs, root or datasets_root())
        data = vector.to_bytes()
        pub = Publication(ref, tags=list(recipe.tags), description=recipe.description)
        sign_publication(data, pub, key_path or default_key_path())
        info = store.publish(data, pub)
        effect = vector.card.metadata["effect"]
        log(f"{info.ref}: {vector.card.n_pairs} pairs, held-out accuracy {effect.get('accuracy')} at layer "
            f"{effect.get('best_layer')}, signed by {info.key_id}")  # fmt: skip
        published.append(info.ref)
    return published


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Build the starter pack of vectors and publish it to a store.")
    parser.add_argument("--store", default=None, help="store folder or URL (default: $STEERLAB_HOME/store)")
    parser.add_argument("--token", default=None, help="namespace token (for a server)")
    parser.add_argument("--pairs", type=int, default=None, help="pairs per vector (default: 32, 24 for CAA)")
    parser.add_argument("--only", default="", help="comma-separated recipe names (default: all)")
    parser.add_argument("--model", default="smollm2-135m")
    args = parser.parse_args(argv)
    from steerlab.hub import open_store
    from steerlab.models import load_model

    wanted = {n.strip() for n in args.only.split(",") if n.strip()}
    unknown = wanted - {r.name for r in RECIPES}
    if unknown:
        raise SystemExit(f"unknown recipes {sorted(unknown)}; known: {', '.join(r.name for r in RECIPES)}")
    recipes = [r for r in RECIPES if not wanted or r.name in wanted]
    store = open_store(args.store, token=args.token)
    published = publish_pack(store, load_model(args.model), recipes, args.pairs)
    print(f"starter pack: {len(published)} published now, {len(recipes) - len(published)} already there, in {store}")


if __name__ == "__main__":
    main()
