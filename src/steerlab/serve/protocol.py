"""Request bodies of the OpenAI-compatible endpoints, plus steerlab's `steering` extension field."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class SteeringItem(BaseModel):
    """One vector of an ad-hoc kit: a name from the kits folder or store, its scale, and optionally its layers."""

    model_config = ConfigDict(extra="forbid")

    vector: str = Field(min_length=1, description="a vector name, 'KIT:AXIS' for a kit's entry, or a store ref ns/name")
    scale: float | None = None  # None: the card's scale (a kit axis: the kit's)
    layers: list[int] | None = None


# A kit name, or a list of vectors with scales. None: the server's default kit (if any).
Steering = str | list[SteeringItem] | None


class StreamOptions(BaseModel):
    include_usage: bool = False


# OpenAI features this server does not implement: asking for them is an error, not a silent no-op.
UNSUPPORTED = ("logprobs", "top_logprobs", "tools", "functions", "tool_choice", "response_format", "echo", "suffix")


class SamplingFields(BaseModel):
    """Fields shared by both endpoints. Other OpenAI fields (frequency_penalty, ...) are accepted and ignored."""

    model_config = ConfigDict(extra="allow")

    model: str = ""
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    n: int = Field(default=1, ge=1, le=8)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    steering: Steering = None
    # vLLM's extension: keep generating past end-of-sequence (benchmarks need fixed-length answers).
    ignore_eos: bool = False
    user: str | None = None

    @field_validator("stop")
    @classmethod
    def _stops(cls, value: str | list[str] | None) -> list[str] | None:
        if value is None:
            return None
        stops = [value] if isinstance(value, str) else value
        if len(stops) > 4 or any(not s for s in stops):
            raise ValueError("stop takes up to 4 non-empty strings")
        return stops

    @model_validator(mode="after")
    def _supported(self) -> SamplingFields:
        asked = [name for name in UNSUPPORTED if (self.model_extra or {}).get(name) not in (None, False, 0, [], {})]
        if asked:
            raise ValueError(f"{', '.join(asked)} not supported by this server; leave them out")
        return self

    def stop_list(self) -> list[str]:
        return list(self.stop or [])

    def token_limit(self) -> int | None:
        return self.max_tokens


class TextPart(BaseModel):
    type: Literal["text"] = "text"
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class ChatRequest(SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)

    def token_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class CompletionRequest(SamplingFields):
    prompt: str | list[str]

    @field_validator("prompt")
    @classmethod
    def _prompts(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list) and not 1 <= len(value) <= 8:
            raise ValueError("prompt takes one string or a list of 1 to 8 strings")
        return value

    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)
