"""Conditional kits in the server's continuous batcher: prefill decides per row, decode steps keep the decision."""

from __future__ import annotations

import threading

import torch
from tiny import H, L, tiny_model

from steerlab import Condition, Kit, KitEntry, Vector, generate
from steerlab.plan import compile_row
from steerlab.serve.batcher import Batcher, Event, Job
from steerlab.serve.sampling import Sampling
from steerlab.serve.textstream import TextStream

PROMPTS = ["hello there", "ab", "the quick brown fox jumps", "x y z", "mnop", "steer me"]


class Sink:
    def __init__(self) -> None:
        self.text, self.done = "", threading.Event()

    def __call__(self, event: Event) -> None:
        self.text += event.text
        if event.finish_reason is not None or event.error is not None:
            self.done.set()


def _kit(model) -> tuple[Kit, list[bool]]:
    """A kit gated by a condition that holds for half of PROMPTS (threshold between their scores)."""
    gen = torch.Generator().manual_seed(5)
    vector = Vector({la: torch.randn(H, generator=gen) for la in range(L)})
    direction = torch.randn(H, generator=gen)
    probe = Condition(direction / direction.norm(), 1, 0.0)
    details: list[dict] = []
    generate(model, PROMPTS, steering=Kit([KitEntry(vector, 2.0)]).when(probe), max_new_tokens=1, chat=False,
             details=details)  # fmt: skip
    scores = sorted(d["conditions"][0]["score"] for d in details)
    cut = (scores[2] + scores[3]) / 2
    condition = Condition(probe.direction, 1, cut)
    return Kit([KitEntry(vector, 2.0)]).when(condition), [d["conditions"][0]["score"] > cut for d in details]


def test_batched_conditional_rows_equal_generate_alone_and_record_decisions() -> None:
    model = tiny_model("llama")
    kit, holds = _kit(model)
    assert sum(holds) == 3
    row = compile_row(model, kit)
    expected = [generate(model, p, steering=kit, max_new_tokens=8, chat=False)[0] for p in PROMPTS]
    unsteered = [generate(model, p, max_new_tokens=8, chat=False)[0] for p in PROMPTS]
    batcher = Batcher(model, max_batch=4)
    jobs, sinks = [], []
    for prompt in PROMPTS:
        sink = Sink()
        ids = list(model.tokenizer(prompt)["input_ids"])
        jobs.append(Job(ids, row, Sampling(), TextStream(model.tokenizer, None), 8, sink, ignore_eos=True))
        sinks.append(sink)
    try:
        for job in jobs:
            batcher.submit(job)
        batcher.start()
        for sink in sinks:
            assert sink.done.wait(120)
    finally:
        batcher.close()
    assert [s.text for s in sinks] == expected
    assert [j.conditions[0]["holds"] for j in jobs] == holds
    for r, held in enumerate(holds):
        assert (expected[r] == unsteered[r]) != held, f"row {r}"


def test_an_axis_named_out_of_a_conditional_kit_keeps_its_condition(tmp_path) -> None:
    from steerlab import kitfile
    from steerlab.serve.protocol import SteeringItem
    from steerlab.serve.registry import Registry

    model = tiny_model("llama")
    kit, holds = _kit(model)
    kit.card.name = "gated"
    assert kit.condition is not None
    kit.condition.card.name = "half"
    kitfile.save_kit(kit, tmp_path / "gated.json")
    registry = Registry(model, kits_dir=tmp_path)
    picked = registry.resolve([SteeringItem(vector="gated:0", scale=2.0)]).kit
    assert picked is not None and picked.entries[0].when is not None
    assert picked.entries[0].when.key == kit.condition.key
    # so a prompt the condition does not hold for is answered exactly as unsteered
    failing = PROMPTS[holds.index(False)]
    steered = generate(model, failing, steering=picked, max_new_tokens=6, chat=False)[0]
    assert steered == generate(model, failing, max_new_tokens=6, chat=False)[0]
    passing = PROMPTS[holds.index(True)]
    assert generate(model, passing, steering=picked, max_new_tokens=6, chat=False)[0] == generate(
        model, passing, steering=kit, max_new_tokens=6, chat=False
    )[0]
