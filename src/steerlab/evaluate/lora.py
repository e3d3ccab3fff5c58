"""LoRA fine-tuning (peft) on the same examples the steering vector came from: one of the bench's trained baselines."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from steerlab.evaluate.scoring import Shot
from steerlab.evaluate.sft import SftConfig, TrainedModel, train_sft
from steerlab.models import LoadedModel, wrap_model


@dataclass(frozen=True)
class LoraConfig(SftConfig):
    rank: int = 8
    alpha: int = 16


def train_lora(
    model: LoadedModel,
    examples: Sequence[Shot],
    config: LoraConfig | None = None,
    val_examples: Sequence[Shot] = (),
    log: Callable[[str], None] | None = None,
) -> TrainedModel:
    """Fine-tune a copy of the model with LoRA adapters (early stopping on `val_examples`, else on a hold-out of
    `examples`), merge the best epoch's adapters, and time it all (wall seconds). The base model is untouched."""
    from peft import LoraConfig as PeftConfig
    from peft import get_peft_model

    cfg = config or LoraConfig()
    start = time.perf_counter()
    torch.manual_seed(cfg.seed)  # peft draws the adapters' initial weights from the global generator
    peft_cfg = PeftConfig(r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=0.0, task_type="CAUSAL_LM")
    tuned = get_peft_model(copy.deepcopy(model.hf_model), peft_cfg)
    curve = train_sft(model, tuned, examples, val_examples, cfg, log)
    merged = tuned.merge_and_unload()
    merged.eval()
    loaded = wrap_model(merged, model.tokenizer, name=f"{model.name}+lora")
    return TrainedModel(loaded, time.perf_counter() - start, len(examples), curve)
