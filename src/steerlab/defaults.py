"""Names needed before any model is loaded: the default model alias and STEERLAB_HOME.

They live apart from `steerlab.models` (which imports torch) so that the CLI's `--help` and the model-free hub commands
can read them without paying for torch.
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_MODEL = "smollm2-135m"


def steerlab_home() -> Path:
    """Where steerlab keeps converted models, the store, keys and logs: $STEERLAB_HOME, else ~/.cache/steerlab."""
    return Path(os.environ.get("STEERLAB_HOME", Path.home() / ".cache" / "steerlab"))


def store_root() -> Path:
    """The default local store: $STEERLAB_HOME/store."""
    return steerlab_home() / "store"
