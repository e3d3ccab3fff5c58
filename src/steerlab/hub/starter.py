"""The starter pack: vectors for the default model, built from the shared datasets and shipped inside the package.

`make starter-pack` (python -m steerlab.hub.starter) builds every recipe (hub/starter_recipes.py) with a modest,
seeded sample of pairs, writes each one's measured effect (held-out extraction diagnostics, and a warning when that
accuracy cannot be told from chance) into its card, and writes `NAME.safetensors` into src/steerlab/data/starter/.
The card's date is the pack's, not the build's, so the same data gives the same bytes. Files already there are kept
(`--force` rebuilds them all). It then signs every file with the publisher key under $STEERLAB_HOME (made on first
use; only its public half goes into the manifest), rewrites the manifest, and installs the pack into the local store
(`--store` for another one). A fresh machine needs none of this: the committed pack verifies with the public key in
its manifest and the default local store installs it on first use (hub/starter_pack.py).
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from steerlab.errors import SteerlabError
from steerlab.hub.starter_recipes import DEFAULT_PAIRS, LONG_PROMPT_PAIRS, RECIPES, Recipe

__all__ = ["DEFAULT_PAIRS", "LONG_PROMPT_PAIRS", "NAMESPACE", "RECIPES", "VERSION", "Recipe", "build_pack"]

NAMESPACE = "starter"
VERSION = "1.0.0"
PACK_DATE = "2026-12-01T00:00:00+00:00"  # the card's created_at: fixed per pack version, so rebuilds are bit-exact
AUTHOR = "steerlab starter pack"
SEED = 0
CHANCE_NOTE = "held-out accuracy at chance: this direction may not capture the concept"


def datasets_root() -> Path:
    from steerlab.evaluate.data import datasets_root as find

    return find(needs=sorted({r.source.split("/")[0] for r in RECIPES}))


def at_chance(accuracy: float, held_out_pairs: int) -> bool:
    """Within two standard errors of 0.5 for that many held-out examples (two per pair): no evidence of signal."""
    if held_out_pairs <= 0:
        return True
    return accuracy < 0.5 + 2 * math.sqrt(0.25 / (2 * held_out_pairs))


def measured_effect(card: Any) -> dict[str, Any]:
    """Held-out diagnostics at the best layer and averaged over the recommended layers (what was measured)."""
    from steerlab.extraction import held_out_indices

    diagnostics = card.diagnostics
    if not diagnostics:
        return {"source": "none: too few pairs to hold any out", "at_chance": True}
    best = max(diagnostics, key=lambda k: (diagnostics[k]["accuracy"], diagnostics[k]["separation"]))
    rec = [layer for layer in card.recommended_layers if layer in diagnostics]
    keys = ("accuracy", "separation") if rec else ()
    mean = {key: sum(diagnostics[la][key] for la in rec) / len(rec) for key in keys}
    held = len(held_out_indices(card.n_pairs))
    # The best of ~30 layers is an optimistic pick: judge chance on the recommended window's mean instead.
    judged = mean.get("accuracy", diagnostics[best]["accuracy"])
    return {
        "source": "extraction diagnostics on held-out pairs",
        "held_out_pairs": held,
        "best_layer": int(best),
        **{key: round(float(value), 4) for key, value in diagnostics[best].items()},
        "recommended_layers_mean": {key: round(float(value), 4) for key, value in mean.items()},
        "at_chance": at_chance(judged, held),
    }


def build_vector(model: Any, recipe: Recipe, n_pairs: int, root: Path, batch_size: int = 16, seed: int = SEED) -> Any:
    from steerlab.extraction import extract
    from steerlab.pairs import PairSet

    pairs = PairSet.from_records(recipe.records(root, n_pairs, seed), source=recipe.source)
    vector = extract(model, pairs, batch_size=batch_size, progress=False, name=recipe.name)
    card = vector.card
    effect = measured_effect(card)
    card.author, card.license, card.created_at = AUTHOR, recipe.license, PACK_DATE
    card.description = recipe.description + (f" [{CHANCE_NOTE}]" if effect["at_chance"] else "")
    card.metadata = {
        **card.metadata,
        "tags": list(recipe.tags),
        "license": recipe.license,
        "pack": f"{NAMESPACE}@{VERSION}",
        "sampling_seed": seed,
        "calibrated": False,  # scale and layers are the extraction's recommendation; `steerlab calibrate` sets them
        "effect": effect,
        **({"warning": CHANCE_NOTE} if effect["at_chance"] else {}),
    }
    return vector


def build_pack(
    model: Any,
    out_dir: Path,
    recipes: Sequence[Recipe] = tuple(RECIPES),
    n_pairs: int | None = None,
    root: Path | None = None,
    force: bool = False,
    log: Callable[[str], None] = print,
) -> list[str]:
    """Write `NAME.safetensors` for every recipe (those already there only with `force`); returns the names built."""
    out_dir.mkdir(parents=True, exist_ok=True)
    built = []
    for recipe in recipes:
        target = out_dir / f"{recipe.name}.safetensors"
        if target.exists() and not force:
            continue
        started = time.perf_counter()
        vector = build_vector(model, recipe, n_pairs or recipe.pairs, root or datasets_root())
        vector.save(target)
        effect = vector.card.metadata["effect"]
        chance = " (at chance)" if effect["at_chance"] else ""
        log(f"{recipe.name}: {vector.card.n_pairs} pairs, held-out accuracy {effect.get('accuracy')} at layer "
            f"{effect.get('best_layer')}{chance}, {time.perf_counter() - started:.0f} s")  # fmt: skip
        built.append(recipe.name)
    return built


def sign_built_pack(out_dir: Path, recipes: Sequence[Recipe], key_path: Path) -> Any:
    """Sign every recipe's file in `out_dir` and write the manifest (the whole pack under one key)."""
    from steerlab.hub.starter_pack import sign_pack

    by_name = {r.name: r for r in recipes}
    missing = [name for name in by_name if not (out_dir / f"{name}.safetensors").exists()]
    if missing:
        raise SteerlabError(f"cannot sign the pack: {out_dir} lacks {', '.join(missing)}; build them first.")

    def describe(name: str) -> tuple[list[str], str]:
        from steerlab.hub.validate import check_upload

        data = (out_dir / f"{name}.safetensors").read_bytes()
        return list(by_name[name].tags), check_upload(data, "vector", max_bytes=len(data)).description

    return sign_pack(out_dir, list(by_name), NAMESPACE, VERSION, key_path, describe)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Build the starter pack, sign it and install it into a store.")
    parser.add_argument("--out", type=Path, default=None, help="pack folder (default: the package's data/starter)")
    parser.add_argument("--store", default=None, help="store folder or URL to install into (default: the local store)")
    parser.add_argument("--token", default=None, help="namespace token (for a server)")
    parser.add_argument("--key", type=Path, default=None, help="signing key (default: $STEERLAB_HOME/keys/...)")
    parser.add_argument("--pairs", type=int, default=None, help=f"pairs per vector (default: {DEFAULT_PAIRS}, fewer "
                        f"({LONG_PROMPT_PAIRS}) for long questions)")  # fmt: skip
    parser.add_argument("--only", default="", help="comma-separated recipe names to build (default: all)")
    parser.add_argument("--force", action="store_true", help="rebuild files that are already there")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: see below)")
    args = parser.parse_args(argv)
    import torch

    # One thread sums in one order, so a rebuild gives the same bytes whatever the core count; on a shared machine it
    # is also faster than threads that wait for each other at every barrier.
    torch.set_num_threads(args.threads)
    from steerlab.hub import open_store
    from steerlab.hub.publish import default_key_path
    from steerlab.hub.starter_pack import install_shipped_pack, shipped_dir
    from steerlab.models import load_model

    wanted = {n.strip() for n in args.only.split(",") if n.strip()}
    unknown = wanted - {r.name for r in RECIPES}
    if unknown:
        raise SystemExit(f"unknown recipes {sorted(unknown)}; known: {', '.join(r.name for r in RECIPES)}")
    out = args.out or shipped_dir()
    started = time.perf_counter()
    chosen = [r for r in RECIPES if not wanted or r.name in wanted]
    built = build_pack(load_model(args.model), out, chosen, args.pairs, force=args.force)
    print(f"built {len(built)} of {len(chosen)} vectors in {time.perf_counter() - started:.0f} s into {out}")
    present = [r for r in RECIPES if (out / f"{r.name}.safetensors").exists()]
    if len(present) < len(RECIPES):
        print(f"{out} holds {len(present)} of {len(RECIPES)} vectors: the manifest lists only those")
    manifest = sign_built_pack(out, present, args.key or default_key_path())
    print(f"signed {len(manifest.entries)} vectors with key {manifest.key_id}; manifest {out / 'manifest.json'}")
    install_shipped_pack(open_store(args.store, token=args.token), out, log=print)


if __name__ == "__main__":
    main()
