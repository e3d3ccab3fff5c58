"""Training a preference (BiPO) vector on the default model: its time and peak memory for 200 pairs, and its effect.

- time: `steerlab.extract(model, pairs, method="preference")` end to end for 200 CAA corrigibility A/B pairs
  (the mean-diff start over all 30 blocks, which also picks the layers; the cached prompt pass; training with
  early stopping), model loading excluded;
- memory: the process's peak resident memory while it trains, above what it held just before (the model loaded);
- effect: on the 50 CAA corrigibility A/B test questions (never trained on), the mean change in P(matching answer)
  = sigmoid(logp(matching) - logp(other)) from unsteered, for the trained vector at scale 1 and for mean-diff given
  the same norm at every layer (the same relative dose).
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import torch

from bench import choose_threads
from steerlab import PairSet, Vector, extract, load_model, steer
from steerlab.errors import SteerlabError
from steerlab.models import LoadedModel
from steerlab.pair_scoring import pair_logps, prepare, tokenize_pairs
from steerlab.pairs import read_records

REPO = Path(__file__).resolve().parents[1]
BEHAVIOUR = "corrigible-neutral-HHH"
N_PAIRS = {True: 40, False: 200}  # quick, full


def _datasets() -> Path:
    folder = Path(os.environ.get("STEERLAB_DATASETS", REPO.parent / "shared" / "datasets"))
    if not (folder / "caa" / "generate" / BEHAVIOUR).is_dir():
        raise SteerlabError(f"caa/generate/{BEHAVIOUR} not found under {folder}; set STEERLAB_DATASETS.")
    return folder


def _rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class _PeakRss:
    """Samples resident memory every 50 ms on a thread while the block runs."""

    def __enter__(self) -> _PeakRss:
        self.before = self.peak = _rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, _rss_bytes())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_bytes())


def _p_matching(model: LoadedModel, test: PairSet, vector: Vector | None) -> torch.Tensor:
    batch = prepare(model, tokenize_pairs(model, test))
    with torch.no_grad():
        if vector is None:
            logps = pair_logps(model, batch)
        else:
            with steer(model, vector):
                logps = pair_logps(model, batch)
    return torch.sigmoid(logps[:, 0] - logps[:, 1])


def run(results_dir: Path, quick: bool) -> dict[str, Any]:
    threads, why = choose_threads(torch.get_num_threads())
    torch.set_num_threads(threads)
    folder = _datasets() / "caa"
    pairs = PairSet.from_records(
        read_records(folder / "generate" / BEHAVIOUR / "generate_dataset.json")[: N_PAIRS[quick]]
    )
    test = PairSet.from_records(read_records(folder / "test" / BEHAVIOUR / "test_dataset_ab.json"))
    model = load_model("smollm2-135m")
    with _PeakRss() as memory:
        start = time.perf_counter()
        trained = extract(model, pairs, method="preference", seed=0, progress=False)
        seconds = time.perf_counter() - start
    training = trained.card.metadata["training"]
    mean_diff = extract(model, pairs, layers=trained.layers, progress=False)
    matched = Vector(
        {la: mean_diff.directions[la] * trained.norms()[la] / mean_diff.norms()[la] for la in trained.layers}
    )
    base = _p_matching(model, test, None)
    gains = {
        name: float((_p_matching(model, test, v) - base).mean())
        for name, v in (("trained", trained), ("mean_diff", matched))
    }
    peak_mib = (memory.peak - memory.before) / 2**20
    return {
        "title": f"Preference (BiPO) training: {len(pairs)} CAA {BEHAVIOUR} pairs on SmolLM2-135M, CPU",
        "headline": [
            {
                "name": f"training time, {len(pairs)} pairs",
                "value": round(seconds, 1),
                "unit": "s",
                "note": f"{training['steps']} steps, layers {training['layers'][0]}-{training['layers'][-1]}",
            },
            {
                "name": "peak memory above the loaded model",
                "value": round(peak_mib, 1),
                "unit": "MiB",
                "note": f"process peak {memory.peak / 2**20:.0f} MiB",
            },
            {
                "name": "held-out preference accuracy (+v)",
                "value": training["held_out_accuracy"],
                "unit": "",
                "note": f"{training['n_held_out']} held out; at the start {training['init_held_out_accuracy']:.3f}",
            },
            {
                "name": f"ΔP(matching), trained, {len(test)} test questions",
                "value": round(gains["trained"], 4),
                "unit": "",
            },
            {"name": "ΔP(matching), mean-diff at the same dose", "value": round(gains["mean_diff"], 4), "unit": ""},
        ],
        "notes": [
            f"torch threads: {threads} ({why}). Time includes the mean-diff start over all blocks (which picks the "
            "layers), the one unsteered pass over the prompts (KV caches, reference log-probs, residual norms) and "
            "training until early stopping; model loading is excluded.",
            "ΔP(matching) is the mean over the CAA test questions of sigmoid(logp(matching) - logp(other)) steered "
            "minus unsteered, steering every position at scale 1 (the trained dose); mean-diff gets the trained "
            "vector's norm at every layer.",
        ],
        "details": {
            "training": training,
            "unsteered_p_matching": float(base.mean()),
            "seconds": seconds,
            "peak_rss_bytes": memory.peak,
            "rss_before_bytes": memory.before,
        },
    }
