"""Core commands: extract, generate, inspect."""

from __future__ import annotations

import random
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from steerlab.cli.common import (
    STORE_HELP,
    VECTOR_HELP,
    check_addresses,
    kit_from_addresses,
    parse_layers,
    store_location,
)
from steerlab.defaults import DEFAULT_MODEL
from steerlab.errors import SteerlabError

if TYPE_CHECKING:
    from steerlab.pairs import PairSet

console = Console()
ModelOpt = Annotated[str, typer.Option("--model", "-m", help="alias, local HF folder or .gguf file")]


def extract_cmd(
    pairs: Annotated[Path, typer.Argument(help="pair file: .jsonl, .json or .csv")],
    out: Annotated[Path, typer.Option("--out", "-o", help="where to write the vector (.safetensors)")],
    model: ModelOpt = DEFAULT_MODEL,
    layers: Annotated[str | None, typer.Option(help="blocks to extract, e.g. 8-20 (default: all)")] = None,
    method: Annotated[
        str, typer.Option(help="mean_diff, pca_diff, probe, or preference (BiPO-trained, minutes on CPU)")
    ] = "mean_diff",
    position: Annotated[str | None, typer.Option(help="last, mean or answer (default: by pair format)")] = None,
    batch_size: Annotated[int, typer.Option(help="sequences per forward pass")] = 16,
    name: Annotated[str, typer.Option(help="a name for the vector's card")] = "",
    max_pairs: Annotated[int | None, typer.Option(help="extract from a seeded sample of at most N pairs")] = None,
    seed: Annotated[int, typer.Option(help="the seed of the --max-pairs sample and of --method preference")] = 0,
) -> None:
    """Extract a steering vector from contrastive pairs."""
    from steerlab.extraction import extract
    from steerlab.models import load_model
    from steerlab.pairs import PairSet

    pair_set = PairSet.load(pairs)
    total = len(pair_set)
    if max_pairs is not None:
        pair_set = sample_pairs(pair_set, max_pairs, seed)
    loaded = load_model(model)
    vector = extract(
        loaded,
        pair_set,
        layers=parse_layers(layers),
        method=method,
        position=position,  # type: ignore[arg-type]
        batch_size=batch_size,
        name=name or pairs.stem,
        seed=seed,
    )
    if len(pair_set) < total:
        vector.card.metadata["sample"] = {"pairs": len(pair_set), "of": total, "seed": seed}
    vector.save(out)
    rec = vector.card.recommended_layers
    console.print(
        f"[green]wrote[/green] {out}: {len(vector.layers)} layers from {len(pair_set)} of {total} pairs "
        f"({method}); recommended layers {rec[0]}-{rec[-1]}"
    )


def sample_pairs(pair_set: PairSet, max_pairs: int, seed: int) -> PairSet:
    """At most `max_pairs` pairs drawn with `seed`, kept in file order (the same seed gives the same sample)."""
    if max_pairs < 1:
        raise SteerlabError(f"--max-pairs {max_pairs}: give a positive number of pairs.")
    if max_pairs >= len(pair_set):
        return pair_set
    return pair_set.subset(sorted(random.Random(seed).sample(range(len(pair_set)), max_pairs)))


def generate_cmd(
    prompt: Annotated[str, typer.Argument(help="the user message")],
    model: ModelOpt = DEFAULT_MODEL,
    vector: Annotated[list[str] | None, typer.Option(help=VECTOR_HELP)] = None,
    kit: Annotated[str | None, typer.Option(help="a kit: KIT.json/.toml (or its name) or NAMESPACE/NAME")] = None,
    store: Annotated[str | None, typer.Option(help=STORE_HELP)] = None,
    compare: Annotated[bool, typer.Option(help="show the unsteered answer beside the steered one")] = False,
    max_new_tokens: Annotated[int, typer.Option(help="tokens to generate")] = 64,
) -> None:
    """Generate text, steered by one or more vectors (and show the unsteered answer with --compare)."""
    from steerlab.generation import generate
    from steerlab.models import load_model

    addresses = ([kit] if kit else []) + list(vector or [])
    if not addresses:
        raise SteerlabError("nothing to steer with: pass --vector V.safetensors:SCALE (repeatable) or --kit K.")
    check_addresses(addresses)  # a typo fails now, not after the model has loaded
    loaded = load_model(model)
    steering, _ = kit_from_addresses(addresses, store_location(store), loaded)
    if compare:
        plain, steered = generate(loaded, [prompt, prompt], steering=[None, steering], max_new_tokens=max_new_tokens)
        table = Table(show_lines=True)
        table.add_column("unsteered")
        table.add_column("steered")
        table.add_row(plain, steered)
        console.print(table)
        return
    console.print(generate(loaded, prompt, steering=steering, max_new_tokens=max_new_tokens)[0])


def inspect_cmd(path: Annotated[Path, typer.Argument(help="a vector file (.safetensors)")]) -> None:
    """Show a vector's card, per-layer norms and extraction diagnostics."""
    from steerlab.vector import Vector

    vec = Vector.load(path)
    card = vec.card
    console.print(
        f"[bold]{card.name or path.stem}[/bold]  base model: {card.base_model or '?'} "
        f"({card.model_fingerprint or 'no fingerprint'}), hidden size {vec.hidden_size}"
    )
    console.print(
        f"method {card.method or '?'} at {card.position or '?'}, {card.n_pairs} pairs "
        f"(dataset {card.dataset_hash or '?'}), created {card.created_at}"
    )
    rec = card.recommended_layers
    console.print(
        f"recommended: layers {rec[0] if rec else '?'}-{rec[-1] if rec else '?'}, scale {card.recommended_scale}"
    )
    table = Table("layer", "norm", "held-out acc", "paired acc", "separation", "rec")
    norms = vec.norms()
    for layer in vec.layers:
        diag = card.diagnostics.get(layer, {})
        table.add_row(
            str(layer),
            f"{norms[layer]:.3f}",
            _fmt(diag.get("accuracy")),
            _fmt(diag.get("paired_accuracy")),
            _fmt(diag.get("separation")),
            "*" if layer in rec else "",
        )
    console.print(table)
    if card.metadata:
        console.print(f"metadata: {card.metadata}")


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def register(app: typer.Typer) -> None:
    app.command("extract")(extract_cmd)
    app.command("generate")(generate_cmd)
    app.command("inspect")(inspect_cmd)
