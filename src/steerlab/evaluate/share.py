"""The "% of fine-tuning": each condition's effect as a share of the stronger fine-tuned baseline's (LoRA or full
fine-tuning), given only when that baseline moved the metric the way the axis wants (its paired CI excludes 0)."""

from __future__ import annotations

import math
from typing import Any

from steerlab.evaluate.conditions import FINETUNES

LABELS = {"lora": "LoRA", "finetune": "full fine-tuning"}


def finetune_share(effects: dict[str, float], moved: dict[str, bool | None]) -> dict[str, Any]:
    """{baseline, baseline_effect, pct (condition -> % of the baseline's effect), note (why there is no %)}.

    `effects` are goal-signed paired effects on the primary metric; `moved` says whether each condition's paired
    CI excludes 0. The baseline is the fine-tune with the larger effect; a ratio to an effect that cannot be told
    from zero (or that goes against the goal) would be noise, so then `pct` is empty and `note` says why.
    """
    ran = {name: effects[name] for name in FINETUNES if not math.isnan(effects.get(name, math.nan))}
    if not ran:
        return {"baseline": None, "baseline_effect": math.nan, "pct": {}, "note": "no fine-tuned baseline ran"}
    name = max(ran, key=lambda n: ran[n])
    effect, label = ran[name], LABELS[name]
    out: dict[str, Any] = {"baseline": name, "baseline_effect": effect, "pct": {}, "note": ""}
    if not moved.get(name):
        others = " and ".join(LABELS[n] for n in ran)
        out["note"] = f"{others}: no significant effect (the stronger, {label}, has a paired 95% CI that includes 0)"
    elif effect <= 0:
        out["note"] = f"the stronger fine-tune, {label}, moved the metric against the axis's goal"
    else:
        out["pct"] = {c: 100 * e / effect for c, e in effects.items() if c != name and not math.isnan(e)}
    return out
