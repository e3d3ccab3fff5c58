"""Core performance on the default model: what steering costs during inference, and what extraction costs.

Every figure is a ratio against its control measured in the same run, rounds interleaved (see bench/__init__.py):
- generation, steered vs unsteered (64 new tokens at batch 1 and 8, prefill of 8x128 tokens), through
  steerlab.generate / steerlab.steer, and the hook cost of single decode steps in isolation;
- extraction of 50 happy/sad pairs with steerlab.extract vs one plain batched forward pass with hidden states,
  with repeng and steering-vectors as references (subprocesses in bench/.venv-refs, see bench/refs/).
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from bench import choose_threads, interleave, ratio, spread_text, summary
from bench.refs.client import RefWorker
from steerlab import PairSet, Vector, extract, generate, load_model, steer
from steerlab.errors import SteerlabError
from steerlab.evaluate.data import datasets_root
from steerlab.models import LoadedModel, steerlab_home
from steerlab.plan import compile_plan
from steerlab.prompts import render, tokenize_side
from steerlab.steering import apply_plan
from steerlab.tokens import pad_batch, pad_id_of

REPO = Path(__file__).resolve().parents[1]
MODEL = "smollm2-135m"
N_PAIRS = 50
PAIR_PROMPT = "Tell me about something that happened to you today."
STEER_LAYERS = list(range(10, 21))
STEER_SCALE = 0.5
BATCH_SIZE = 16  # sequences per forward pass, for steerlab and both references
GEN_PROMPTS = [
    "Describe your morning.",
    "What do you think about the weather?",
    "Tell me about your favourite place.",
    "How was your week?",
    "Write a short note to a neighbour.",
    "What did you have for lunch?",
    "Describe a walk in the park.",
    "What is on your mind right now?",
]
COMPARE_LAYERS = [5, 10, 15, 20, 25]
REFERENCES = {"repeng": "ref_repeng.py", "steering-vectors": "ref_steering_vectors.py"}  # scripts in bench/refs/


@dataclass(frozen=True)
class Settings:
    new_tokens: int
    gen_rounds: int
    prefill_rounds: int
    decode_steps: int
    extract_rounds: int
    extract_warmup: int


FULL = Settings(new_tokens=64, gen_rounds=6, prefill_rounds=10, decode_steps=200, extract_rounds=5, extract_warmup=1)
QUICK = Settings(new_tokens=16, gen_rounds=2, prefill_rounds=3, decode_steps=40, extract_rounds=1, extract_warmup=0)


def emotion_pairs(n: int) -> PairSet:
    """n completion pairs: the same user prompt, a happy scenario vs a sad one (RepE emotions, MIT)."""
    folder = datasets_root(("repe",)) / "repe" / "emotions"
    happy = json.loads((folder / "happiness.json").read_text())
    sad = json.loads((folder / "sadness.json").read_text())
    records = [{"prompt": PAIR_PROMPT, "positive": h, "negative": s} for h, s in zip(happy, sad, strict=False)][:n]
    return PairSet.from_records(records, source=str(folder))


def reference_texts(model: LoadedModel, pairs: PairSet) -> list[list[str]]:
    """Each side as the one string a reference library tokenizes: the chat-templated prompt, then the completion."""
    tok = model.tokenizer
    return [[render(tok, s.user) + s.completion for s in (p.positive, p.negative)] for p in pairs.pairs]


def token_pool(model: LoadedModel, n_tokens: int) -> list[int]:
    """Real text tokens (the emotion scenarios, no template) to build unpadded batches from."""
    folder = datasets_root(("repe",)) / "repe" / "emotions"
    scenarios = [json.loads((folder / f"{name}.json").read_text()) for name in ("happiness", "sadness")]
    text = " ".join(scenarios[0] + scenarios[1])
    ids = list(model.tokenizer(text, add_special_tokens=False)["input_ids"])
    if len(ids) < n_tokens:
        raise SteerlabError(f"the emotion scenarios give {len(ids)} tokens, {n_tokens} are needed.")
    return ids[:n_tokens]


def unpadded_batch(model: LoadedModel, rows: int, length: int) -> torch.Tensor:
    return torch.tensor(token_pool(model, rows * length), device=model.device).view(rows, length)


# --- extraction -------------------------------------------------------------------------------------------------


def naive_forward(model: LoadedModel, pairs: PairSet) -> tuple[Callable[[], None], dict[str, int]]:
    """One plain forward over all 100 sequences with output_hidden_states (every layer, LM head included)."""
    items = [tokenize_side(model, side, "last") for p in pairs.pairs for side in (p.positive, p.negative)]
    ids, mask, _, _ = pad_batch([it.ids for it in items], pad_id_of(model.tokenizer), "right", model.device)

    @torch.inference_mode()
    def call() -> None:
        model.hf_model(input_ids=ids, attention_mask=mask, output_hidden_states=True, use_cache=False)

    return call, {"tokens": int(mask.sum()), "padded_tokens": int(mask.numel())}


def _guarded(worker: RefWorker) -> Callable[[], float | None]:
    """A reference that fails mid-run keeps its error and drops out; steerlab's rounds go on."""

    def call() -> float | None:
        if worker.error is not None:
            return float("nan")
        try:
            return worker.run()
        except RuntimeError:
            return float("nan")

    return call


def bench_extraction(model: LoadedModel, settings: Settings) -> dict[str, Any]:
    pairs = emotion_pairs(N_PAIRS)
    texts = reference_texts(model, pairs)
    spec = {
        "model_dir": str(steerlab_home() / "models" / MODEL),
        "threads": torch.get_num_threads(),
        "batch_size": BATCH_SIZE,
        "pairs": texts,
        "compare_layers": COMPARE_LAYERS,
    }
    workers = {name: RefWorker(name, script, spec) for name, script in REFERENCES.items()}
    try:
        for worker in workers.values():
            worker.wait_ready()  # loading competes for the cores: nothing is timed until both are idle
        return _extraction_rounds(model, pairs, settings, workers)
    finally:
        for worker in workers.values():
            worker.close()


def _extraction_rounds(
    model: LoadedModel, pairs: PairSet, settings: Settings, workers: dict[str, RefWorker]
) -> dict[str, Any]:
    naive, tokens = naive_forward(model, pairs)
    made: list[Vector] = []

    def steerlab_extract() -> None:
        made.append(extract(model, pairs, position="last", batch_size=BATCH_SIZE, progress=False))

    conditions: dict[str, Callable[[], float | None]] = {"plain forward": naive, "steerlab": steerlab_extract}
    conditions.update({name: _guarded(w) for name, w in workers.items() if w.error is None})
    times = interleave(conditions, settings.extract_rounds, settings.extract_warmup)
    times = {name: t for name, t in times.items() if name not in workers or workers[name].error is None}
    vector = made[-1]
    out: dict[str, Any] = {
        "n_pairs": len(pairs),
        "batch_size": BATCH_SIZE,
        "position": "last",
        "tokens": tokens,
        "seconds": times,
        "summary": {name: summary(samples) for name, samples in times.items()},
        "vs_plain_forward": {n: ratio(s, times["plain forward"]) for n, s in times.items() if n != "plain forward"},
        "references": {name: w.report(vector) for name, w in workers.items()},
    }
    out["vector"] = vector
    return out


# --- generation ---------------------------------------------------------------------------------------------------


def bench_generation(model: LoadedModel, vector: Vector, batch: int, settings: Settings) -> dict[str, Any]:
    """steerlab.generate, greedy, exactly `new_tokens` tokens (min_new_tokens keeps eos from ending a row early)."""
    prompts = GEN_PROMPTS[:batch]
    texts: dict[str, list[str]] = {}

    def run(name: str, steering: Vector | None) -> Callable[[], None]:
        def call() -> None:
            texts[name] = generate(
                model,
                prompts,
                steering=steering,
                scale=STEER_SCALE,
                max_new_tokens=settings.new_tokens,
                min_new_tokens=settings.new_tokens,
            )

        return call

    times = interleave({"unsteered": run("unsteered", None), "steered": run("steered", vector)}, settings.gen_rounds)
    return {
        "batch": batch,
        "new_tokens": settings.new_tokens,
        "seconds": times,
        "summary": {name: summary(samples) for name, samples in times.items()},
        "overhead": ratio(times["steered"], times["unsteered"]),
        "tokens_per_s_unsteered": batch * settings.new_tokens / statistics.median(times["unsteered"]),
        "steering_changed_text": texts["steered"] != texts["unsteered"],
        "sample": {"prompt": prompts[0], "unsteered": texts["unsteered"][0], "steered": texts["steered"][0]},
    }


def bench_prefill(
    model: LoadedModel, vector: Vector, settings: Settings, rows: int = 8, length: int = 128
) -> dict[str, Any]:
    """One prefill forward (KV cache built, last logits only, as generate does), steer() context entry included."""
    ids = unpadded_batch(model, rows, length)
    mask = torch.ones_like(ids)

    @torch.inference_mode()
    def plain() -> None:
        model.hf_model(input_ids=ids, attention_mask=mask, use_cache=True, logits_to_keep=1)

    @torch.inference_mode()
    def steered() -> None:
        with steer(model, vector, scale=STEER_SCALE):
            model.hf_model(input_ids=ids, attention_mask=mask, use_cache=True, logits_to_keep=1)

    times = interleave({"unsteered": plain, "steered": steered}, settings.prefill_rounds)
    return {
        "shape": [rows, length],
        "seconds": times,
        "summary": {name: summary(samples) for name, samples in times.items()},
        "overhead": ratio(times["steered"], times["unsteered"]),
    }


@torch.inference_mode()
def bench_decode_steps(
    model: LoadedModel, vector: Vector, batch: int, steps: int, prompt_len: int = 32
) -> dict[str, Any]:
    """The hook cost alone: 1-token steps on one KV cache, alternately with and without the plan's hooks.

    Steps are paired (ABBA order) so both sides of a pair see almost the same cache length; the hooks are
    installed and removed outside the timed call, which is what a decode step pays once generation runs.
    """
    plan = compile_plan(model, vector, scale=STEER_SCALE)
    prompt = unpadded_batch(model, batch, prompt_len)
    mask = torch.ones_like(prompt)
    out = model.hf_model(input_ids=prompt, attention_mask=mask, use_cache=True)
    cache, token = out.cache, out.logits[:, -1:].argmax(-1)
    times: dict[str, list[float]] = {"unsteered": [], "steered": []}
    for pair in range(steps // 2):
        order = ("unsteered", "steered") if pair % 2 == 0 else ("steered", "unsteered")
        for name in order:
            # The same arguments generate() passes at each step: the new token, the grown mask, the cache.
            mask = torch.cat([mask, torch.ones_like(token)], dim=1)
            with apply_plan(model, plan) if name == "steered" else nullcontext():
                start = time.perf_counter()
                out = model.hf_model(input_ids=token, attention_mask=mask, cache=cache, use_cache=True)
                times[name].append(time.perf_counter() - start)
            cache, token = out.cache, out.logits[:, -1:].argmax(-1)
    overhead = ratio(times["steered"], times["unsteered"])
    extra = statistics.median(times["steered"]) - statistics.median(times["unsteered"])
    return {
        "batch": batch,
        "steps": 2 * (steps // 2),
        "prompt_len": prompt_len,
        "summary": {name: summary(samples) for name, samples in times.items()},
        "overhead": overhead,
        "extra_us_per_step": extra * 1e6,
        "extra_us_per_hooked_layer": extra * 1e6 / len(plan.layers),
    }


# --- report -------------------------------------------------------------------------------------------------------


def run(results_dir: Path, quick: bool) -> dict[str, Any]:
    settings = QUICK if quick else FULL
    threads, why = choose_threads(torch.get_num_threads())
    torch.set_num_threads(threads)
    model = load_model(MODEL)
    extraction = bench_extraction(model, settings)
    vector = extraction.pop("vector").select(STEER_LAYERS)
    details: dict[str, Any] = {
        "settings": asdict(settings),
        "threads": {"torch_threads": threads, "why": why},
        "model": MODEL,
        "steering": {"layers": STEER_LAYERS, "scale": STEER_SCALE, "norms": vector.norms()},
        "extraction": extraction,
        "decode_step": {b: bench_decode_steps(model, vector, b, settings.decode_steps) for b in (1, 8)},
        "prefill": bench_prefill(model, vector, settings),
        "generation": {b: bench_generation(model, vector, b, settings) for b in (1, 8)},
    }
    return {
        "environment": {"torch_threads": threads, "threads_chosen_because": why},
        "title": "Core: steering overhead and extraction cost (SmolLM2-135M, CPU)",
        "headline": headline(details, settings),
        "notes": notes(details),
        "details": details,
    }


def _overhead_row(name: str, stats: dict[str, Any], note: str = "") -> dict[str, Any]:
    return {
        "name": name,
        "value": stats["ratio"],
        "unit": "x",
        "target_max": 1.01,
        "spread": spread_text(stats),
        "note": note,
    }


def headline(details: dict[str, Any], settings: Settings) -> list[dict[str, Any]]:
    gen, steps, ext = details["generation"], details["decode_step"], details["extraction"]
    n = settings.new_tokens
    rows = [
        _overhead_row(
            f"hook cost per decode step, batch {b}",
            steps[b]["overhead"],
            f"{steps[b]['extra_us_per_step']:+.0f} µs/step (medians), {len(STEER_LAYERS)} layers; the stable figure",
        )
        for b in (1, 8)
    ]
    rows += [_overhead_row(f"generation, batch {b}, {n} new tokens", gen[b]["overhead"], "end to end") for b in (1, 8)]
    rows.append(_overhead_row("prefill, 8×128 tokens", details["prefill"]["overhead"]))
    vs_plain = ext["vs_plain_forward"]
    rows.append(
        {
            "name": f"extraction, {ext['n_pairs']} pairs: steerlab vs one plain forward",
            "value": vs_plain["steerlab"]["ratio"],
            "unit": "x",
            "target_max": 1.0,
            "spread": spread_text(vs_plain["steerlab"]),
            "note": f"plain forward {ext['summary']['plain forward']['median']:.2f} s",
        }
    )
    for name, report in ext["references"].items():
        row: dict[str, Any] = {"name": f"extraction: {name} vs one plain forward", "unit": "x"}
        if name in vs_plain:
            row.update(value=vs_plain[name]["ratio"], spread=spread_text(vs_plain[name]))
            faster = ext["summary"][name]["median"] / ext["summary"]["steerlab"]["median"]
            row["note"] = f"reference; steerlab takes {1 / faster:.2f}x its time"
        else:
            row.update(value=None, error=report.get("error", "did not run"), note="reference")
        rows.append(row)
    return rows


def notes(details: dict[str, Any]) -> list[str]:
    ext = details["extraction"]
    lines = ["## Medians (seconds)", "", "| condition | median | min | max | samples |", "|---|---|---|---|---|"]
    groups = [(f"extraction: {name}", s) for name, s in ext["summary"].items()]
    for b, g in details["generation"].items():
        groups += [(f"generation batch {b}: {name}", s) for name, s in g["summary"].items()]
    groups += [(f"prefill 8×128: {name}", s) for name, s in details["prefill"]["summary"].items()]
    for b, d in details["decode_step"].items():
        groups += [(f"decode step batch {b}: {name}", s) for name, s in d["summary"].items()]
    for label, s in groups:
        lines.append(f"| {label} | {s['median']:.4f} | {s['min']:.4f} | {s['max']:.4f} | {s['n']} |")
    text = ["\n".join(lines)]
    text.append(_reference_note(ext))
    gen1 = details["generation"][1]
    text.append(
        "## Sanity\n\n"
        f"Steering changed the generated text: batch 1 {gen1['steering_changed_text']}, "
        f"batch 8 {details['generation'][8]['steering_changed_text']}. Unsteered speed at batch 1: "
        f"{gen1['tokens_per_s_unsteered']:.1f} tokens/s. Extraction read {ext['tokens']['tokens']} tokens "
        f"({ext['tokens']['padded_tokens']} with padding in the plain forward's single batch)."
    )
    return text


def _reference_note(ext: dict[str, Any]) -> str:
    lines = [
        "## References",
        "",
        "Cosine of each reference's direction with steerlab's `mean_diff` (position `last`) at blocks "
        f"{COMPARE_LAYERS}. steering-vectors computes the same statistic, so it should be ~1.0; repeng fits PCA on "
        "the pair differences, a different direction.",
        "",
        "| reference | versions | cosine per block | tokens read | status |",
        "|---|---|---|---|---|",
    ]
    for name, report in ext["references"].items():
        cos = ", ".join(f"{c:.3f}" for c in report.get("cosine", {}).values()) or "—"
        versions = ", ".join(f"{k} {v}" for k, v in report.get("versions", {}).items()) or "—"
        status = report.get("error", "ran")
        lines.append(f"| {name} | {versions} | {cos} | {report.get('n_tokens', '—')} | {status} |")
    return "\n".join(lines)
