"""Reference: steering-vectors' `train_steering_vector` (run by bench_core inside bench/.venv-refs).

It reads the last token at each decoder block's output (steerlab's convention) and takes the mean difference,
so its directions should match steerlab's `mean_diff` at position "last" up to float error.
"""

from __future__ import annotations

from typing import Any

import _worker


def setup(spec: dict[str, Any]) -> dict[str, Any]:
    model, tokenizer = _worker.load_model(spec["model_dir"])
    samples = [(pos, neg) for pos, neg in spec["pairs"]]
    return {"model": model, "tokenizer": tokenizer, "samples": samples, "spec": spec}


def train(state: dict[str, Any]) -> Any:
    from steering_vectors import train_steering_vector

    # Its batch_size counts pairs and it runs the positive and negative sides as two forward passes,
    # so half of steerlab's batch gives the same number of sequences per forward pass.
    pairs_per_batch = max(1, state["spec"]["batch_size"] // 2)
    return train_steering_vector(state["model"], state["tokenizer"], state["samples"], batch_size=pairs_per_batch)


def describe(state: dict[str, Any], vector: Any) -> dict[str, Any]:
    tokenizer = state["tokenizer"]
    n_tokens = sum(len(tokenizer(s)["input_ids"]) for pair in state["samples"] for s in pair)
    directions = {layer: tensor.float().cpu().numpy() for layer, tensor in vector.layer_activations.items()}
    return {
        "n_tokens": n_tokens,
        "layers": sorted(directions),
        "directions": _worker.directions_at(directions, state["spec"]["compare_layers"]),
    }


if __name__ == "__main__":
    _worker.serve(["steering-vectors", "transformers", "torch", "numpy"], setup, train, describe)
