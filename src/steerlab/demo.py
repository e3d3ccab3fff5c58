"""`make demo`: extract a happy-vs-sad vector on the default model and show the shift it makes, with a number."""

from __future__ import annotations

import time
from importlib import resources
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from steerlab.extraction import extract
from steerlab.generation import generate
from steerlab.models import DEFAULT_MODEL, LoadedModel, load_model, steerlab_home
from steerlab.pairs import PairSet

PROMPTS = (
    "Describe your commute to work this morning.",
    "Write about a Tuesday afternoon at the office.",
    "What happened when your phone battery died?",
)
SCALES = (-0.8, 0.8)
LAYERS = list(range(8, 19))


def sentiment(texts: list[str]) -> list[float]:
    """VADER compound score in [-1, 1]: an offline lexicon scorer, independent of the model being steered."""
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    analyzer = SentimentIntensityAnalyzer()
    return [analyzer.polarity_scores(t)["compound"] for t in texts]


def main() -> None:
    console = Console()
    started = time.perf_counter()
    console.print(f"[bold]steerlab demo[/bold]: loading {DEFAULT_MODEL} (first run converts the GGUF once)...")
    model = load_model(DEFAULT_MODEL)
    pair_file = Path(str(resources.files("steerlab") / "data" / "happy_sad.jsonl"))
    pairs = PairSet.load(pair_file)
    console.print(f"extracting a happiness-vs-sadness vector from {len(pairs)} pairs ({pair_file.name})...")
    vector = extract(model, pairs, name="happy-vs-sad", progress=True)
    out = steerlab_home() / "demo" / "happy_sad.safetensors"
    vector.save(out)
    console.print(
        f"saved {out}; recommended layers {vector.card.recommended_layers}; steering layers {LAYERS[0]}-{LAYERS[-1]}"
    )
    steered = vector.select(LAYERS)
    conditions = [("unsteered", None, 0.0)] + [(f"scale {s:+.1f}", steered, s) for s in SCALES]
    texts = {
        name: generate(model, list(PROMPTS), steering=vec, scale=s, max_new_tokens=40) for name, vec, s in conditions
    }
    _show(console, texts)
    means = {name: sum(sentiment(t)) / len(t) for name, t in texts.items()}
    summary = ", ".join(f"{name}: {value:+.2f}" for name, value in means.items())
    console.print(f"mean sentiment (VADER compound, -1..+1) - {summary}")
    _from_store(console, model)
    console.print(
        f'done in {time.perf_counter() - started:.0f} s. Try: steerlab generate "How are you?" '
        f"--vector {out}:0.8@8-18 --compare"
    )


def _from_store(console: Console, model: LoadedModel) -> None:
    """Put the shipped starter pack into the local store (once), pull a vector from it by name and steer with it."""
    from steerlab.errors import SteerlabError

    try:
        store, count = install_starter_store()
        pulled = store.get_vector("starter/happy", require_signed=True)
    except SteerlabError as exc:
        console.print(f"[dim]local store: no starter/happy ({exc}); run `make starter-pack` to rebuild the pack.[/dim]")
        return
    layers = pulled.card.recommended_layers or LAYERS
    answer = generate(model, [PROMPTS[0]], steering=pulled.select(LAYERS), scale=SCALES[1], max_new_tokens=40)[0]
    console.print(
        f"local store {store.root}: {count} starter vectors (`steerlab hub list --json`). Pulled starter/happy "
        f"({pulled.card.n_pairs} pairs, signed, recommended layers {layers[0]}-{layers[-1]}); steered at "
        f"{SCALES[1]:+.1f}: {answer.strip()!r} (sentiment {sentiment([answer])[0]:+.2f})"
    )


def install_starter_store() -> tuple[Any, int]:
    """The local store with the shipped starter pack installed (signatures checked), and its starter entry count."""
    from steerlab.hub import open_store
    from steerlab.hub.starter_pack import ensure_shipped_pack

    store = open_store()
    ensure_shipped_pack(store)
    return store, len(store.list(namespace="starter"))


def _show(console: Console, texts: dict[str, list[str]]) -> None:
    for i, prompt in enumerate(PROMPTS):
        table = Table(title=prompt, show_lines=True, expand=True)
        table.add_column("condition", no_wrap=True)
        table.add_column("answer")
        table.add_column("sentiment", justify="right")
        for name, answers in texts.items():
            table.add_row(name, answers[i].strip(), f"{sentiment([answers[i]])[0]:+.2f}")
        console.print(table)


if __name__ == "__main__":
    main()
