"""Peak memory of one stage of a bench run (a vector's extraction or training, a fine-tune), the same way for each.

The measure is the process's peak resident memory during the stage above its resident memory at the start, read
from the kernel's high-water mark (VmHWM in /proc/self/status), which the stage resets first through
/proc/self/clear_refs. It counts everything the stage holds at once (a model copy, gradients, optimizer state,
activations); memory the allocator kept from earlier stages and reuses is not counted again. On a CUDA device the
peak of torch's allocated memory above the start is recorded too. Where /proc is missing the RSS figure is NaN.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from types import TracebackType

import torch

MEASURE = "peak resident memory above the stage's start (kernel high-water mark VmHWM, reset at the start), MiB"
_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")
MIB = 2**20


def _status_kib(field: str) -> int | None:
    try:
        found = re.search(rf"^{field}:\s+(\d+) kB", _STATUS.read_text(), re.MULTILINE)
    except OSError:
        return None
    return int(found.group(1)) if found else None


def _reset_high_water_mark() -> bool:
    try:
        _CLEAR_REFS.write_text("5")  # "5" resets the peak RSS to the current RSS (Linux >= 4.0)
    except OSError:
        return False
    return True


class PeakMemory:
    """`with PeakMemory() as peak: ...`, then `peak.rss_mib` (and `peak.cuda_mib` on a CUDA device, else None)."""

    rss_mib: float = math.nan
    cuda_mib: float | None = None

    def __enter__(self) -> PeakMemory:
        self._ok = _reset_high_water_mark()
        self._start = _status_kib("VmRSS")
        self._cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
        if self._cuda:
            torch.cuda.reset_peak_memory_stats()
            self._cuda_start = torch.cuda.memory_allocated()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        peak = _status_kib("VmHWM")
        if self._ok and peak is not None and self._start is not None:
            self.rss_mib = max(0, peak - self._start) / 1024
        if self._cuda:
            self.cuda_mib = (torch.cuda.max_memory_allocated() - self._cuda_start) / MIB

    def as_dict(self) -> dict[str, float]:
        out = {"peak_rss_mib": self.rss_mib}
        if self.cuda_mib is not None:
            out["peak_cuda_mib"] = self.cuda_mib
        return out
