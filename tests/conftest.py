"""Shared fixtures: the default model (loaded once per session) and the committed dataset slices (tests/data)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

REPO = Path(__file__).resolve().parents[1]
# Small slices of ../shared/datasets, same layout and formats (tests/data/make_slices.py writes them). Always these,
# never the full data: the tests then behave the same on CI, which has ../shared, and on a fresh clone, which has not.
DATASETS = Path(__file__).resolve().parent / "data" / "datasets"


@pytest.fixture(scope="session")
def datasets() -> Path:
    return DATASETS


@pytest.fixture(scope="session")
def default_model():
    import torch

    from steerlab import load_model

    torch.manual_seed(0)
    return load_model("smollm2-135m")
