"""Full fine-tuning (every weight, AdamW) on the same examples and with the same early stopping as LoRA: the seed's
"Full Fine-Tuning" baseline, for models small enough to train on a CPU."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from steerlab.errors import SteerlabError
from steerlab.evaluate.scoring import Shot
from steerlab.evaluate.sft import SftConfig, TrainedModel, train_sft
from steerlab.models import LoadedModel, wrap_model

# A copy of the weights, their gradients and AdamW's two moments: 16 bytes a parameter in float32, about 8 GB at
# 0.5 B parameters on top of the base model. Above that the baseline stops being a CPU-sized experiment.
MAX_PARAMETERS = 500_000_000


@dataclass(frozen=True)
class FinetuneConfig(SftConfig):
    # Full fine-tuning moves every weight, so a LoRA-sized rate would wreck a pretrained model in a few steps; 5e-5
    # is the usual full fine-tuning rate (Hugging Face Trainer's default), enough to fit 64 short answers in a few
    # epochs of 8 steps, where early stopping then takes over.
    lr: float = 5e-5
    max_parameters: int = MAX_PARAMETERS


def parameter_count(net: torch.nn.Module) -> int:
    """Distinct parameters (tied embeddings count once); works on a model built on the meta device too."""
    return sum(p.numel() for p in net.parameters())


def check_size(model: LoadedModel, limit: int = MAX_PARAMETERS) -> int:
    """The model's parameter count, or a SteerlabError when it is above what full fine-tuning is run for."""
    count = parameter_count(model.hf_model)
    if count > limit:
        raise SteerlabError(
            f"full fine-tuning is run for models up to {limit / 1e9:g} B parameters and {model.name} has "
            f"{count / 1e9:.2f} B; compare against LoRA instead (drop the finetune condition)."
        )
    return count


def train_finetune(
    model: LoadedModel,
    examples: Sequence[Shot],
    config: FinetuneConfig | None = None,
    val_examples: Sequence[Shot] = (),
    log: Callable[[str], None] | None = None,
) -> TrainedModel:
    """Fine-tune every weight of a copy of the model, keeping the best-validation epoch; the base is untouched."""
    cfg = config or FinetuneConfig()
    check_size(model, cfg.max_parameters)
    start = time.perf_counter()
    tuned = copy.deepcopy(model.hf_model)
    tuned.requires_grad_(True)
    curve = train_sft(model, tuned, examples, val_examples, cfg, log)
    tuned.requires_grad_(False)
    loaded = wrap_model(tuned, model.tokenizer, name=f"{model.name}+finetune")
    return TrainedModel(loaded, time.perf_counter() - start, len(examples), curve)
