"""The starter pack's recipes read their datasets (the test slices); two are built on the default model, twice."""

from __future__ import annotations

from pathlib import Path

import pytest

from steerlab.hub.starter import CHANCE_NOTE, RECIPES, at_chance, build_pack, sign_built_pack
from steerlab.hub.starter_pack import install_shipped_pack, read_manifest
from steerlab.hub.store import LocalStore
from steerlab.pairs import PairSet

# The seed's range, "from medical diagnosis to creative writing", and the axes the first 23 vectors covered.
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
    "medical",
    "creative-writing",
    "poetry",
    "code",
    "finance",
    "science",
    "concept",
    "ai-risk",
    "self-awareness",
}
FIRST_23 = {
    "happy", "sad", "angry", "afraid", "surprised", "formal", "positive-sentiment", "sycophancy", "refusal",
    "hallucination", "corrigibility", "ai-coordination", "extraversion", "agreeableness", "conscientiousness",
    "openness", "neuroticism", "politically-liberal", "politically-conservative", "truthful", "legal-register",
    "stereotype-crows", "stereotype-stereoset",
}  # fmt: skip


def test_recipes_cover_the_range_with_distinct_names() -> None:
    names = [r.name for r in RECIPES]
    assert len(names) >= 50 and len(set(names)) == len(names)
    assert set(names) >= FIRST_23
    assert {tag for r in RECIPES for tag in r.tags} >= REQUIRED_TOPICS
    assert sum("medical" in r.tags for r in RECIPES) >= 3 and sum("creative-writing" in r.tags for r in RECIPES) >= 3
    assert all(r.license and r.source and r.description for r in RECIPES)


def test_every_recipe_reads_its_dataset(datasets: Path) -> None:
    for recipe in RECIPES:
        records = recipe.records(datasets, 6, 0)
        pairs = PairSet.from_records(records, source=recipe.source)
        assert len(pairs) == 6, recipe.name
        assert all(p.positive != p.negative for p in pairs.pairs), recipe.name
        assert records == recipe.records(datasets, 6, 0), f"{recipe.name}: sampling must be seeded"
        assert records != recipe.records(datasets, 6, 1) or len(records) < 6, f"{recipe.name}: the seed is used"
        if "answer_matching_behavior" in records[0]:  # A/B and Yes/No: each answer equally often
            answers = [r["answer_matching_behavior"].strip() for r in records]
            assert len(set(answers)) == 2 and answers.count(answers[0]) == 3, recipe.name


def test_chance_is_judged_against_the_held_out_count() -> None:
    # Six held-out pairs (12 examples): two standard errors above 0.5 is 0.789.
    assert at_chance(0.5, 6) and at_chance(0.75, 6) and not at_chance(0.84, 6)
    assert not at_chance(0.7, 64) and at_chance(1.0, 0)


def entry_source(name: str) -> str:
    return next(r.source for r in RECIPES if r.name == name)


@pytest.mark.slow
def test_two_vectors_are_built_deterministically_signed_and_installed(  # type: ignore[no-untyped-def]
    default_model, datasets: Path, tmp_path: Path
) -> None:
    chosen = [r for r in RECIPES if r.name in ("happy", "true-facts")]
    pack, again = tmp_path / "pack", tmp_path / "again"
    lines: list[str] = []

    def build(out: Path) -> list[str]:
        return build_pack(default_model, out, chosen, n_pairs=16, root=datasets, log=lines.append)

    assert build(pack) == ["happy", "true-facts"] and build(pack) == []  # files already there are kept
    build(again)
    for recipe in chosen:  # same data, same seed: the same bytes
        assert (pack / f"{recipe.name}.safetensors").read_bytes() == (again / f"{recipe.name}.safetensors").read_bytes()
    key = tmp_path / "keys" / "k.pem"
    manifest = sign_built_pack(pack, chosen, key)
    assert sign_built_pack(again, chosen, key).to_json() == manifest.to_json()  # ed25519 signatures are deterministic
    store = LocalStore(tmp_path / "store")
    assert install_shipped_pack(store, pack).installed == ["starter/happy@1.0.0", "starter/true-facts@1.0.0"]
    for entry in read_manifest(pack).entries:
        info = store.show(entry.ref)
        assert info.base_model == default_model.name and info.fingerprint == default_model.fingerprint
        assert info.signed and info.key_id == manifest.key_id and info.metrics["held_out_pairs"] == 3
        vector = store.get_vector(entry.ref, require_signed=True, trusted_keys=[manifest.key_id])
        vector.check_compatible(default_model)
        card = vector.card
        assert card.n_pairs == 16 and card.license and card.metadata["source"] == entry_source(entry.name)
        assert card.metadata["effect"] == info.metrics
        assert (CHANCE_NOTE in card.description) == info.metrics["at_chance"] == ("warning" in card.metadata)
    assert [i.ref for i in store.search(tag="emotion")] == ["starter/happy@1.0.0"]
    assert install_shipped_pack(store, pack).present == [e.ref for e in manifest.entries] and store.verify().ok
