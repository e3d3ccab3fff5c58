"""One greedy generation path and one EOS set, shared by generate, the evaluation bench, interference and the server."""

from __future__ import annotations

import pytest
import torch
from tiny import chat_tiny_model, tiny_model

from steerlab import Card, Kit, Vector, generate
from steerlab.evaluate.scoring import Setting, generate_texts
from steerlab.generation import eos_ids, generate_ids
from steerlab.interference.readout import generate_rows
from steerlab.prompts import prompt_ids
from steerlab.serve.batcher import Batcher

PROMPTS = ["hello there", "ab", "the quick brown fox"]
N = 12


def _kit(seed: int = 1) -> Kit:
    gen = torch.Generator().manual_seed(seed)
    vector = Vector({layer: torch.randn(32, generator=gen) for layer in range(4)}, Card(name="v"))
    return Kit.single(vector, 0.8, [1, 2])


def test_eos_set_on_a_tiny_model_without_and_with_a_chat_template() -> None:
    assert eos_ids(tiny_model()) == {0}
    chat = chat_tiny_model()
    end = chat.tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert eos_ids(chat) == {0, end}  # the template's end of turn, though neither config names it
    chat.hf_model.generation_config.eos_token_id = [0, 5]
    assert eos_ids(chat) == {0, 5, end}


def test_the_server_batcher_stops_where_generate_stops() -> None:
    model = chat_tiny_model()
    assert Batcher(model).eos_ids == eos_ids(model)


@pytest.mark.parametrize("templated", [False, True], ids=["plain", "chat-template"])
def test_the_bench_generates_what_generate_does(templated: bool) -> None:
    model = chat_tiny_model() if templated else tiny_model()
    kit = _kit()
    for setting, steering in ((Setting("unsteered"), None), (Setting("steering", steering=kit), kit)):
        bench = generate_texts(model, setting, PROMPTS, N)
        assert bench == generate(model, PROMPTS, steering=steering, max_new_tokens=N)
    prompted = generate_texts(model, Setting("prompting", system="Be brief."), PROMPTS, N)
    assert prompted == generate(model, PROMPTS, system="Be brief.", max_new_tokens=N)
    assert prompted != generate_texts(model, Setting("unsteered"), PROMPTS, N)  # the system prompt reached the model


def test_the_bench_batches_alike() -> None:
    model = tiny_model("qwen2")
    kit = _kit(2)
    whole = generate_texts(model, Setting("steering", steering=kit), PROMPTS, N)
    assert generate_texts(model, Setting("steering", steering=kit), PROMPTS, N, batch_size=2) == whole


def test_interference_rows_are_generate_ids_per_row() -> None:
    model = tiny_model()
    kit = _kit(3)
    rows = generate_rows(model, PROMPTS, [kit, None, kit], N)
    assert [prompt for prompt, _ in rows] == [prompt_ids(model.tokenizer, p) for p in PROMPTS]
    texts = [model.tokenizer.decode(gen, skip_special_tokens=True) for _, gen in rows]
    assert texts == generate(model, PROMPTS, steering=[kit, None, kit], max_new_tokens=N)
    assert texts[0] != generate(model, PROMPTS[0], max_new_tokens=N)[0]  # row 0 was steered


def test_generation_cuts_before_the_first_end_token() -> None:
    model = tiny_model("gpt2")
    seqs = [prompt_ids(model.tokenizer, p) for p in PROMPTS]
    free = generate_ids(model, seqs, max_new_tokens=N)
    row = next(r for r in free if len(r) >= 4)
    stop = row[3]
    model.hf_model.generation_config.eos_token_id = [0, stop]
    cut = generate_ids(model, seqs, max_new_tokens=N)
    for before, after in zip(free, cut, strict=True):
        expected = before[: before.index(stop)] if stop in before else before
        assert after == expected
    assert all(stop not in row for row in cut)
