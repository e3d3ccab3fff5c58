"""Batcher, cache surgery, detokenisation, sampling and name resolution on tiny random models (fast)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from tiny import tiny_model

from steerlab import Card, Kit, KitEntry, SteerlabError, Vector, generate
from steerlab.kitfile import file_sha256
from steerlab.plan import compile_row
from steerlab.serve import kvcache
from steerlab.serve.batcher import Batcher, Event, Job
from steerlab.serve.errors import ApiError
from steerlab.serve.protocol import SteeringItem
from steerlab.serve.registry import Limits, Registry
from steerlab.serve.sampling import Sampling, pick_tokens
from steerlab.serve.textstream import TextStream

PROMPTS = ["hello there", "ab", "the quick brown fox jumps", "x y z", "mnop", "steer me"]


def _vectors(seed: int = 1, n: int = 3, hidden: int = 32, layers: int = 4) -> list[Vector]:
    gen = torch.Generator().manual_seed(seed)
    return [
        Vector(
            {layer: torch.randn(hidden, generator=gen) * 0.7 for layer in range(layers)},
            Card(name=f"v{i}", recommended_scale=0.5, recommended_layers=[1, 2]),
        )
        for i in range(n)
    ]


def _kits(vectors: list[Vector]) -> list[Kit | None]:
    v0, v1, v2 = vectors
    return [
        None,
        Kit.single(v0, 1.0),
        Kit.single(v1, -1.5, [1, 2]),
        Kit([KitEntry(v2, 0.7, [0, 3]), KitEntry(v0, 0.5, None, "generated")]),
        None,
        Kit.single(v2, 2.0, None, "prompt"),
    ]


class Collector:
    """Gathers one job's events the way a request does, on whatever thread the batcher calls from."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.done = threading.Event()

    def __call__(self, event: Event) -> None:
        self.events.append(event)
        if event.finish_reason is not None or event.error is not None:
            self.done.set()

    @property
    def text(self) -> str:
        return "".join(e.text for e in self.events)

    @property
    def last(self) -> Event:
        return self.events[-1]


class Gate:
    """Holds the batcher's engine thread inside a sink call until the test says go, so a test can act between steps.

    `hold(sink, after)` wraps a sink: the first event that reports at least `after` tokens is delivered, then the
    engine thread blocks there (no step runs) until `go()`. `reached` is set once it is blocked.
    """

    def __init__(self) -> None:
        self.reached = threading.Event()
        self._go = threading.Event()
        self.held_at: int | None = None  # completion_tokens of the event the engine was held after

    def hold(self, sink: Callable[[Event], None], after: int) -> Callable[[Event], None]:
        def gated(event: Event) -> None:
            sink(event)
            if self.held_at is None and event.completion_tokens >= after:
                self.held_at = event.completion_tokens
                self.reached.set()
                assert self._go.wait(60), "the test never released the engine"

        return gated

    def go(self) -> None:
        self._go.set()


def _job(model, prompt: str, kit: Kit | None, max_tokens: int, **kw) -> tuple[Job, Collector]:
    sink = Collector()
    ids = list(model.tokenizer(prompt)["input_ids"])
    stops = kw.pop("stops", None)
    job = Job(
        ids,
        compile_row(model, kit),
        kw.pop("sampling", Sampling()),
        TextStream(model.tokenizer, stops),
        max_tokens,
        sink,
        **kw,
    )
    return job, sink


@pytest.mark.parametrize("arch", ["llama", "gpt2", "qwen3", "gpt_neox", "mixtral", "deepseek_v2"])
def test_batched_rows_equal_generate_alone(arch: str) -> None:
    """Rows joining mid-decode, each with its own kit (or none), give the tokens `generate` gives each alone."""
    model = tiny_model(arch)
    kits = _kits(_vectors())
    lengths = [12, 5, 9, 12, 3, 7]  # rows leave at different steps
    expected = [
        generate(model, p, steering=k, max_new_tokens=n, chat=False)[0]
        for p, k, n in zip(PROMPTS, kits, lengths, strict=True)
    ]
    batcher = Batcher(model, max_batch=4)
    gate = Gate()
    jobs, sinks = zip(*(_job(model, p, k, n) for p, k, n in zip(PROMPTS, kits, lengths, strict=True)), strict=True)
    jobs[0].sink = gate.hold(sinks[0], after=2)
    try:
        # The first two share the first prefill; the engine is then held after row 0's second token while the other
        # four arrive, so they join a batch that is already decoding (two at once, the rest as rows leave).
        batcher.submit(jobs[0])
        batcher.submit(jobs[1])
        batcher.start()
        assert gate.reached.wait(60)
        for job in jobs[2:]:
            batcher.submit(job)
        gate.go()
        for sink in sinks:
            assert sink.done.wait(60)
    finally:
        gate.go()
        batcher.close()
    assert [s.text for s in sinks] == expected
    for sink, n in zip(sinks, lengths, strict=True):
        reason, count = sink.last.finish_reason, sink.last.completion_tokens
        assert (reason, count) == ("length", n) or (reason == "stop" and count <= n)  # stop: the eos token
    stats = batcher.stats
    assert stats.max_rows == 4 and stats.prefills >= 3, stats  # joined mid-decode, never more than max_batch
    assert stats.decode_rows > stats.decode_steps


def test_cache_merge_select_and_trim() -> None:
    model = tiny_model("llama")
    hf = model.hf_model

    def prefill(seqs: list[list[int]]) -> tuple[object, torch.Tensor]:
        from steerlab.tokens import pad_batch

        ids, mask, pos, _ = pad_batch(seqs, 0, "left", torch.device("cpu"))
        cache = kvcache.new_cache(hf)
        hf(input_ids=ids, attention_mask=mask, position_ids=pos, cache=cache, use_cache=True)
        return cache, mask

    a, mask_a = prefill([[5, 6, 7, 8, 9], [5, 6]])
    b, mask_b = prefill([[10, 11, 12, 13, 14, 15, 16]])
    key_b0 = b.layers[0].keys.clone()
    merged, mask = kvcache.merge(a, mask_a, b, mask_b)
    assert mask.tolist() == [[0, 0, 1, 1, 1, 1, 1], [0, 0, 0, 0, 0, 1, 1], [1] * 7]
    assert merged.layers[0].keys.shape[0] == 3 and merged.layers[0].keys.shape[2] == 7
    assert torch.equal(merged.layers[0].keys[2], key_b0[0])
    assert not merged.layers[0].keys[0, :, :2].any()  # new padding is zeros, masked out
    mask = kvcache.select_rows(merged, mask, [0, 1])  # the long row leaves: two all-padding columns go
    assert mask.tolist() == [[1, 1, 1, 1, 1], [0, 0, 0, 1, 1]]
    assert merged.layers[3].keys.shape[2] == 5 and merged.get_seq_length() == 5


def test_sliding_window_models_are_refused_clearly() -> None:
    with pytest.raises(SteerlabError, match="full-attention"):
        Batcher(tiny_model("gemma2"))


def test_stop_sequences_hold_back_and_cut() -> None:
    model = tiny_model("llama")
    tok = model.tokenizer
    stream = TextStream(tok, ["xyz"])
    shown = [stream.push(i) for i in tok("abcxy")["input_ids"]]
    assert "".join(shown) == "abc"  # "xy" could begin the stop string: held back
    assert stream.push(tok("z")["input_ids"][0]) == "" and stream.stopped
    plain = TextStream(tok, ["xyz"])
    for i in tok("abxy")["input_ids"]:
        plain.push(i)
    assert plain.flush() == "xy" and not plain.stopped


def test_stop_ends_a_row_inside_a_batch() -> None:
    model = tiny_model("llama")
    alone = generate(model, "hello there", max_new_tokens=10, chat=False)[0]
    stop = alone[4:6]
    batcher = Batcher(model).start()
    try:
        job, sink = _job(model, "hello there", None, 10, stops=[stop], ignore_eos=True)
        other, other_sink = _job(model, "ab", None, 10, ignore_eos=True)
        batcher.submit(other)
        batcher.submit(job)
        assert sink.done.wait(60) and other_sink.done.wait(60)
    finally:
        batcher.close()
    assert sink.text == alone[: alone.index(stop)] and sink.last.finish_reason == "stop"
    assert other_sink.text == generate(model, "ab", max_new_tokens=10, chat=False)[0]


def test_sampling_is_seeded_per_row_and_top_p_narrows() -> None:
    logits = torch.tensor([[0.0, 1.0, 2.0, 3.0], [3.0, 0.0, 0.0, 0.0]])
    draws = [pick_tokens(logits, [Sampling(1.0, seed=7), Sampling(0.0)]) for _ in range(2)]
    fresh = [pick_tokens(logits, [Sampling(1.0, seed=7), Sampling(0.0)])[0] for _ in range(2)]
    assert draws[0][1] == 0 and fresh[0] == fresh[1]  # greedy row, and same seed -> same first draw
    narrow = Sampling(1.0, top_p=0.01, seed=1)
    assert all(pick_tokens(logits[:1], [narrow]) == [3] for _ in range(20))  # top_p keeps only the head
    spread = Sampling(2.0, seed=2)
    assert len({pick_tokens(logits[:1], [spread])[0] for _ in range(60)}) > 2


def test_cancelled_rows_leave_without_disturbing_others() -> None:
    model = tiny_model("llama")
    batcher = Batcher(model)
    gate = Gate()
    keep, keep_sink = _job(model, "hello there", None, 40, ignore_eos=True)
    drop, drop_sink = _job(model, "ab", None, 40, ignore_eos=True)
    drop.sink = gate.hold(drop_sink, after=3)
    batcher.submit(keep)
    batcher.submit(drop)  # both queued before the engine starts: one prefill, one decode batch
    batcher.start()
    try:
        assert gate.reached.wait(60)  # the engine is parked inside drop's sink, between two steps
        drop.cancel()  # from this thread, as a request's handler does when its client leaves
        gate.go()
        assert keep_sink.done.wait(60)
    finally:
        batcher.close()
    assert keep_sink.text == generate(model, "hello there", max_new_tokens=40, chat=False)[0]
    held = gate.held_at
    assert held is not None and 3 <= held < 40
    assert not drop_sink.done.is_set() and drop_sink.last.completion_tokens == held  # no event after the cancel
    assert drop.generated == held  # the token decoded after the cancel was dropped, not counted
    # keep decodes tokens 2..40 (39 steps); drop is in the steps that decoded its tokens 2..held, plus the one whose
    # token it dropped on seeing the cancel, and in none after.
    stats = batcher.stats
    assert (stats.prefills, stats.max_rows, stats.decode_steps) == (1, 2, 39)
    assert stats.decode_rows == 39 + held


def _registry(tmp_path: Path, **kw) -> Registry:
    model = tiny_model("llama")
    v0, v1, _ = _vectors()
    v0.save(tmp_path / "calm.safetensors")
    v1.save(tmp_path / "bold.safetensors")
    Vector({1: torch.ones(64)}, Card(name="wide")).save(tmp_path / "wide.safetensors")
    Vector({9: torch.ones(32)}, Card(name="deep")).save(tmp_path / "deep.safetensors")
    return Registry(model, kits_dir=tmp_path, **kw)


def test_registry_resolves_names_and_applies_card_defaults(tmp_path: Path) -> None:
    reg = _registry(tmp_path)
    res = reg.resolve([SteeringItem(vector="calm", scale=0.5), SteeringItem(vector="bold", scale=-1, layers=[3])])
    assert res.kit is not None and [e.layers for e in res.kit.entries] == [[1, 2], [3]]  # card's recommended layers
    # The audit hash is the sha256 of the file the vector came from.
    assert [r["sha256"] for r in res.entries] == [file_sha256(tmp_path / f"{n}.safetensors") for n in ("calm", "bold")]
    lone = reg.resolve("calm")  # a vector named as a kit: one axis at the card's scale and layers
    assert lone.kit is not None and lone.kit.entries[0].scale == 0.5 and lone.kit.entries[0].layers == [1, 2]
    assert reg.resolve(None).kit is None and reg.resolve([]).kit is None
    again = reg.resolve([SteeringItem(vector="calm", scale=0.5), SteeringItem(vector="bold", scale=-1, layers=[3])])
    assert again.row is res.row and again.steering_hash == res.steering_hash  # compiled once, cached by content


@pytest.mark.parametrize(
    ("spec", "status", "code"),
    [
        ([SteeringItem(vector="nope")], 404, "unknown_vector"),
        ("nokit", 404, "unknown_kit"),
        ([SteeringItem(vector="wide")], 400, "incompatible_vector"),
        ([SteeringItem(vector="deep")], 400, "incompatible_vector"),
        ([SteeringItem(vector="calm", scale=9.5)], 400, "scale_too_large"),
        ([SteeringItem(vector="calm", scale=-9.5)], 400, "scale_too_large"),
        ([SteeringItem(vector="calm", scale=0.1)] * 3, 400, "too_many_vectors"),
        ([SteeringItem(vector="calm", layers=[7])], 400, "invalid_layers"),
        ([SteeringItem(vector="ns/name")], 404, "unknown_vector"),
        ([SteeringItem(vector="mood:happy")], 404, "unknown_kit"),
    ],
)
def test_registry_refuses_clearly(tmp_path: Path, spec, status: int, code: str) -> None:
    reg = _registry(tmp_path, limits=Limits(max_scale=8.0, max_vectors=2))
    with pytest.raises(ApiError) as info:
        reg.resolve(spec)
    assert (info.value.status, info.value.code) == (status, code)
    assert len(info.value.message) > 30  # says what is wrong and what to do


def test_registry_default_kit_is_checked_at_start(tmp_path: Path) -> None:
    with pytest.raises(ApiError, match="unknown kit"):
        _registry(tmp_path, default="missing")
    reg = _registry(tmp_path, default="calm")
    assert reg.resolve(None).label == "calm" and reg.resolve([]).kit is None


def test_prefill_token_cap_splits_prefills_without_changing_answers() -> None:
    model = tiny_model("llama")
    expected = [generate(model, p, max_new_tokens=6, chat=False)[0] for p in PROMPTS]
    batcher = Batcher(model, max_prefill_tokens=12)
    sinks = []
    for prompt in PROMPTS:  # all queued before the engine starts: only the token cap splits them
        job, sink = _job(model, prompt, None, 6)
        batcher.submit(job)
        sinks.append(sink)
    batcher.start()
    try:
        assert all(s.done.wait(60) for s in sinks)
    finally:
        batcher.close()
    assert [s.text for s in sinks] == expected
    assert batcher.stats.prefills >= 4 and batcher.stats.max_rows >= 2  # split prefills, still one decode batch


def test_a_client_leaving_a_stream_frees_its_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import httpx

    from steerlab.serve.server import BackgroundServer, build_service

    service = build_service(tiny_model("llama"), audit_path=tmp_path / "audit.jsonl", model_id="tiny")
    gate = Gate()
    submit = service.batcher.submit

    def gated_submit(job: Job) -> None:
        # The engine stops after the row's first streamed token until the client has gone and the server has seen it.
        job.sink = gate.hold(job.sink, after=1)
        submit(job)

    monkeypatch.setattr(service.batcher, "submit", gated_submit)
    with BackgroundServer(service) as server:
        body = {"model": "tiny", "prompt": "hi", "max_tokens": 120, "ignore_eos": True, "stream": True}
        try:
            with httpx.stream("POST", f"{server.url}/v1/completions", json=body, timeout=60) as response:
                first = next(response.iter_lines())
                assert first.startswith("data: {")
            # The stream's handler logs when it ends: by then it has cancelled the row (the engine is still held).
            assert _wait_for(lambda: len(service.audit.read()) == 1)
            record = service.audit.read()[-1]
        finally:
            gate.go()
        assert _wait_for(lambda: service.batcher.active == 0)  # the row left at the next step
        health = httpx.get(f"{server.url}/health").json()
        assert health["batcher"]["active"] == 0
    assert record["status"] == "cancelled" and record["completion_tokens"] == gate.held_at
    assert service.batcher.stats.completed == 0  # it never ran to its 120 tokens


def _wait_for(condition: Callable[[], bool], timeout: float = 30.0) -> bool:
    """Poll a condition that another thread makes true (a bounded wait, not a timing assumption)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True
