"""The official openai client against a real server on loopback, serving the default model with steering."""

from __future__ import annotations

import json
from pathlib import Path

import openai
import pytest
from test_serve_support import client, emotion_vector, make_kits_dir, served

from steerlab import Kit, generate
from steerlab.kitfile import file_sha256, load_kit

pytestmark = pytest.mark.slow
PROMPT = "Tell me about your weekend."
N = 10
HAPPY = {"vector": "happy", "scale": 0.5, "layers": list(range(10, 19))}


@pytest.fixture(scope="module")
def kits_dir(default_model, datasets, tmp_path_factory) -> Path:
    return make_kits_dir(tmp_path_factory.mktemp("kits"), default_model, datasets)


@pytest.fixture(scope="module")
def server(default_model, kits_dir, tmp_path_factory):
    store = _store_with_happy(tmp_path_factory.mktemp("store"), kits_dir)
    audit = tmp_path_factory.mktemp("audit") / "audit.jsonl"
    with served(default_model, kits_dir, audit_path=audit, store=store) as srv:
        yield srv


def _store_with_happy(root: Path, kits_dir: Path) -> str:
    from steerlab.hub import open_store
    from steerlab.hub.store import Publication

    store = open_store(str(root))
    store.publish((kits_dir / "happy.safetensors").read_bytes(), Publication(ref="test/happy", kind="vector"))
    return str(root)


@pytest.fixture(scope="module")
def api(server):
    return client(server)


@pytest.fixture(scope="module")
def expected(default_model, datasets, kits_dir) -> dict[str, str]:
    """What `generate` gives alone (computed while the server is idle: it shares the model)."""
    happy = Kit.single(emotion_vector(default_model, datasets), 0.5, list(range(10, 19)))
    mood = load_kit(kits_dir / "mood.json")
    # One batched call, one row per kit: identical prompts, so no padding; rows do not interact.
    plain, steered, moody = generate(default_model, [PROMPT] * 3, steering=[None, happy, mood], max_new_tokens=N)
    text = generate(default_model, "The capital of France is", max_new_tokens=N, chat=False)[0]
    return {"plain": plain, "happy": steered, "mood": moody, "text": text}


def _chat(api, steering=None, **kw):
    extra = {"steering": steering} if steering is not None else None
    return api.chat.completions.create(
        model="smollm2-135m",
        messages=[{"role": "user", "content": PROMPT}],
        max_tokens=kw.pop("max_tokens", N),
        temperature=kw.pop("temperature", 0),
        extra_body=extra,
        **kw,
    )


def test_models_lists_the_served_model(api) -> None:
    assert [m.id for m in api.models.list()] == ["smollm2-135m"]


def test_chat_unsteered_and_steered_equal_generate(api, expected) -> None:
    plain = _chat(api)
    assert plain.choices[0].message.content == expected["plain"]
    assert plain.choices[0].finish_reason == "length" and plain.usage.completion_tokens == N
    assert plain.usage.prompt_tokens > 5 and plain.usage.total_tokens == plain.usage.prompt_tokens + N
    steered = _chat(api, [HAPPY])
    assert steered.choices[0].message.content == expected["happy"] != expected["plain"]
    assert _chat(api, "mood").choices[0].message.content == expected["mood"] != expected["plain"]


def test_store_refs_steer_like_the_file(api, expected) -> None:
    by_ref = _chat(api, [{**HAPPY, "vector": "test/happy"}])
    assert by_ref.choices[0].message.content == expected["happy"]


def test_completion_endpoint(api, expected) -> None:
    out = api.completions.create(model="smollm2-135m", prompt="The capital of France is", max_tokens=N, temperature=0)
    assert out.choices[0].text == expected["text"] and out.object == "text_completion"
    both = api.completions.create(
        model="smollm2-135m", prompt=["The capital of France is", "1, 2, 3,"], max_tokens=4, temperature=0
    )
    assert [c.index for c in both.choices] == [0, 1] and both.choices[0].text == expected["text"][
        : len(both.choices[0].text)
    ]


def test_streaming_chat_and_completion(api, expected) -> None:
    chunks = list(_chat(api, [HAPPY], stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == expected["happy"]
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == N
    assert len({c.id for c in chunks}) == 1 and sum(1 for c in chunks if c.choices and c.choices[0].delta.content) > 3
    stream = api.completions.create(
        model="smollm2-135m", prompt="The capital of France is", max_tokens=N, temperature=0, stream=True
    )
    assert "".join(c.choices[0].text for c in stream) == expected["text"]


def test_stop_sequences(api, expected) -> None:
    words = expected["plain"].split()
    stop = " " + words[3]
    out = _chat(api, stop=[stop, "@@@"])
    assert out.choices[0].message.content == expected["plain"][: expected["plain"].index(stop)]
    assert out.choices[0].finish_reason == "stop"


def test_sampling_is_seeded_and_n_gives_choices(api) -> None:
    first = _chat(api, temperature=1.0, seed=11, n=2, max_tokens=8)
    again = _chat(api, temperature=1.0, seed=11, n=2, max_tokens=8)
    texts = [c.message.content for c in first.choices]
    assert texts == [c.message.content for c in again.choices] and len(texts) == 2
    other = [c.message.content for c in _chat(api, temperature=1.0, seed=1, n=3, max_tokens=8).choices]
    assert len({*texts, *other}) >= 3  # different seeds (choice k uses seed + k) draw differently


@pytest.mark.parametrize(
    ("body", "error", "code"),
    [
        ({"steering": [{"vector": "nope", "scale": 1}]}, openai.NotFoundError, "unknown_vector"),
        ({"steering": "nokit"}, openai.NotFoundError, "unknown_kit"),
        ({"steering": [{"vector": "wide", "scale": 1}]}, openai.BadRequestError, "incompatible_vector"),
        ({"steering": [{"vector": "happy", "scale": 50}]}, openai.BadRequestError, "scale_too_large"),
        ({"steering": [{"vector": "happy", "scale": 0.1}] * 9}, openai.BadRequestError, "too_many_vectors"),
        ({"steering": [{"vector": "happy", "scale": "lots"}]}, openai.BadRequestError, "malformed_body"),
        ({"steering": 5}, openai.BadRequestError, "malformed_body"),
        ({"temperature": 7}, openai.BadRequestError, "malformed_body"),
        ({"logprobs": True}, openai.BadRequestError, "malformed_body"),  # not implemented: refused, not ignored
        ({"max_tokens": 100_000}, openai.BadRequestError, "max_tokens_too_large"),
    ],
)
def test_limits_give_clear_openai_errors(api, body, error, code) -> None:
    with pytest.raises(error) as info:
        api.chat.completions.create(
            model="smollm2-135m", messages=[{"role": "user", "content": "hi"}], max_tokens=2, extra_body=body
        )
    assert info.value.body["code"] == code and len(info.value.body["message"]) > 20


def test_unknown_model_and_malformed_json(api, server) -> None:
    import httpx

    with pytest.raises(openai.NotFoundError):
        api.chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    bad = httpx.post(
        f"{server.url}/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_request_error"
    missing = httpx.post(f"{server.url}/v1/chat/completions", json={"model": "smollm2-135m"})
    assert missing.status_code == 400 and "messages" in missing.json()["error"]["message"]


def test_catalogue_lists_kits_and_vectors(server) -> None:
    import httpx

    data = httpx.get(f"{server.url}/v1/steering").json()["data"]
    by_id = {item["id"]: item for item in data}
    assert by_id["mood"]["kind"] == "kit" and [a["ref"] for a in by_id["mood"]["axes"]] == ["mood:happy", "mood:noise"]
    happy = by_id["happy"]["axes"][0]
    assert happy["scale"] == 0.5 and happy["card"]["recommended_layers"] == list(range(10, 19))
    # Listed with its card even though this model cannot use it (a request with it is refused: see the limits test).
    wide = by_id["wide"]
    assert wide["kind"] == "vector" and "error" not in wide
    assert [(a["name"], a["layers"]) for a in wide["axes"]] == [("wide", [10])]


def test_audit_log_records_who_steered_what(api, server, kits_dir) -> None:
    out = _chat(api, [HAPPY], user="alice", max_tokens=3)
    with pytest.raises(openai.NotFoundError):
        _chat(api, [{"vector": "nope"}], user="mallory", max_tokens=3)
    lines = [json.loads(line) for line in server.service.audit.path.read_text().splitlines()]
    mine = next(r for r in lines if r["request_id"] == out.id.removeprefix("chatcmpl-"))
    assert mine["user"] == "alice" and mine["status"] == "ok" and mine["completion_tokens"] == 3
    assert mine["vectors"][0]["sha256"] == file_sha256(kits_dir / "happy.safetensors")
    assert mine["vectors"][0]["scale"] == 0.5 and mine["steering_hash"] and mine["prompt_tokens"] > 0
    refused = [r for r in lines if r["user"] == "mallory"]
    assert refused and refused[-1]["status"] == "rejected" and refused[-1]["error"] == "unknown_vector"
