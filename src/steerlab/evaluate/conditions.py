"""The compared conditions, built for one task run: all evaluated on the same held-out items."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from steerlab.evaluate.scoring import Setting
from steerlab.evaluate.tasks import Task
from steerlab.kit import Kit
from steerlab.models import LoadedModel
from steerlab.plan import as_kit
from steerlab.vector import Vector

# Further steering methods (`steering:<method>`) run right after `steering`.
CONDITIONS = ("unsteered", "steering", "prompting", "fewshot", "lora", "finetune", "steering+prompting")
FINETUNES = ("lora", "finetune")  # the trained baselines "% of fine-tuning" is computed against


def method_condition(method: str, first: bool) -> str:
    """The first steering method keeps the legacy name `steering` (old runs and reports still read); others are
    `steering:<method>`."""
    return "steering" if first else f"steering:{method}"


def sweep_name(scale: float) -> str:
    return f"steering@{scale:g}"


def steering_kit(vector: Vector, scale: float, layers: Sequence[int]) -> Kit:
    """The vector at `scale` on `layers`, on the positions its card was calibrated on (all until calibrated)."""
    return as_kit(vector, scale, list(layers))


def build_conditions(
    task: Task,
    train: Sequence[Any],
    goal: int,
    vector: Vector,
    layers: Sequence[int],
    scale: float,
    instruction: str | None,
    k_shots: int,
    trained: dict[str, LoadedModel | str],
    wanted: Sequence[str] = CONDITIONS,
    others: Sequence[tuple[str, Kit]] = (),
    prompting_kit: Kit | None = None,
) -> tuple[list[Setting], list[str]]:
    """The settings to run, and a note for each condition that cannot be run (and why).

    `others` are further steering methods' (condition, calibrated kit), run right after `steering`;
    `prompting_kit` is the kit steering+prompting uses (default: the first method's); `trained` holds each
    fine-tuned baseline's model (`lora`, `finetune`), or why it was not trained.
    """
    kit = steering_kit(vector, scale, layers)
    paired = prompting_kit or kit
    shots = task.shots(train, goal, k_shots) if k_shots > 0 else ()
    candidates: dict[str, Setting | str] = {
        "unsteered": Setting("unsteered"),
        "steering": Setting("steering", steering=kit),
        "prompting": Setting("prompting", system=instruction) if instruction else "no instruction given",
        "fewshot": Setting("fewshot", shots=shots) if shots else "no examples for k-shot prompts",
        **{name: _trained(name, trained.get(name, "not trained")) for name in FINETUNES},
        "steering+prompting": Setting("steering+prompting", steering=paired, system=instruction)
        if instruction
        else "no instruction given",
    }
    settings, skipped = [], []
    for name in wanted:
        found = candidates[name]
        if isinstance(found, Setting):
            settings.append(found)
            if name == "steering":
                settings += [Setting(condition, steering=other) for condition, other in others]
        else:
            skipped.append(f"{name}: skipped ({found})")
    return settings, skipped


def _trained(name: str, model: LoadedModel | str) -> Setting | str:
    return model if isinstance(model, str) else Setting(name, model=model)
