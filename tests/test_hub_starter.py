"""The starter pack: every recipe reads its dataset; two are built on the default model and published for real."""

from __future__ import annotations

from pathlib import Path

import pytest

from steerlab.hub.starter import RECIPES, publish_pack
from steerlab.hub.store import LocalStore
from steerlab.pairs import PairSet

REQUIRED_TOPICS = {
    "emotion",
    "formality",
    "sentiment",
    "sycophancy",
    "refusal",
    "hallucination",
    "corrigibility",
    "ai-coordination",
    "persona",
    "politics",
    "truthfulness",
    "legal",
    "bias",
}


def test_every_recipe_reads_its_dataset(datasets: Path) -> None:
    assert len(RECIPES) >= 20 and len({r.name for r in RECIPES}) == len(RECIPES)
    assert {tag for r in RECIPES for tag in r.tags} >= REQUIRED_TOPICS
    for recipe in RECIPES:
        records = recipe.records(datasets, 6, 0)
        pairs = PairSet.from_records(records, source=recipe.source)
        assert len(pairs) == 6, recipe.name
        assert all(p.positive != p.negative for p in pairs.pairs), recipe.name
        assert records == recipe.records(datasets, 6, 0), f"{recipe.name}: sampling must be seeded"
        if "answer_matching_behavior" in records[0]:  # A/B and Yes/No: each answer equally often
            answers = [r["answer_matching_behavior"].strip() for r in records]
            assert len(set(answers)) == 2 and answers.count(answers[0]) == 3, recipe.name


@pytest.mark.slow
def test_two_starter_vectors_are_built_and_published(default_model, datasets: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    store = LocalStore(tmp_path / "store")
    chosen = [r for r in RECIPES if r.name in ("happy", "truthful")]
    lines: list[str] = []
    refs = publish_pack(
        store, default_model, chosen, n_pairs=16, root=datasets, key_path=tmp_path / "k.pem", log=lines.append
    )
    assert refs == ["starter/happy@1.0.0", "starter/truthful@1.0.0"]
    for ref in refs:
        info = store.show(ref)
        assert (
            info.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct" and info.fingerprint == default_model.fingerprint
        )
        assert info.signed and info.metrics["source"] == "extraction diagnostics on held-out pairs"
        assert info.metrics["held_out_pairs"] == 3 and 0.0 <= info.metrics["accuracy"] <= 1.0
        vector = store.get_vector(ref, require_signed=True)
        vector.check_compatible(default_model)
        assert vector.card.n_pairs == 16 and vector.card.metadata["effect"] == info.metrics
    assert [i.ref for i in store.search(fits=default_model)] == refs
    assert [i.ref for i in store.search(tag="emotion")] == ["starter/happy@1.0.0"]
    # A rerun builds nothing: what is published stays as it is.
    assert publish_pack(store, default_model, chosen, n_pairs=16, root=datasets, log=lines.append) == []
    assert store.verify().ok
