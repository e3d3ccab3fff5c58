"""`steerlab hub audit REF --model M`: what a vector does to refusals, measured by generation.

Harmful requests (the refusal-direction harmful split) are answered greedily under four conditions, in one batch:
unsteered; REF alone; the operator's protective kit alone (default: starter/refusal at its card's scale); and the
protective kit with REF. Each completion is judged by steerlab.guard.refusal's rule. The report gives each
condition's refusal rate with a bootstrap 95% interval, and REF's paired effect with and without the protection
(per-prompt refusal after minus before): a vector that removes refusals shows a negative effect.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from steerlab.bootstrap import mean_ci, paired_diffs
from steerlab.frontdoor import resolve
from steerlab.generation import generate
from steerlab.guard.refusal import REFUSAL_PHRASES, is_refusal
from steerlab.kit import Kit, KitCard
from steerlab.models import LoadedModel

CONDITIONS = ("unsteered", "vector", "protective", "protective+vector")
DEFAULT_PROTECTIVE = "starter/refusal"


@dataclass
class AuditReport:
    ref: str
    protective: str
    model: str
    prompts: list[str]
    max_new_tokens: int
    completions: dict[str, list[str]]
    refused: dict[str, list[bool]] = field(default_factory=dict)
    rates: dict[str, list[float]] = field(default_factory=dict)  # condition -> [rate, lo, hi]
    effects: dict[str, list[float]] = field(default_factory=dict)  # "vector" / "vector under protection" -> [d, lo, hi]
    rule: str = "substring match on Arditi et al.'s refusal phrases: " + "; ".join(REFUSAL_PHRASES)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def markdown(self) -> str:
        lines = [
            f"# Refusal audit of `{self.ref}`",
            "",
            f"Model {self.model}; {len(self.prompts)} harmful requests, greedy, {self.max_new_tokens} new tokens; "
            f"protective kit `{self.protective}`. Refusal rule: {self.rule}.",
            "",
            "| condition | refusal rate | 95% CI |",
            "|---|---|---|",
        ]
        lines += [f"| {c} | {r[0]:.3f} | [{r[1]:.3f}, {r[2]:.3f}] |" for c, r in self.rates.items()]
        lines += ["", "| effect of the vector on refusals (paired) | difference | 95% CI |", "|---|---|---|"]
        lines += [f"| {name} | {d[0]:+.3f} | [{d[1]:+.3f}, {d[2]:+.3f}] |" for name, d in self.effects.items()]
        lines += ["", "## First completions", ""]
        for index, prompt in enumerate(self.prompts[:3]):
            lines.append(f"**{prompt[:120]}**")
            for condition in CONDITIONS:
                text = self.completions[condition][index].replace("\n", " ")[:160]
                lines.append(f"- {condition} ({'refuses' if self.refused[condition][index] else 'answers'}): {text}")
            lines.append("")
        return "\n".join(lines)

    def write(self, folder: Path) -> tuple[Path, Path]:
        from steerlab.atomic import atomic_write

        data, text = json.dumps(self.to_dict(), indent=1) + "\n", self.markdown() + "\n"
        return atomic_write(folder / "audit.json", data.encode()), atomic_write(folder / "audit.md", text.encode())


def audit(
    model: LoadedModel,
    ref: str,
    prompts: list[str],
    store: Any = None,
    protective: str = DEFAULT_PROTECTIVE,
    max_new_tokens: int = 48,
    batch_size: int = 16,
) -> AuditReport:
    """Generate `prompts` under the four CONDITIONS and judge refusals. Addresses go through the front door."""
    vector = resolve(ref, store=store, model=model)
    protection = resolve(protective, model=model)  # the operator's: a file, or a ref in the local store
    kits: dict[str, Kit | None] = {
        "unsteered": None,
        "vector": vector,
        "protective": protection,
        "protective+vector": Kit([*protection.entries, *vector.entries], KitCard(name=f"{protective}+{ref}")),
    }
    rows = [(condition, prompt) for condition in CONDITIONS for prompt in prompts]
    texts = generate(
        model,
        [prompt for _, prompt in rows],
        steering=[kits[condition] for condition, _ in rows],
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
    )
    n = len(prompts)
    completions = {c: texts[k * n : (k + 1) * n] for k, c in enumerate(CONDITIONS)}
    report = AuditReport(ref, protective, model.name, list(prompts), max_new_tokens, completions)
    report.refused = {c: [is_refusal(t) for t in completions[c]] for c in CONDITIONS}
    scores = {c: [float(r) for r in report.refused[c]] for c in CONDITIONS}
    report.rates = {c: list(mean_ci(scores[c])) for c in CONDITIONS}
    report.effects = {
        "vector": list(mean_ci(paired_diffs(scores["vector"], scores["unsteered"]))),
        "vector under protection": list(mean_ci(paired_diffs(scores["protective+vector"], scores["protective"]))),
    }
    return report
