"""The one prompt renderer: what the model reads, for extraction, generation, the evaluation bench and the server.

A prompt is a conversation: an optional system instruction, few-shot turns (user, assistant) and the user message.
With `chat=True` and a tokenizer that has a chat template, the template renders it and opens the assistant's turn;
its text is tokenized without the tokenizer's own special tokens, because the template writes them itself.

Plain-text fallback (no template, or `chat=False`): the messages' contents joined by one blank line ("\\n\\n"), with
no role names and no trailing newline, tokenized with the tokenizer's own special tokens (a BOS where it adds one).
So `system="Be kind.", user="Hi"` reads "Be kind.\\n\\nHi", and a shot ("2+2?", "4") adds "2+2?\\n\\n4" before the
user message. A prompt that renders to no tokens becomes one padding token: the model needs a token to condition on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from steerlab.errors import SteerlabError
from steerlab.pairs import ReadPosition, Side
from steerlab.tokens import Tokenized, encode, pad_id_of, tokenizer_of

Shot = tuple[str, str]  # (user message, assistant answer)
Message = dict[str, str]  # {"role": "system" | "user" | "assistant", "content": ...}
PLAIN_SEPARATOR = "\n\n"
_PROBE = "Fine."  # an assistant answer, rendered to find the token that ends an assistant turn


def has_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def conversation(user: str, system: str | None = None, shots: Sequence[Shot] = ()) -> list[Message]:
    """The messages of one prompt: system instruction (if any), each shot as a user/assistant pair, the user."""
    messages = [{"role": "system", "content": system}] if system else []
    for question, answer in shots:
        messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    return [*messages, {"role": "user", "content": user}]


def render_messages(tokenizer: Any, messages: Sequence[Message], chat: bool = True) -> str:
    """The prompt text: the chat template with the assistant's turn opened, or the plain-text fallback."""
    if chat and has_template(tokenizer):
        return _apply_template(tokenizer, messages, add_generation_prompt=True)
    return PLAIN_SEPARATOR.join(m["content"] for m in messages)


def messages_ids(tokenizer: Any, messages: Sequence[Message], chat: bool = True) -> list[int]:
    """Token ids of the rendered prompt; special tokens come from the template, or from the tokenizer in plain text."""
    if chat and has_template(tokenizer):
        return encode(tokenizer, render_messages(tokenizer, messages, chat=True), special=False)
    return text_ids(tokenizer, render_messages(tokenizer, messages, chat=False))


def text_ids(tokenizer: Any, text: str) -> list[int]:
    """A plain-text prompt's ids (the completion endpoint's, and the fallback's): never empty."""
    return encode(tokenizer, text, special=True) or [pad_id_of(tokenizer)]


def render(tokenizer: Any, user: str, system: str | None = None, shots: Sequence[Shot] = (), chat: bool = True) -> str:
    return render_messages(tokenizer, conversation(user, system, shots), chat=chat)


def prompt_ids(
    tokenizer: Any, user: str, system: str | None = None, shots: Sequence[Shot] = (), chat: bool = True
) -> list[int]:
    """Token ids of one prompt (system, shots, user), the same wherever it is rendered."""
    return messages_ids(tokenizer, conversation(user, system, shots), chat=chat)


def tokenize_side(model: Any, side: Side, position: ReadPosition, chat: bool = True) -> Tokenized:
    """One side of a pair as prompt + completion ids, with the span its activations are read over."""
    tok = tokenizer_of(model)
    prompt = prompt_ids(tok, side.user, side.system, chat=chat)
    completion = encode(tok, side.completion) if side.completion else []
    ids = prompt + completion
    if position == "last":
        return Tokenized(ids, len(ids) - 1, len(ids))
    if not completion:
        raise SteerlabError(
            f"reading position {position!r} needs a completion after the prompt, and an example has none; "
            "use position='last' for prompts without completions."
        )
    if position == "answer":
        return Tokenized(ids, len(ids) - 1, len(ids))
    if position == "mean":
        return Tokenized(ids, len(prompt), len(ids))
    raise SteerlabError(f"unknown reading position {position!r}: use 'last', 'mean' or 'answer'.")


def end_of_turn_id(tokenizer: Any) -> int | None:
    """The special token the chat template writes after an assistant answer (<|im_end|>, <|eot_id|>, ...), if any."""
    if not has_template(tokenizer):
        return None
    turns = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": _PROBE}]
    try:
        text = _apply_template(tokenizer, turns, add_generation_prompt=False)
    except SteerlabError:
        return None  # a template that cannot render a plain exchange has no end-of-turn token to learn
    cut = text.rfind(_PROBE)
    after = encode(tokenizer, text[cut + len(_PROBE) :]) if cut >= 0 else []
    # Template tokens such as <|im_end|> are added tokens, not always listed among the special ones.
    added: dict[str, int] = getattr(tokenizer, "get_added_vocab", dict)()
    special = set(getattr(tokenizer, "all_special_ids", [])) | set(added.values())
    return after[0] if after and after[0] in special else None


def _apply_template(tokenizer: Any, messages: Sequence[Message], add_generation_prompt: bool) -> str:
    try:
        text = tokenizer.apply_chat_template(
            list(messages), tokenize=False, add_generation_prompt=add_generation_prompt
        )
    except Exception as exc:  # jinja raises its own errors (e.g. "System role not supported")
        raise SteerlabError(
            f"this model's chat template refused the prompt ({exc}); drop the system prompt or few-shot turns it "
            "rejects, or render plain text with chat=False."
        ) from exc
    return str(text)
