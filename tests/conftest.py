"""Shared fixtures: the default model (loaded once per session) and the path to ../shared/datasets."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

REPO = Path(__file__).resolve().parents[1]
DATASETS = Path(os.environ.get("STEERLAB_DATASETS", REPO.parent / "shared" / "datasets"))


@pytest.fixture(scope="session")
def datasets() -> Path:
    if not DATASETS.is_dir():
        pytest.fail(f"the shared datasets are missing at {DATASETS}; set STEERLAB_DATASETS to their folder")
    return DATASETS


@pytest.fixture(scope="session")
def default_model():
    import torch

    from steerlab import load_model

    torch.manual_seed(0)
    return load_model("smollm2-135m")
