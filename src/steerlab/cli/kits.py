"""Kit commands: kit new/show, interfere, export (llama.cpp and others), import."""

from __future__ import annotations

import math
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from steerlab.address import HELP
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
    from steerlab.interference import InterferenceReport
    from steerlab.kit import EntrySource, Kit, KitEntry

console = Console()
kit_app = typer.Typer(help="Compose vectors into kits and inspect them.", no_args_is_help=True)


def _parse_named(specs: list[str], what: str) -> dict[str, Path]:
    """NAME=FILE options -> {NAME: FILE}."""
    out: dict[str, Path] = {}
    for spec in specs:
        name, sep, file = spec.partition("=")
        if not sep or not name or not file:
            raise SteerlabError(f"cannot read {what} {spec!r}: write NAME=FILE.")
        out[name] = Path(file)
    return out


def _layer_text(layers: list[int] | None) -> str:
    if not layers:
        return "all"
    if layers == list(range(layers[0], layers[-1] + 1)):
        return f"{layers[0]}-{layers[-1]}" if len(layers) > 1 else str(layers[0])
    return ",".join(map(str, layers))


# ----- kit new / show -----
def kit_new_cmd(
    name: Annotated[str, typer.Argument(help="the kit's name (also the default file name NAME.json)")],
    vector: Annotated[list[str], typer.Option(help=VECTOR_HELP)],
    out: Annotated[Path | None, typer.Option(help="kit file to write (.json or .toml; default NAME.json)")] = None,
    pairs: Annotated[
        list[str] | None, typer.Option(help="NAME=FILE held-out pairs for `interfere`, repeatable")
    ] = None,
    description: Annotated[str, typer.Option(help="what the kit is for")] = "",
    author: Annotated[str, typer.Option(help="who made it")] = "",
    positions: Annotated[str, typer.Option(help="all, prompt or generated (every entry)")] = "all",
    mode: Annotated[str, typer.Option(help="add, ablate or add_keep_norm (every entry)")] = "add",
    store: Annotated[str | None, typer.Option(help=STORE_HELP)] = None,
    when: Annotated[
        Path | None,
        typer.Option(help="a condition file (steerlab.Condition.save): the kit steers only the prompts it holds for"),
    ] = None,
) -> None:
    """Write a kit file that names each vector (and its condition) by relative path and sha256."""
    from steerlab import kitfile
    from steerlab.condition import Condition
    from steerlab.kit import Kit, KitCard, KitEntry

    condition = Condition.load(when) if when is not None else None
    found, sources = kit_from_addresses(vector, store_location(store))
    entries = [
        KitEntry(e.vector, e.scale, e.layers, positions, mode, e.when)  # type: ignore[arg-type]
        for e in found.entries
    ]
    files = [source.file for source in sources]  # store vectors have none: they are written beside the kit
    _check_same_model(entries)
    base = next((e.vector.card.base_model for e in entries if e.vector.card.base_model), "")
    kit = Kit(entries, KitCard(name=name, description=description, base_model=base, author=author), condition)
    target = out or Path(f"{name}.json")
    labels = kitfile.entry_names(kit)
    named_pairs = _parse_named(pairs or [], "--pairs")
    written = kitfile.save_kit(kit, target, vector_files=files, pairs=named_pairs, when_file=when)
    gated = f", steering only where {condition.name} holds" if condition is not None else ""
    console.print(f"[green]wrote[/green] {written}: {len(entries)} entries ({', '.join(labels)}){gated}")


def _check_same_model(entries: list) -> None:  # type: ignore[type-arg]
    sizes = {e.vector.hidden_size for e in entries}
    prints = {e.vector.card.model_fingerprint for e in entries if e.vector.card.model_fingerprint}
    if len(sizes) > 1 or len(prints) > 1:
        made = sorted({e.vector.card.base_model or "?" for e in entries})
        raise SteerlabError(f"a kit's vectors must be made for one model; these come from {made} (sizes {sizes}).")


def kit_show_cmd(
    kit: Annotated[str, typer.Argument(help="a kit file (or its name without .json), or NAMESPACE/NAME")],
    store: Annotated[str | None, typer.Option(help=STORE_HELP)] = None,
) -> None:
    """Show a kit's card and entries (vectors are verified against their recorded hashes)."""
    loaded, infos = kit_from_addresses([kit], store_location(store))
    card = loaded.card
    console.print(f"[bold]{card.name}[/bold]  base model: {card.base_model or '?'}  created {card.created_at}")
    if card.description or card.author:
        console.print(f"{card.description}{'  by ' + card.author if card.author else ''}")
    for condition in loaded.conditions:
        accuracy = f", test accuracy {condition.accuracy:.2f}" if condition.accuracy is not None else ""
        console.print(
            f"when [bold]{condition.name}[/bold]: block {condition.layer}, {condition.reading} of the prompt, "
            f"threshold {condition.threshold:.4g}{accuracy}"
        )
    table = Table("entry", "vector file", "sha256", "scale", "layers", "positions", "mode", "held-out pairs")
    for entry, info in zip(loaded.entries, infos, strict=True):
        table.add_row(
            info.name,
            info.file.name if info.file is not None else info.origin,
            info.sha256[:12],
            f"{entry.scale:g}",
            _layer_text(entry.layers),
            entry.positions,
            entry.mode,
            str(info.pairs.name) if info.pairs else "-",
        )
    console.print(table)


# ----- interfere -----
def interfere_cmd(
    kit: Annotated[str, typer.Argument(help="a kit file, or NAMESPACE/NAME of a kit in the store")],
    model: Annotated[str, typer.Option("--model", "-m", help="alias, local HF folder or .gguf file")] = DEFAULT_MODEL,
    pairs: Annotated[
        list[str] | None, typer.Option(help="NAME=FILE held-out pairs per axis (default: those the kit records)")
    ] = None,
    prompt: Annotated[list[str] | None, typer.Option(help="prompts to generate from (default: held-out)")] = None,
    prompts_per_axis: Annotated[int, typer.Option(help="held-out prompts taken from each axis")] = 2,
    max_pairs: Annotated[int, typer.Option(help="held-out pairs used per axis at most")] = 16,
    max_new_tokens: Annotated[int, typer.Option(help="tokens generated per prompt and configuration")] = 24,
    keep: Annotated[float, typer.Option(help="share of its solo effect each axis must keep")] = 0.8,
    fluency_tolerance: Annotated[float, typer.Option(help="allowed relative drop of mean log-prob")] = 0.1,
    json_out: Annotated[Path | None, typer.Option("--json", help="write the full report as JSON")] = None,
    png: Annotated[Path | None, typer.Option(help="write heatmaps (cosine, after Gram-Schmidt, cross-effect)")] = None,
    orthogonalize: Annotated[
        Path | None, typer.Option(help="write a Gram-Schmidt orthogonalised copy of the kit to this kit file")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="rows per generation batch")] = 16,
    task: Annotated[
        list[str] | None,
        typer.Option(
            help="NAME=KIND:FILE held-out bench task per axis (KIND: ab, pair-logprob, mcq, sentiment, formality); "
            "with it the cross-effects are also measured on each axis's task metric"
        ),
    ] = None,
    task_items: Annotated[int, typer.Option(help="items of each axis's task evaluated at most")] = 16,
    store: Annotated[str | None, typer.Option(help=STORE_HELP)] = None,
) -> None:
    """Measure how a kit's axes interfere: cosines, cross-effects, and the max number of axes that fit together."""
    from steerlab.evaluate.axis_tasks import parse_task_specs
    from steerlab.interference import measure_interference
    from steerlab.models import load_model
    from steerlab.pairs import PairSet

    check_addresses([kit])
    loaded = load_model(model)
    the_kit, infos = kit_from_addresses([kit], store_location(store), loaded)
    names = [info.name for info in infos]
    sources = {info.name: info.pairs for info in infos if info.pairs is not None}
    sources.update(_parse_named(pairs or [], "--pairs"))
    pair_sets = {name: PairSet.load(path) for name, path in sources.items()}
    tasks = parse_task_specs(task or [], task_items, max_new_tokens)
    report = measure_interference(
        loaded,
        the_kit,
        pair_sets,
        names=names,
        prompts=prompt or None,
        prompts_per_axis=prompts_per_axis,
        max_pairs=max_pairs,
        max_new_tokens=max_new_tokens,
        keep_fraction=keep,
        fluency_tolerance=fluency_tolerance,
        batch_size=batch_size,
        tasks=tasks or None,
    )
    print_report(report)
    if json_out:
        console.print(f"[green]wrote[/green] {report.save_json(json_out)}")
    if png:
        console.print(f"[green]wrote[/green] {report.save_png(png)}")
    if orthogonalize:
        _write_orthogonalized(the_kit, names, sources, orthogonalize)


def _write_orthogonalized(kit: Kit, names: list[str], sources: dict[str, Path], out: Path) -> None:
    from steerlab import kitfile
    from steerlab.interference import orthogonalize_kit

    ortho = orthogonalize_kit(kit)
    ortho.card.name = out.stem
    ortho.card.description = f"{kit.card.description} (Gram-Schmidt orthogonalised)".strip()
    for entry, name in zip(ortho.entries, names, strict=True):
        entry.vector.card.name = f"{out.stem}.{name}"
    written = kitfile.save_kit(ortho, out, pairs=sources, names=names)
    console.print(f"[green]wrote[/green] {written} (orthogonalised kit)")


def _fmt(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:+.2f}"


def print_report(report: InterferenceReport) -> None:
    names = report.names
    for title, matrix in (
        ("cosine (mean over shared layers)", report.cosine),
        ("cosine after Gram-Schmidt", report.cosine_orthogonalized),
        ("cross-effect: steering ROW alone moves COLUMN's measure (held-out gaps)", report.cross_effect),
    ):
        table = Table("", *names, title=title)
        for name, row in zip(names, matrix, strict=True):
            table.add_row(name, *(_fmt(v) for v in row))
        console.print(table)
    if report.task_effects is not None:
        _print_task_effects(report)
    axes = Table("axis", "scale", "read layer", "held-out acc", "gap", "solo effect", "solo fluency", title="axes")
    for i, name in enumerate(names):
        held = report.held_out.get(name)
        residual = (
            (str(held.read_layer), f"{held.accuracy:.2f}" + (" (training pairs)" if held.overlaps_training else ""),
             f"{held.gap:.2f}")
            if held is not None
            else ("-", "- (router offsets)", "-")
        )  # fmt: skip
        axes.add_row(
            name + _axis_state(report, name),
            f"{report.scales[i]:g}",
            *residual,
            _fmt(report.cross_effect[i][i]),
            _fmt(report.fluency_solo[name]),
        )
    console.print(axes)
    for note in report.notes:
        console.print(f"[yellow]note:[/yellow] {note}")
    floor = report.settings["fluency_floor"]
    console.print(f"fluency (mean log-prob) unsteered {report.fluency_unsteered:.3f}, floor {floor:.3f}")
    console.print(
        f"[bold]max axes: {report.max_axes}[/bold] ({', '.join(report.max_axes_set) or 'none'}; "
        f"{report.search} search over {len(report.combos)} combinations)"
    )


def _axis_state(report: InterferenceReport, name: str) -> str:
    if name in report.effective:
        return ""
    unjudged = name in report.router_axes and report.task_effects is None  # no projection measure of its own
    return " (not judged: no task)" if unjudged else " (inert)"


def _print_task_effects(report: InterferenceReport) -> None:
    effects = report.task_effects
    assert effects is not None
    columns = [f"{n}\n{m} (n={k})" for n, m, k in zip(effects.names, effects.metrics, effects.n_items, strict=True)]
    table = Table("", *columns, title="cross-effect on task metrics: steering ROW alone moves COLUMN's metric")
    table.add_row("unsteered", *(f"{v:.3f}" for v in effects.unsteered))
    for name, row, cis in zip(effects.names, effects.effect, effects.ci, strict=True):
        table.add_row(name, *(f"{_fmt(v)} [{_fmt(lo)}, {_fmt(hi)}]" for v, (lo, hi) in zip(row, cis, strict=True)))
    console.print(table)


# ----- export / import -----
def export_cmd(
    source: Annotated[str, typer.Argument(help="a vector or a kit: " + HELP)],
    out: Annotated[Path, typer.Option(help="the .gguf for one vector; a folder for a kit")],
    fmt: Annotated[str, typer.Option("--format", help="llama.cpp, repeng, steering-vectors, pt or npy")] = "llama.cpp",
    scale: Annotated[float | None, typer.Option(help="one vector: its scale (default: the card's)")] = None,
    layers: Annotated[str | None, typer.Option(help="one vector: blocks to export (default: recommended)")] = None,
    model_hint: Annotated[str | None, typer.Option(help="architecture name for the GGUF, e.g. llama")] = None,
    store: Annotated[str | None, typer.Option(help=STORE_HELP)] = None,
) -> None:
    """Write a vector or kit for another tool; for llama.cpp also print the flags that reproduce it."""
    from steerlab.address import parse_address
    from steerlab.formats import FORMATS, export_vector
    from steerlab.formats.llamacpp import export_entries

    if fmt not in FORMATS:
        raise SteerlabError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}.")
    gguf = fmt in ("llama.cpp", "repeng")
    parsed = parse_address(source)
    kit, sources = kit_from_addresses([source], store_location(store))
    if parsed.kind == "kit-file" or len(kit.entries) > 1:
        if not gguf:
            raise SteerlabError(f"a kit exports to llama.cpp/repeng GGUF files, not to {fmt}; export its vectors.")
        if scale is not None or layers is not None:
            raise SteerlabError("--scale and --layers are for one vector; a kit's entries carry their own.")
        result = export_entries(_named(kit.entries, sources), out, model_hint=model_hint)
    else:
        entry = kit.entries[0]
        if not gguf:
            # These formats hold raw directions: every layer unless --layers (or @LAYERS) says otherwise, no scale.
            chosen = parse_layers(layers) or parsed.layers
            picked = entry.vector.select(chosen) if chosen else entry.vector
            console.print(f"[green]wrote[/green] {export_vector(picked, out, fmt)}")
            return
        if out.suffix != ".gguf":
            raise SteerlabError(f"one vector exports to a .gguf file; {out} is not one (a folder is for kits).")
        entry = _override(entry, scale, parse_layers(layers))
        result = export_entries([(out.stem, entry)], out.parent, model_hint=model_hint)
    for file, _ in result.files:
        console.print(f"[green]wrote[/green] {file}")
    typer.echo(shlex.join(result.flags()))  # quoted: a path with spaces pastes as one argument


def _named(entries: list[KitEntry], sources: list[EntrySource]) -> list[tuple[str, KitEntry]]:
    return [(source.name, entry) for source, entry in zip(sources, entries, strict=True)]


def _override(entry: KitEntry, scale: float | None, layers: list[int] | None) -> KitEntry:
    """--scale / --layers replace what the address (or the card) gave."""
    from steerlab.kit import KitEntry

    chosen_scale = entry.scale if scale is None else scale
    return KitEntry(entry.vector, chosen_scale, layers or entry.layers, entry.positions, entry.mode)


def import_cmd(
    source: Annotated[Path, typer.Argument(help="a file written by another tool")],
    out: Annotated[Path, typer.Option(help="the steerlab vector to write (.safetensors)")],
    fmt: Annotated[
        str | None, typer.Option("--format", help="llama.cpp, repeng, steering-vectors, pt or npy (default: guess)")
    ] = None,
    convention: Annotated[str, typer.Option(help="pt/npy rows: block (N = block N) or hidden_states")] = "block",
    layer: Annotated[int | None, typer.Option(help="pt/npy holding one 1-D direction: its block")] = None,
    n_layers: Annotated[int | None, typer.Option(help="the model's layer count (negative layer indices)")] = None,
    name: Annotated[str, typer.Option(help="a name for the vector's card")] = "",
    base_model: Annotated[str, typer.Option(help="record the model it was made for")] = "",
) -> None:
    """Import a vector from llama.cpp/repeng GGUF, steering-vectors state, or plain .pt/.npy arrays."""
    from steerlab.formats import import_vector

    vector = import_vector(source, fmt, convention=convention, layer=layer, n_layers=n_layers, name=name)  # type: ignore[arg-type]
    if base_model:
        vector.card.base_model = base_model
    if out.suffix != ".safetensors":
        raise SteerlabError(f"a steerlab vector is a .safetensors file; {out} has another extension.")
    vector.save(out)
    console.print(
        f"[green]wrote[/green] {out}: {len(vector.layers)} layers ({_layer_text(vector.layers)}), "
        f"hidden size {vector.hidden_size}"
    )


def register(app: typer.Typer) -> None:
    kit_app.command("new")(kit_new_cmd)
    kit_app.command("show")(kit_show_cmd)
    app.add_typer(kit_app, name="kit")
    app.command("interfere")(interfere_cmd)
    app.command("export")(export_cmd)
    app.command("import")(import_cmd)
