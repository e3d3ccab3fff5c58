"""Conditional kits inside stock vLLM (real vLLM in .venv-vllm, `make vllm`), against the transformers engine.

A kit with an unconditional entry and two gated ones (a "mean" condition and a "last" condition at other blocks,
thresholds set so that each holds for about half the prompts) runs on vLLM with prefill split into small chunks
beside other requests. The greedy continuation must equal the transformers engine's for most prompts, and where the
transformers engine opens no gate, vLLM's answer must equal the unconditional part's alone (a gate vLLM opened
wrongly would change it). Both outcomes, some gates open and none, must occur among the prompts.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.test_vllm_engine import cut, request, run_job, vec
from tests.vllm_support import MARKS, QUESTIONS

pytestmark = MARKS

TOKENS = 10


@pytest.fixture(scope="module")
def model():
    import steerlab

    return steerlab.load_model("smollm2-135m")


def midpoint_condition(model, prompts, unconditional, direction_of: str, layer: int, reading: str):
    """A condition on a starter vector's direction whose threshold splits the prompts' own scores in half, read
    as the transformers engine reads it: with the kit's unconditional prompt steering on at earlier blocks (the
    chosen blocks are outside the unconditional entry's, so block outputs here are what the condition reads)."""
    from steerlab.card import Card
    from steerlab.condition import Condition
    from steerlab.kit import Kit
    from steerlab.steering import steer
    from steerlab.vector import Vector

    direction = Vector.load(vec(direction_of)).directions[layer].float()
    probe = Condition(direction / direction.norm(), layer, 0.0, reading, Card(name=f"{direction_of}-{reading}"))
    scores = []
    with torch.no_grad(), steer(model, Kit(unconditional)):
        for ids in prompts:
            out = model.hf_model(torch.tensor([ids]), output_hidden_states=True)
            scores.append(float(probe.scores(out.hidden_states[layer + 1])[0]))
    ordered = sorted(scores)
    threshold = (ordered[len(ordered) // 2 - 1] + ordered[len(ordered) // 2]) / 2
    card = Card(name=probe.card.name, base_model=model.name, model_fingerprint=model.fingerprint)
    return Condition(probe.direction, layer, threshold, reading, card)


def test_conditional_kit_on_vllm_decides_and_steers_as_the_transformers_engine(model, tmp_path: Path) -> None:
    from steerlab.generation import generate_ids
    from steerlab.kit import KitEntry
    from steerlab.prompts import prompt_ids
    from steerlab.vector import Vector
    from steerlab.vllm.kits import KitResolver
    from steerlab.vllm.settings import Settings

    prompts = [prompt_ids(model.tokenizer, q) for q in QUESTIONS]
    formal = Vector.load(vec("formal"))
    unconditional = [KitEntry(formal, 0.6, list(range(6, 13)))]
    mean = midpoint_condition(model, prompts, unconditional, "happy", 4, "mean")
    last = midpoint_condition(model, prompts, unconditional, "angry", 14, "last")
    mean_path, last_path = mean.save(tmp_path / "mean.safetensors"), last.save(tmp_path / "last.safetensors")
    spec = [
        vec("formal", ":0.6@6-12"),
        {"address": vec("happy", ":2.0@8-20"), "positions": "generated", "when": str(mean_path)},
        {"address": vec("angry", ":1.5@10-18"), "positions": "generated", "when": str(last_path)},
    ]
    kit = KitResolver(Settings(), model).for_request({"steering": spec})
    assert kit is not None and kit.conditional
    # Small steps: every prompt (about 30 tokens) is split over several steps, beside the others' chunks. Compiled
    # (vLLM's default mode): both ops are in the graph, compiled before any kit or condition exists.
    engine = {"max_num_batched_tokens": 48, "max_num_seqs": 8, "enable_chunked_prefill": True, "enforce_eager": False}
    runs = [
        [request(p, spec, TOKENS) for p in prompts],
        [request(p, vec("formal", ":0.6@6-12"), TOKENS) for p in prompts],
    ]
    result = run_job(tmp_path, runs, engine)
    steered = [o["token_ids"] for o in result["runs"][0]["outputs"]]
    plain = [o["token_ids"] for o in result["runs"][1]["outputs"]]
    same, held = 0, []
    for ids, mine, only_plain in zip(prompts, steered, plain, strict=True):
        details: list[dict] = []
        theirs = generate_ids(model, [ids], steering=kit.kit, max_new_tokens=TOKENS, details=details)[0]
        decided = {c["name"]: c["holds"] for c in details[0]["conditions"]}
        held.append(decided)
        same += cut(model, mine) == theirs
        if not any(decided.values()):
            assert mine == only_plain  # no gate open: exactly the unconditional part
    print("decisions", held, "greedy agreement of 8", same)
    assert any(any(d.values()) for d in held) and any(not any(d.values()) for d in held)
    assert same >= 7  # all but one: float32 on both engines; a wrong decision costs more than that
