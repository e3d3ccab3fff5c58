"""Reference: repeng's `ControlVector.train` on the benchmark's pairs (run by bench_core inside bench/.venv-refs).

repeng reads the last token of each string from `output_hidden_states` and fits PCA on the pair differences
(its default method, "pca_diff"); its layer L (after normalising negative indices) is the output of block L,
the same convention as steerlab's.
"""

from __future__ import annotations

from typing import Any

import _worker


def setup(spec: dict[str, Any]) -> dict[str, Any]:
    from repeng import DatasetEntry

    model, tokenizer = _worker.load_model(spec["model_dir"])
    dataset = [DatasetEntry(positive=pos, negative=neg) for pos, neg in spec["pairs"]]
    return {"model": model, "tokenizer": tokenizer, "dataset": dataset, "spec": spec}


def train(state: dict[str, Any]) -> Any:
    from repeng import ControlVector

    # batch_size counts strings here, as it does in steerlab: the same number of sequences per forward pass.
    return ControlVector.train(
        state["model"], state["tokenizer"], state["dataset"], batch_size=state["spec"]["batch_size"]
    )


def describe(state: dict[str, Any], vector: Any) -> dict[str, Any]:
    tokenizer = state["tokenizer"]
    n_tokens = sum(len(tokenizer(s)["input_ids"]) for e in state["dataset"] for s in (e.positive, e.negative))
    return {
        "n_tokens": n_tokens,
        "layers": sorted(vector.directions),
        "directions": _worker.directions_at(vector.directions, state["spec"]["compare_layers"]),
    }


if __name__ == "__main__":
    _worker.serve(["repeng", "transformers", "torch", "numpy"], setup, train, describe)
