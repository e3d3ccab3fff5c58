"""Core commands: extract, generate, inspect."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from steerlab.cli.common import VECTOR_HELP, load_vector_spec, parse_layers
from steerlab.defaults import DEFAULT_MODEL
from steerlab.errors import SteerlabError

if TYPE_CHECKING:
    from steerlab.kit import Kit

console = Console()
ModelOpt = Annotated[str, typer.Option("--model", "-m", help="alias, local HF folder or .gguf file")]


def extract_cmd(
    pairs: Annotated[Path, typer.Argument(help="pair file: .jsonl, .json or .csv")],
    out: Annotated[Path, typer.Option("--out", "-o", help="where to write the vector (.safetensors)")],
    model: ModelOpt = DEFAULT_MODEL,
    layers: Annotated[str | None, typer.Option(help="blocks to extract, e.g. 8-20 (default: all)")] = None,
    method: Annotated[str, typer.Option(help="mean_diff, pca_diff or probe")] = "mean_diff",
    position: Annotated[str | None, typer.Option(help="last, mean or answer (default: by pair format)")] = None,
    batch_size: Annotated[int, typer.Option(help="sequences per forward pass")] = 16,
    name: Annotated[str, typer.Option(help="a name for the vector's card")] = "",
) -> None:
    """Extract a steering vector from contrastive pairs."""
    from steerlab.extraction import extract
    from steerlab.models import load_model
    from steerlab.pairs import PairSet

    pair_set = PairSet.load(pairs)
    loaded = load_model(model)
    vector = extract(
        loaded,
        pair_set,
        layers=parse_layers(layers),
        method=method,
        position=position,  # type: ignore[arg-type]
        batch_size=batch_size,
        name=name or pairs.stem,
    )
    vector.save(out)
    rec = vector.card.recommended_layers
    console.print(
        f"[green]wrote[/green] {out}: {len(vector.layers)} layers from {len(pair_set)} pairs "
        f"({method}); recommended layers {rec[0]}-{rec[-1]}"
    )


def _kit_from_specs(specs: list[str]) -> Kit:
    from steerlab.kit import Kit, KitEntry

    entries = []
    for spec in specs:
        vector, scale, layers = load_vector_spec(spec)
        entries.append(KitEntry(vector, scale, layers))
    return Kit(entries)


def generate_cmd(
    prompt: Annotated[str, typer.Argument(help="the user message")],
    model: ModelOpt = DEFAULT_MODEL,
    vector: Annotated[list[str] | None, typer.Option(help=VECTOR_HELP)] = None,
    kit: Annotated[Path | None, typer.Option(help="a kit file (steerlab kit new)")] = None,
    compare: Annotated[bool, typer.Option(help="show the unsteered answer beside the steered one")] = False,
    max_new_tokens: Annotated[int, typer.Option(help="tokens to generate")] = 64,
) -> None:
    """Generate text, steered by one or more vectors (and show the unsteered answer with --compare)."""
    from steerlab.generation import generate
    from steerlab.models import load_model

    steering = _steering_from_options(vector or [], kit)
    loaded = load_model(model)
    if compare:
        plain, steered = generate(loaded, [prompt, prompt], steering=[None, steering], max_new_tokens=max_new_tokens)
        table = Table(show_lines=True)
        table.add_column("unsteered")
        table.add_column("steered")
        table.add_row(plain, steered)
        console.print(table)
        return
    console.print(generate(loaded, prompt, steering=steering, max_new_tokens=max_new_tokens)[0])


def _steering_from_options(specs: list[str], kit: Path | None) -> Kit | None:
    if kit is not None:
        from steerlab import kitfile
        from steerlab.kit import Kit

        loaded_kit = kitfile.load_kit(kit)
        return Kit(loaded_kit.entries + _kit_from_specs(specs).entries, loaded_kit.card) if specs else loaded_kit
    if not specs:
        raise SteerlabError("nothing to steer with: pass --vector V.safetensors:SCALE (repeatable) or --kit K.")
    return _kit_from_specs(specs)


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
