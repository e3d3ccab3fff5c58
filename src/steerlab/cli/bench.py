"""Bench commands: `steerlab bench` (steering vs prompting vs LoRA on held-out data) and `steerlab calibrate`."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from steerlab.cli.common import STORE_HELP, kit_from_addresses, parse_layers, store_location
from steerlab.defaults import DEFAULT_MODEL
from steerlab.errors import SteerlabError
from steerlab.kitschema import Positions, check_positions

console = Console()
ModelOpt = Annotated[str, typer.Option("--model", "-m", help="alias, local HF folder or .gguf file")]


METHODS_HELP = (
    "steering methods, comma-separated, e.g. mean_diff,preference: the first is the `steering` condition, each other "
    "method M adds `steering:M` with its own calibration; steering+prompting uses the best in-budget one"
)
CONDITIONS_HELP = (
    "conditions to run, comma-separated (default: all): unsteered, steering, prompting, fewshot, lora, finetune, "
    "steering+prompting"
)
RESUME_HELP = (
    "keep the axes a stopped run with the same options already finished in --out, and run only the missing ones "
    "(each finished axis is written at once)"
)
POSITIONS_HELP = (
    "the tokens steering acts on: generated (the answer's, as CAA and the trained methods do), prompt or all; the "
    "card records them with the calibrated scale"
)
DOSES_HELP = "calibration grid as relative doses |s|*sum(|v_l|/h_l) over the window, e.g. 0.1,0.25,0.5,0.7"


def _scales(text: str | None, what: str = "scales") -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        values = tuple(abs(float(x)) for x in text.split(",") if x.strip())
    except ValueError as exc:
        raise SteerlabError(f"cannot read {what} {text!r}: write magnitudes like 0.25,0.5,1,2.") from exc
    if not values or 0.0 in values:
        raise SteerlabError(f"{what} {text!r}: give one or more non-zero magnitudes like 0.25,0.5,1,2.")
    return values


def _grid(scales: str | None, doses: str | None) -> tuple[tuple[float, ...] | None, tuple[float, ...] | None]:
    """(scales, doses) from the options: one or neither, never both."""
    if scales is not None and doses is not None:
        raise SteerlabError("give either --scales (raw magnitudes) or --doses (relative doses), not both.")
    return _scales(scales), _scales(doses, "doses")


def bench_cmd(
    out: Annotated[Path, typer.Option("--out", "-o", help="results folder")],
    suite: Annotated[
        str | None, typer.Option(help="a named suite: seed (the seed's axes) or caa (held-out CAA behaviours)")
    ] = None,
    quick: Annotated[bool, typer.Option(help="the quick subset of the suite (minutes)")] = False,
    axes: Annotated[
        str | None, typer.Option(help="suite axes, comma-separated (default: all, or the quick ones)")
    ] = None,
    task: Annotated[str | None, typer.Option(help="ad-hoc task: ab, pair-logprob, mcq, classify, fluency")] = None,
    pairs: Annotated[Path | None, typer.Option(help="ad-hoc training/extraction data")] = None,
    eval_path: Annotated[Path | None, typer.Option("--eval", help="ad-hoc held-out evaluation data")] = None,
    model: ModelOpt = DEFAULT_MODEL,
    max_pairs: Annotated[int | None, typer.Option(help="use at most N training pairs")] = None,
    goal: Annotated[int, typer.Option(help="+1: more of the behaviour, -1: less")] = 1,
    instruction: Annotated[str | None, typer.Option(help="system instruction for the prompting conditions")] = None,
    scorer: Annotated[str, typer.Option(help="classify: sentiment or formality")] = "sentiment",
    val_size: Annotated[int, typer.Option(help="ad-hoc validation items for calibration")] = 8,
    scales: Annotated[str | None, typer.Option(help="calibration scale magnitudes, e.g. 0.25,0.5,1,2")] = None,
    doses: Annotated[str | None, typer.Option(help=DOSES_HELP)] = None,
    budget: Annotated[float, typer.Option(help="allowed fluency loss (fraction of unsteered log-prob)")] = 0.1,
    repetition_budget: Annotated[
        float, typer.Option(help="allowed rise of the repeated-3-gram share over unsteered generations")
    ] = 0.1,
    gen_tokens: Annotated[int | None, typer.Option(help="tokens generated per prompt (fluency, classify)")] = None,
    n_fluency: Annotated[int | None, typer.Option(help="prompts whose generations measure fluency")] = None,
    interference: Annotated[
        bool, typer.Option(help="suite: then measure how the calibrated axes interfere as one kit")
    ] = True,
    interference_only: Annotated[
        bool, typer.Option(help="suite: only add the interference section to the finished run in --out")
    ] = False,
    methods: Annotated[str, typer.Option(help=METHODS_HELP)] = "mean_diff",
    conditions: Annotated[str | None, typer.Option(help=CONDITIONS_HELP)] = None,
    train_epochs: Annotated[
        int | None, typer.Option(help="most epochs for LoRA and full fine-tuning (they stop early on validation)")
    ] = None,
    resume: Annotated[bool, typer.Option(help=RESUME_HELP)] = False,
    positions: Annotated[str, typer.Option(help=POSITIONS_HELP)] = "generated",
) -> None:
    """Compare unsteered, steering, prompting, few-shot, LoRA and steering+prompting on held-out items."""
    import torch

    from steerlab.evaluate import suite as seed
    from steerlab.evaluate.adhoc import adhoc_spec
    from steerlab.evaluate.data import datasets_root
    from steerlab.evaluate.runner import check_conditions, check_methods
    from steerlab.evaluate.suite_run import run_axes, run_settings
    from steerlab.models import load_model

    opts = seed.options(quick)
    opts.log = console.print
    raw, relative = _grid(scales, doses)
    if raw is not None:  # old scripts: raw scales for both the calibration grid and the sweep
        opts.scales = opts.sweep = raw
        opts.doses = opts.sweep_doses = None
    if relative is not None:
        opts.doses = opts.sweep_doses = relative
    opts.budget, opts.repetition_budget = budget, repetition_budget
    opts.gen_tokens = gen_tokens or opts.gen_tokens
    opts.n_fluency = n_fluency or opts.n_fluency
    opts.methods = tuple(m.strip() for m in methods.split(",") if m.strip())
    opts.positions = checked_positions(positions)
    check_methods(opts.methods)  # before the model loads: a typo should not cost a minute
    if conditions is not None:
        opts.conditions = check_conditions(conditions)
    if train_epochs is not None:
        if train_epochs < 1:
            raise SteerlabError(f"--train-epochs {train_epochs}: give at least 1.")
        opts.lora = replace(opts.lora, epochs=train_epochs)
        opts.finetune = replace(opts.finetune, epochs=train_epochs) if opts.finetune else None
    if suite is not None:
        chosen = tuple(a.strip() for a in axes.split(",")) if axes else None
        specs = seed.suite_specs(suite, datasets_root(), quick, chosen)
    elif task is not None:
        if pairs is None or eval_path is None:
            raise SteerlabError("an ad-hoc run needs --pairs TRAIN and --eval TEST (and --task).")
        specs = [adhoc_spec(task, pairs, eval_path, max_pairs, val_size, goal, instruction, scorer, opts.gen_tokens)]
    else:
        raise SteerlabError("say what to run: --suite seed [--quick], or --task KIND --pairs TRAIN --eval TEST.")
    torch.manual_seed(0)
    loaded = load_model(model)
    if suite is not None and interference_only:
        from steerlab.evaluate.suite_kit import saved_vectors

        _add_interference(loaded, specs, saved_vectors(out), out, quick, opts.gen_tokens)
        return
    name = suite or f"ad-hoc {task}"
    meta: dict[str, Any] = {"suite": name, "quick": quick, "model": loaded.name, "seed": 0}
    settings = run_settings(opts, model=loaded.name, suite=name, quick=quick)
    meta.update(threads=torch.get_num_threads(), settings=settings)

    def announce(spec: Any) -> None:
        console.print(f"[bold]{spec.name}[/bold] ({spec.task.kind}): {len(spec.train)} train, {len(spec.test)} test")

    doc, vectors = run_axes(loaded, specs, opts, out, meta, resume, announce)
    if doc["meta"]["resumed_axes"]:
        console.print(f"kept the finished axes {', '.join(doc['meta']['resumed_axes'])} from {out}")
    if suite is not None and interference and len(vectors) > 1:
        _add_interference(loaded, specs, vectors, out, quick, opts.gen_tokens)
    for s in doc["summary"]:
        console.print(f"{s['name']}: " + ", ".join(f"{c}={v:.3f}" for c, v in s["values"].items()))
    seconds = doc["meta"]["run_seconds"]
    console.print(f"[green]wrote[/green] {out}/results.json, report.md, report.html ({seconds:.0f} s)")


def _add_interference(
    loaded: Any, specs: list[Any], vectors: dict[str, Any], out: Path, quick: bool, tokens: int
) -> None:
    from steerlab.evaluate import suite_kit
    from steerlab.evaluate.report import add_interference

    started = time.perf_counter()
    console.print(f"[bold]interference[/bold] of the calibrated axes as one kit: {', '.join(vectors)}")
    report = suite_kit.measure_suite_kit(loaded, specs, vectors, n_items=8 if quick else 32, gen_tokens=tokens)
    section = suite_kit.write(report, out)
    section["seconds"] = time.perf_counter() - started
    add_interference(out, section)
    chosen = ", ".join(report.max_axes_set) or "none"
    console.print(f"max axes {report.max_axes} ({chosen}); interference measured in {section['seconds']:.0f} s")


def calibrate_cmd(
    vector: Annotated[str, typer.Argument(help="the vector to calibrate: V.safetensors or NAMESPACE/NAME")],
    task: Annotated[str, typer.Option(help="ab, pair-logprob, mcq, classify or fluency")],
    eval_path: Annotated[Path, typer.Option("--eval", help="validation items (never the test set)")],
    model: ModelOpt = DEFAULT_MODEL,
    out: Annotated[Path | None, typer.Option(help="where to write the calibrated vector (default: in place)")] = None,
    goal: Annotated[int, typer.Option(help="+1: more of the behaviour, -1: less")] = 1,
    window: Annotated[list[str] | None, typer.Option(help="layer window to try, e.g. 10-14 (repeatable)")] = None,
    scales: Annotated[str | None, typer.Option(help="raw scale magnitudes to try (instead of --doses)")] = None,
    doses: Annotated[str | None, typer.Option(help=DOSES_HELP + " (default 0.1,0.25,0.35,0.5,0.7)")] = None,
    budget: Annotated[float, typer.Option(help="allowed fluency loss (fraction of unsteered log-prob)")] = 0.1,
    repetition_budget: Annotated[
        float, typer.Option(help="allowed rise of the repeated-3-gram share over unsteered generations")
    ] = 0.1,
    scorer: Annotated[str, typer.Option(help="classify: sentiment or formality")] = "sentiment",
    max_items: Annotated[int, typer.Option(help="use at most N validation items")] = 32,
    store: Annotated[str | None, typer.Option(help=STORE_HELP)] = None,
    force: Annotated[
        bool,
        typer.Option(help="when nothing fits the budget, still write the gentlest candidate (marked out of budget)"),
    ] = False,
    positions: Annotated[str, typer.Option(help=POSITIONS_HELP.replace("generated (", "all (default; ", 1))] = "all",
) -> None:
    """Pick layers and scale on a validation split; write them into the vector's card.

    An expert vector (router-logit offsets) is calibrated on raw scales (default 0.5,1,2,4): doses are residual-stream
    units. When no candidate fits the fluency budget nothing is written and the exit status is 1 (unless --force).
    """
    from steerlab.evaluate.adhoc import load_items
    from steerlab.evaluate.calibrate import DEFAULT_DOSES, calibrate, grid_for, write_to_card
    from steerlab.evaluate.tasks import make_task
    from steerlab.models import load_model

    raw, relative = _grid(scales, doses)
    chosen_positions = checked_positions(positions)
    vec, target = _one_vector(vector, out, store)
    raw, relative = grid_for(vec, raw, relative)  # before the model loads: a refusal should not cost a minute
    items = load_items(task, eval_path, "eval")[:max_items]
    loaded = load_model(model)
    windows = [parse_layers(w) or [] for w in window] if window else _vector_windows(vec, loaded.n_layers)
    bench_task = make_task(task, **({"scorer": scorer} if task == "classify" else {}))
    cal = calibrate(
        loaded,
        bench_task,
        vec,
        items,
        goal,
        windows,
        raw or (1.0,),
        budget,
        repetition_budget=repetition_budget,
        doses=None if raw else relative or DEFAULT_DOSES,
        positions=chosen_positions,
    )
    summary = _calibration_line(cal)
    if not cal.within_budget and not force:
        console.print(
            f"[red]no candidate fits the fluency budget[/red] (gentlest: {summary}); nothing was written to the card. "
            "Try smaller scales, other --window values or a looser --budget; --force writes the gentlest anyway."
        )
        raise typer.Exit(1)
    write_to_card(vec, cal, eval_path.stem)
    target = vec.save(target)
    console.print(f"{summary}; wrote {target}" + ("" if cal.within_budget else " (marked out of budget: --force)"))


def checked_positions(positions: str) -> Positions:
    """The --positions value, refused before the model loads when it names no positions."""
    check_positions(positions)
    return positions  # type: ignore[return-value]


def _calibration_line(cal: Any) -> str:
    chosen = next(p for p in cal.grid if p.layers == cal.layers and p.scale == cal.scale)
    state = "within" if cal.within_budget else "OUTSIDE"
    unit = "router offsets" if cal.site == "router" else f"dose {cal.dose:.3g}, {cal.positions} tokens"
    return (
        f"layers {cal.layers[0]}-{cal.layers[-1]}, scale {cal.scale:g} ({unit}): {cal.metric} "
        f"{cal.base_metric:.3f} -> "
        f"{chosen.metric:.3f}, fluency {chosen.fluency:.3f} vs floor {cal.fluency_floor:.3f}, {state} budget"
    )


def _one_vector(address: str, out: Path | None, store: str | None) -> tuple[Any, Path]:
    """The vector an address names (through `steerlab.resolve`) and where the calibrated copy goes."""
    from steerlab.address import parse_address

    parsed = parse_address(address)
    kit, _ = kit_from_addresses([address], store_location(store))
    if len(kit.entries) != 1 or parsed.kind == "kit-file":
        raise SteerlabError(f"{address} is a kit; calibrate one vector at a time.")
    if out is None and parsed.kind != "vector-file":
        raise SteerlabError(f"{address} is not a file: say where to write the calibrated vector with --out.")
    return kit.entries[0].vector, out or Path(parsed.target)


def _vector_windows(vec: object, n_layers: int) -> list[list[int]]:
    from steerlab.evaluate.calibrate import layer_windows

    have = set(vec.layers)  # type: ignore[attr-defined]
    windows = [w for w in layer_windows(n_layers, 4) if set(w) <= have]
    return windows or [vec.card.recommended_layers or vec.layers]  # type: ignore[attr-defined]


def register(app: typer.Typer) -> None:
    app.command("bench")(bench_cmd)
    app.command("calibrate")(calibrate_cmd)
