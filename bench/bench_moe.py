"""Conditional and expert steering costs (`bench/run_all.py --only moe`).

- A conditional kit per decode step against the same kit unconditional, on the default model: once prefill has
  decided, the gated parts are already stacked into the plan, so a decode step should cost the same (target
  <= 1% extra). The condition holds for every row here, so both sides do the same arithmetic.
- The same kit's prefill, conditional vs unconditional: reading the condition and re-stacking the plan once.
- Router-logit offsets per decode step on a small random MoE (no pretrained MoE can be downloaded here), against
  the same model unsteered (target <= 2%).
- `extract_experts` wall time against the number of pairs on that MoE (it should grow linearly).

Every ratio pairs rounds (ABBA order) as bench/__init__.py does, and is shown with its interquartile range.
"""

from __future__ import annotations

import statistics
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from typing import Any

import torch

from bench import choose_threads, ratio, spread_text, summary
from steerlab import Condition, ExpertVector, Kit, KitEntry, PairSet, Vector, extract_experts, load_model, wrap_model
from steerlab.models import LoadedModel
from steerlab.plan import Plan, compile_plan
from steerlab.steering import apply_plan

MODEL = "smollm2-135m"
STEER_LAYERS = list(range(10, 21))
# A small Mixtral-style MoE: wide enough that a decode step is not pure Python overhead, small enough for CPU.
MOE_CONFIG: dict[str, Any] = {
    "hidden_size": 256,
    "intermediate_size": 512,
    "num_hidden_layers": 8,
    "num_attention_heads": 8,
    "num_key_value_heads": 4,
    "num_local_experts": 8,
    "num_experts_per_tok": 2,
    "max_position_embeddings": 512,
}


@dataclass(frozen=True)
class Settings:
    decode_steps: int
    prefill_rounds: int
    pair_counts: tuple[int, ...]
    extract_rounds: int


FULL = Settings(decode_steps=200, prefill_rounds=8, pair_counts=(8, 16, 32, 64), extract_rounds=2)
QUICK = Settings(decode_steps=40, prefill_rounds=3, pair_counts=(8, 16), extract_rounds=1)


def tiny_moe(tokenizer: Any) -> LoadedModel:
    """Random weights; the default model's tokenizer (and its chat template), so pairs render as they would."""
    from transformers import MixtralConfig, MixtralForCausalLM

    torch.manual_seed(0)
    config = MixtralConfig(**MOE_CONFIG, vocab_size=len(tokenizer))
    return wrap_model(MixtralForCausalLM(config), tokenizer, name="bench-mixtral-tiny")


def _prompt(batch: int, length: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1)
    return torch.randint(10, 5000, (batch, length), generator=gen)


@torch.inference_mode()
def paired_decode(model: LoadedModel, plans: dict[str, Plan | None], batch: int, steps: int) -> dict[str, Any]:
    """1-token steps on one KV cache, alternating between two plans (None: unsteered). Each plan prefills once
    first, so a conditional plan has made its decisions before the timed steps."""
    (name_a, plan_a), (name_b, plan_b) = plans.items()
    prompt = _prompt(batch, 32)
    mask = torch.ones_like(prompt)
    for plan in (plan_a, plan_b):
        if plan is not None:
            with apply_plan(model, plan):
                model.hf_model(input_ids=prompt, attention_mask=mask, use_cache=True)
    out = model.hf_model(input_ids=prompt, attention_mask=mask, use_cache=True)
    cache, token = out.cache, out.logits[:, -1:].argmax(-1)
    times: dict[str, list[float]] = {name_a: [], name_b: []}
    for pair in range(steps // 2):
        order = ((name_a, plan_a), (name_b, plan_b)) if pair % 2 == 0 else ((name_b, plan_b), (name_a, plan_a))
        for name, plan in order:
            mask = torch.cat([mask, torch.ones_like(token)], dim=1)
            with apply_plan(model, plan) if plan is not None else nullcontext():
                start = time.perf_counter()
                out = model.hf_model(input_ids=token, attention_mask=mask, cache=cache, use_cache=True)
                times[name].append(time.perf_counter() - start)
            cache, token = out.cache, out.logits[:, -1:].argmax(-1)
    extra = statistics.median(times[name_b]) - statistics.median(times[name_a])
    return {
        "batch": batch,
        "steps": 2 * (steps // 2),
        "summary": {name: summary(samples) for name, samples in times.items()},
        "overhead": ratio(times[name_b], times[name_a]),
        "extra_us_per_step": extra * 1e6,
    }


@torch.inference_mode()
def paired_prefill(model: LoadedModel, plans: dict[str, Plan], rounds: int) -> dict[str, Any]:
    prompt = _prompt(8, 128)
    mask = torch.ones_like(prompt)
    names = list(plans)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds + 1):
        for name in names if r % 2 == 0 else reversed(names):
            with apply_plan(model, plans[name]):
                start = time.perf_counter()
                model.hf_model(input_ids=prompt, attention_mask=mask, use_cache=False)
                if r:  # the first round warms up
                    times[name].append(time.perf_counter() - start)
    return {"summary": {n: summary(s) for n, s in times.items()}, "overhead": ratio(times[names[1]], times[names[0]])}


def conditional_costs(model: LoadedModel, settings: Settings) -> dict[str, Any]:
    gen = torch.Generator().manual_seed(0)
    vector = Vector({la: torch.randn(model.hidden_size, generator=gen) * 0.1 for la in STEER_LAYERS})
    # Holds for every row: both sides then steer the same rows, and only the gate's own cost differs.
    always = Condition(torch.ones(model.hidden_size) / model.hidden_size**0.5, 8, -1e9)
    kit = Kit([KitEntry(vector, 1.0)])
    out: dict[str, Any] = {"model": MODEL, "layers": STEER_LAYERS, "condition_layer": always.layer}
    for batch in (1, 8):
        plain, gated = compile_plan(model, kit), compile_plan(model, kit.when(always))
        out[f"decode_batch_{batch}"] = paired_decode(
            model, {"unconditional": plain, "conditional": gated}, batch, settings.decode_steps
        )
    plans = {"unconditional": compile_plan(model, kit), "conditional": compile_plan(model, kit.when(always))}
    out["prefill_8x128"] = paired_prefill(model, plans, settings.prefill_rounds)
    return out


def expert_costs(model: LoadedModel, settings: Settings) -> dict[str, Any]:
    routed = sorted(model.anatomy.routers)
    gen = torch.Generator().manual_seed(2)
    offsets = {la: {e: float(v) for e, v in enumerate(torch.randn(8, generator=gen))} for la in routed}
    vector = ExpertVector.from_offsets(model, offsets)
    out: dict[str, Any] = {"model": MOE_CONFIG, "routed_blocks": len(routed)}
    for batch in (1, 8):
        steered = compile_plan(model, Kit([KitEntry(vector)]))
        plans: dict[str, Plan | None] = {"unsteered": None, "router offsets": steered}
        out[f"decode_batch_{batch}"] = paired_decode(model, plans, batch, settings.decode_steps)
    out["extract_experts"] = extraction_scaling(model, settings)
    return out


def extraction_scaling(model: LoadedModel, settings: Settings) -> dict[str, Any]:
    pairs = PairSet.load(str(_happy_sad()))
    rows = []
    for n in settings.pair_counts:
        subset = pairs.subset([i % len(pairs) for i in range(n)])
        samples = []
        for _ in range(settings.extract_rounds):
            start = time.perf_counter()
            extract_experts(model, subset, progress=False)
            samples.append(time.perf_counter() - start)
        median = statistics.median(samples)
        rows.append({"pairs": n, "median_s": median, "s_per_pair": median / n, "samples": samples})
    first, last = rows[0], rows[-1]
    return {"rows": rows, "per_pair_growth": last["s_per_pair"] / first["s_per_pair"]}


def _happy_sad() -> Any:
    from pathlib import Path

    return Path(__file__).resolve().parents[1] / "src" / "steerlab" / "data" / "happy_sad.jsonl"


def _row(name: str, stats: dict[str, Any], target: float, note: str) -> dict[str, Any]:
    return {"name": name, "value": stats["ratio"], "unit": "x", "target_max": target, "spread": spread_text(stats),
            "note": note}  # fmt: skip


def run(results_dir: Any, quick: bool) -> dict[str, Any]:
    settings = QUICK if quick else FULL
    threads, why = choose_threads(torch.get_num_threads())
    torch.set_num_threads(threads)
    default = load_model(MODEL)
    cond = conditional_costs(default, settings)
    experts = expert_costs(tiny_moe(default.tokenizer), settings)
    rows = []
    for batch in (1, 8):
        d = cond[f"decode_batch_{batch}"]
        note = f"{d['extra_us_per_step']:+.0f} µs/step (medians), kit on {len(STEER_LAYERS)} blocks"
        rows.append(_row(f"conditional kit per decode step vs unconditional, batch {batch}", d["overhead"], 1.01, note))
    rows.append(
        _row("conditional kit prefill 8×128 vs unconditional", cond["prefill_8x128"]["overhead"], 1.01, "reads once")
    )
    for batch in (1, 8):
        d = experts[f"decode_batch_{batch}"]
        note = f"{d['extra_us_per_step']:+.0f} µs/step, {experts['routed_blocks']} routed blocks, 8 experts top-2"
        name = f"router offsets per decode step vs unsteered, tiny MoE, batch {batch}"
        rows.append(_row(name, d["overhead"], 1.02, note))
    scaling = experts["extract_experts"]
    for row in scaling["rows"]:
        rows.append({"name": f"extract_experts, {row['pairs']} pairs", "value": row["median_s"], "unit": "s",
                     "note": f"{row['s_per_pair'] * 1000:.1f} ms/pair"})  # fmt: skip
    return {
        "environment": {"torch_threads": threads, "threads_chosen_because": why},
        "title": "Conditional and expert steering: per-step cost and extraction scaling (CPU)",
        "headline": rows,
        "notes": [
            "No pretrained Mixture-of-Experts model can be downloaded on this machine: the MoE figures come from a "
            "randomly initialised Mixtral-style model (8 layers, hidden 256, 8 experts, top-2), so they measure "
            "cost, not behaviour.",
            f"extract_experts time per pair grew {scaling['per_pair_growth']:.2f}x from the smallest to the largest "
            "pair count (1.0 = linear in the number of pairs).",
        ],
        "details": {"settings": asdict(settings), "conditional": cond, "experts": experts},
    }
