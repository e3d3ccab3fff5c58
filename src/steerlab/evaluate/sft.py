"""The one supervised fine-tuning loop behind the bench's trained baselines (LoRA and full fine-tuning).

Both train on the task's SFT examples with the loss on the answer tokens only. Each answer ends with the token the
chat template closes an assistant turn with (`prompts.end_of_turn_id`), the one a generation stops on. The loop
measures the validation loss before training and after every epoch, keeps the best epoch's weights, and stops when
`patience` epochs in a row bring no improvement, or at the `epochs` cap.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from steerlab.errors import SteerlabError
from steerlab.evaluate.scoring import PLAIN, Shot, render_ids
from steerlab.models import LoadedModel
from steerlab.prompts import end_of_turn_id
from steerlab.tokens import pad_batch, pad_id_of

Encoded = tuple[list[int], int]  # prompt + answer ids, and where the answer starts


@dataclass(frozen=True)
class SftConfig:
    """The training schedule LoRA and full fine-tuning share (only the learning rate differs between them)."""

    # A cap, not a target: early stopping ends training as soon as the validation loss stops improving. The seed
    # suite trains on 16-64 examples (2-8 steps an epoch), so 10 epochs bound a CPU run to 20-80 steps.
    epochs: int = 10
    # Two epochs without improvement: one bad epoch on a handful of validation answers can be noise.
    patience: int = 2
    # LoRA's rate (full fine-tuning sets its own): the top of the usual 1e-4..1e-3 LoRA range, because an epoch
    # here is only a few steps.
    lr: float = 1e-3
    batch_size: int = 8
    seed: int = 0
    # An improvement below this (nats per answer token) does not reset the patience.
    min_delta: float = 1e-3
    # Used only when no validation examples are given: this share of the training examples is held out instead.
    val_fraction: float = 0.2


@dataclass
class SftCurve:
    """What one training run did: the loss curves and the epoch whose weights were kept."""

    train: list[float]  # mean training loss of each epoch (epoch 1 first), per answer token
    val: list[float]  # validation loss before training (index 0) and after each epoch
    steps: list[float]  # every optimizer step's batch loss
    best_epoch: int  # 0 = no epoch beat the untrained weights, which are then kept
    stopped_early: bool
    n_train: int
    n_val: int
    validation: str  # where the validation examples came from

    def as_dict(self) -> dict[str, Any]:
        return {
            "train_loss": self.train,
            "val_loss": self.val,
            "best_epoch": self.best_epoch,
            "best_val_loss": self.val[self.best_epoch],
            "epochs_run": len(self.train),
            "stopped_early": self.stopped_early,
            "n_train": self.n_train,
            "n_val": self.n_val,
            "validation": self.validation,
        }


@dataclass
class TrainedModel:
    """A fine-tuned copy of the base model, with what its training took."""

    model: LoadedModel
    train_seconds: float
    n_examples: int
    curve: SftCurve

    @property
    def losses(self) -> list[float]:
        """Every optimizer step's batch loss."""
        return self.curve.steps


def encode(model: LoadedModel, examples: Sequence[Shot]) -> list[Encoded]:
    """Prompt ids (the bench's unsteered rendering) + answer ids + the end-of-turn id, and where the answer starts."""
    tok = model.tokenizer
    end = end_of_turn_id(tok)
    if end is None and isinstance(tok.eos_token_id, int):  # plain-text models end an answer with their EOS
        end = tok.eos_token_id
    encoded = []
    for user, answer in examples:
        prompt = render_ids(model, user, PLAIN)
        target = list(tok(answer, add_special_tokens=False)["input_ids"]) + ([end] if end is not None else [])
        encoded.append((prompt + target, len(prompt)))
    return encoded


def answer_loss(model: LoadedModel, net: torch.nn.Module, batch: Sequence[Encoded]) -> tuple[torch.Tensor, int]:
    """Summed cross-entropy over the batch's answer tokens, and their number.

    Rows are left-padded so every answer ends at the last position; only the last positions go through the LM head.
    """
    ids, mask, positions, offsets = pad_batch([s for s, _ in batch], pad_id_of(model.tokenizer), "left", model.device)
    width = ids.shape[1]
    targets = torch.full_like(ids, -100)
    for row, (_, start) in enumerate(batch):
        targets[row, offsets[row] + start :] = ids[row, offsets[row] + start :]
    keep = max(len(seq) - start for seq, start in batch) + 1  # the answers and the position before each
    out = net(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False, logits_to_keep=keep)
    logits = out.logits[:, -keep:-1].float()
    wanted = targets[:, width - keep + 1 :]
    loss = F.cross_entropy(logits.flatten(0, 1), wanted.flatten(), ignore_index=-100, reduction="sum")
    return loss, int((wanted != -100).sum())


def split_validation(
    examples: Sequence[Shot], val_examples: Sequence[Shot], cfg: SftConfig
) -> tuple[list[Shot], list[Shot], str]:
    """(train, validation, where validation came from): the given validation examples, else a seeded hold-out."""
    if not examples:
        raise SteerlabError("fine-tuning needs at least one training example; the training split is empty.")
    if val_examples:
        return list(examples), list(val_examples), "the task's validation items"
    if len(examples) < 2:
        raise SteerlabError(
            "fine-tuning with early stopping needs validation examples or at least 2 training examples to hold out "
            "from; give more training items."
        )
    order = list(range(len(examples)))
    random.Random(cfg.seed).shuffle(order)
    n_val = min(len(examples) - 1, max(1, round(cfg.val_fraction * len(examples))))
    held = set(order[:n_val])
    train = [e for i, e in enumerate(examples) if i not in held]
    return train, [examples[i] for i in sorted(held)], f"{n_val} training examples held out"


def train_sft(
    model: LoadedModel,
    net: torch.nn.Module,
    examples: Sequence[Shot],
    val_examples: Sequence[Shot],
    cfg: SftConfig,
    log: Callable[[str], None] | None = None,
) -> SftCurve:
    """Train `net`'s trainable parameters in place; on return it holds the best-validation epoch's weights.

    `log` gets one line per epoch (its losses), for progress on long runs."""
    torch.manual_seed(cfg.seed)
    train_ex, val_ex, source = split_validation(examples, val_examples, cfg)
    train, val = encode(model, train_ex), encode(model, val_ex)
    params = [p for p in net.parameters() if p.requires_grad]
    if not params:
        raise SteerlabError("nothing to train: the network has no parameters that require gradients.")
    opt = torch.optim.AdamW(params, lr=cfg.lr)
    curve = SftCurve([], [_mean_loss(model, net, val, cfg.batch_size)], [], 0, False, len(train), len(val), source)
    best, kept, rng = curve.val[0], _snapshot(params), random.Random(cfg.seed)
    for epoch in range(1, cfg.epochs + 1):
        curve.train.append(_epoch(model, net, train, opt, rng, cfg.batch_size, curve.steps))
        curve.val.append(_mean_loss(model, net, val, cfg.batch_size))
        if log is not None:
            log(f"epoch {epoch}/{cfg.epochs}: train loss {curve.train[-1]:.4f}, validation loss {curve.val[-1]:.4f}")
        if curve.val[-1] < best - cfg.min_delta:
            best, kept, curve.best_epoch = curve.val[-1], _snapshot(params), epoch
        elif epoch - curve.best_epoch >= cfg.patience:
            curve.stopped_early = epoch < cfg.epochs
            break
    with torch.no_grad():
        for param, saved in zip(params, kept, strict=True):
            param.copy_(saved)
    net.eval()
    return curve


def _epoch(
    model: LoadedModel,
    net: torch.nn.Module,
    data: Sequence[Encoded],
    opt: torch.optim.Optimizer,
    rng: random.Random,
    batch_size: int,
    steps: list[float],
) -> float:
    net.train()
    order = list(range(len(data)))
    rng.shuffle(order)
    total, tokens = 0.0, 0
    for at in range(0, len(order), batch_size):
        loss_sum, n = answer_loss(model, net, [data[i] for i in order[at : at + batch_size]])
        loss = loss_sum / max(n, 1)
        opt.zero_grad()
        loss.backward()
        opt.step()
        steps.append(float(loss.detach()))
        total, tokens = total + float(loss_sum.detach()), tokens + n
    return total / max(tokens, 1)


def _mean_loss(model: LoadedModel, net: torch.nn.Module, data: Sequence[Encoded], batch_size: int) -> float:
    net.eval()
    total, tokens = 0.0, 0
    with torch.no_grad():
        for at in range(0, len(data), batch_size):
            loss_sum, n = answer_loss(model, net, data[at : at + batch_size])
            total, tokens = total + float(loss_sum), tokens + n
    return total / tokens if tokens else math.nan


def _snapshot(params: Sequence[torch.nn.Parameter]) -> list[torch.Tensor]:
    return [p.detach().clone() for p in params]
