"""LoRA fine-tuning (peft) on the same examples the steering vector came from: the bench's "training" baseline."""

from __future__ import annotations

import copy
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from steerlab.errors import SteerlabError
from steerlab.evaluate.scoring import PLAIN, Shot, render_ids
from steerlab.models import LoadedModel, wrap_model
from steerlab.tokens import pad_batch, pad_id_of


@dataclass(frozen=True)
class LoraConfig:
    rank: int = 8
    alpha: int = 16
    epochs: int = 2
    lr: float = 5e-4
    batch_size: int = 8
    seed: int = 0


@dataclass
class LoraResult:
    model: LoadedModel
    train_seconds: float
    n_examples: int
    losses: list[float]


def _encode(model: LoadedModel, examples: Sequence[Shot]) -> list[tuple[list[int], int]]:
    """(prompt + answer + end-of-turn ids, where the answer starts): the loss covers only the answer tokens."""
    tok = model.tokenizer
    end = [tok.eos_token_id] if isinstance(tok.eos_token_id, int) else []
    encoded = []
    for user, answer in examples:
        prompt = render_ids(model, user, PLAIN)
        target = list(tok(answer, add_special_tokens=False)["input_ids"]) + end
        encoded.append((prompt + target, len(prompt)))
    return encoded


def _batch_loss(model: LoadedModel, hf: torch.nn.Module, batch: list[tuple[list[int], int]]) -> torch.Tensor:
    ids, mask, positions, offsets = pad_batch([s for s, _ in batch], pad_id_of(model.tokenizer), "right", model.device)
    labels = torch.full_like(ids, -100)
    for row, (seq, start) in enumerate(batch):
        labels[row, offsets[row] + start : offsets[row] + len(seq)] = ids[
            row, offsets[row] + start : offsets[row] + len(seq)
        ]
    return hf(input_ids=ids, attention_mask=mask, position_ids=positions, labels=labels, use_cache=False).loss


def train_lora(model: LoadedModel, examples: Sequence[Shot], config: LoraConfig | None = None) -> LoraResult:
    """Fine-tune a copy of the model with LoRA adapters, merge them, and time the training (wall seconds)."""
    from peft import LoraConfig as PeftConfig
    from peft import get_peft_model

    cfg = config or LoraConfig()
    if not examples:
        raise SteerlabError("LoRA needs at least one training example; the training split is empty for this goal.")
    start = time.perf_counter()
    torch.manual_seed(cfg.seed)
    encoded = _encode(model, examples)
    peft_cfg = PeftConfig(r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=0.0, task_type="CAUSAL_LM")
    tuned = get_peft_model(copy.deepcopy(model.hf_model), peft_cfg)
    tuned.train()
    opt = torch.optim.AdamW([p for p in tuned.parameters() if p.requires_grad], lr=cfg.lr)
    order, losses = list(range(len(encoded))), []
    rng = random.Random(cfg.seed)
    for _ in range(cfg.epochs):
        rng.shuffle(order)
        for at in range(0, len(order), cfg.batch_size):
            loss = _batch_loss(model, tuned, [encoded[i] for i in order[at : at + cfg.batch_size]])
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
    merged = tuned.merge_and_unload()
    merged.eval()
    seconds = time.perf_counter() - start
    loaded = wrap_model(merged, model.tokenizer, name=f"{model.name}+lora")
    return LoraResult(loaded, seconds, len(examples), losses)
