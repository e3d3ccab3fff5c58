"""One prompt renderer: extraction, the evaluation bench and the server read the same ids for the same prompt."""

from __future__ import annotations

import pytest
from tiny import chat_tiny_model, tiny_model

from steerlab import SteerlabError
from steerlab.evaluate.scoring import Setting, render_ids
from steerlab.pairs import Side
from steerlab.prompts import end_of_turn_id, prompt_ids, render, text_ids, tokenize_side
from steerlab.serve.protocol import ChatMessage
from steerlab.serve.server import build_service

SYSTEM = "Be kind."
SHOTS = (("2+2?", "4"), ("Red or blue?", "Blue"))
USER = "Say hi"


def _model(templated: bool):
    return chat_tiny_model() if templated else tiny_model()


def _messages(system: str | None, shots: tuple[tuple[str, str], ...], user: str) -> list[ChatMessage]:
    turns = [ChatMessage(role="system", content=system)] if system else []
    for question, answer in shots:
        turns += [ChatMessage(role="user", content=question), ChatMessage(role="assistant", content=answer)]
    return [*turns, ChatMessage(role="user", content=user)]


@pytest.mark.parametrize("templated", [True, False], ids=["chat-template", "plain"])
@pytest.mark.parametrize("system", [None, SYSTEM])
@pytest.mark.parametrize("shots", [(), SHOTS], ids=["zero-shot", "two-shot"])
def test_extraction_bench_and_server_read_the_same_ids(templated: bool, system: str | None, shots) -> None:
    model = _model(templated)
    service = build_service(model)
    expected = prompt_ids(model.tokenizer, USER, system, shots)
    assert render_ids(model, USER, Setting("x", system=system, shots=shots)) == expected
    assert service.chat_ids(_messages(system, shots, USER)) == expected
    if not shots:  # pairs have no few-shot turns
        assert tokenize_side(model, Side(USER, system=system), "last").ids == expected


def test_the_server_reads_developer_messages_as_system() -> None:
    model = chat_tiny_model()
    service = build_service(model)
    developer = [ChatMessage(role="developer", content=SYSTEM), ChatMessage(role="user", content=USER)]
    assert service.chat_ids(developer) == prompt_ids(model.tokenizer, USER, SYSTEM)


def test_a_chat_template_renders_system_shots_and_opens_the_assistant_turn() -> None:
    tok = chat_tiny_model().tokenizer
    text = render(tok, USER, SYSTEM, SHOTS[:1])
    assert text == (
        "<|im_start|>system\nBe kind.<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n"
        "<|im_start|>assistant\n4<|im_end|>\n<|im_start|>user\nSay hi<|im_end|>\n<|im_start|>assistant\n"
    )
    ids = prompt_ids(tok, USER, SYSTEM, SHOTS[:1])
    # Special tokens are written once, by the template: the tokenizer adds none of its own on top.
    assert ids == list(tok(text, add_special_tokens=False)["input_ids"])
    assert ids[0] == tok.convert_tokens_to_ids("<|im_start|>")


def test_plain_text_fallback_joins_the_messages_with_blank_lines() -> None:
    tok = tiny_model().tokenizer
    assert render(tok, USER, SYSTEM, SHOTS[:1]) == "Be kind.\n\n2+2?\n\n4\n\nSay hi"
    assert render(tok, USER) == USER  # no trailing newline: the bench scores what extraction read
    # chat=False ignores a template the tokenizer has.
    chat_tok = chat_tiny_model().tokenizer
    assert render(chat_tok, USER, SYSTEM, chat=False) == "Be kind.\n\nSay hi"
    assert prompt_ids(chat_tok, USER, chat=False) == text_ids(chat_tok, USER)


def test_an_empty_prompt_is_one_padding_token_everywhere() -> None:
    model = tiny_model()
    pad = model.tokenizer.pad_token_id
    assert prompt_ids(model.tokenizer, "") == [pad]
    assert build_service(model).text_ids("") == [pad]
    assert render_ids(model, "", Setting("x")) == [pad]


def test_completion_sides_read_after_the_prompt() -> None:
    model = tiny_model()
    item = tokenize_side(model, Side("ab", "xyz"), "mean")
    assert item.ids == prompt_ids(model.tokenizer, "ab") + list(
        model.tokenizer("xyz", add_special_tokens=False)["input_ids"]
    )
    assert (item.read_start, item.read_end) == (2, 5)
    with pytest.raises(SteerlabError, match="needs a completion"):
        tokenize_side(model, Side("ab"), "mean")


def test_a_template_that_refuses_a_system_prompt_says_what_to_do() -> None:
    model = chat_tiny_model()
    model.tokenizer.chat_template = (
        "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
        + model.tokenizer.chat_template
    )
    with pytest.raises(SteerlabError, match=r"System role not supported.*chat=False"):
        prompt_ids(model.tokenizer, USER, SYSTEM)
    assert prompt_ids(model.tokenizer, USER)  # without the system prompt it renders


def test_end_of_turn_token_comes_from_the_template() -> None:
    tok = chat_tiny_model().tokenizer
    assert end_of_turn_id(tok) == tok.convert_tokens_to_ids("<|im_end|>")
    assert end_of_turn_id(tiny_model().tokenizer) is None
