"""The OpenAI wire format `specfw serve` speaks: pydantic request, response and error models.

Requests forbid unknown fields (a typo gets a 400 naming it). Besides
OpenAI's own fields, a request may choose specfw plugins per request
(``translator``, ``k``, ``k_policy``, ``drafter``, ``cache_sync``,
``verifier``; with the ``openai`` client: ``extra_body={"translator": "tli"}``);
their names are checked against the plugin registry.
"""

from __future__ import annotations

import time
import uuid
from typing import Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# OpenAI allows up to 4 stop sequences; a few more cost nothing here.
MAX_STOP_SEQUENCES = 16
# Seeds are 32-bit: each seed in 0..MAX_SEED gives its own stream (the verifier's draws are keyed by seed and position).
MAX_SEED = 2**32 - 1


def _check_plugin(kind: str, name: Optional[str]) -> Optional[str]:
    if name is not None:
        from specfw.plugins import get_registry

        get_registry().get(kind, name)  # PluginError: "unknown translator 'x'; known: ..."
    return name


class SpecfwOptions(BaseModel):
    """Per-request plugin choices; None keeps what the server was started with."""

    model_config = ConfigDict(extra="forbid")

    translator: Optional[str] = None
    k: Optional[int] = Field(None, ge=1, le=64)
    k_policy: Optional[str] = None
    drafter: Optional[str] = None
    cache_sync: Optional[str] = None
    verifier: Optional[str] = None
    baseline: Optional[bool] = Field(None, description="true: the target alone, no drafter")

    @field_validator("translator", "k_policy", "drafter", "cache_sync", "verifier")
    @classmethod
    def _registered(cls, name: Optional[str], info) -> Optional[str]:
        from specfw.errors import PluginError

        try:
            return _check_plugin(info.field_name, name)
        except PluginError as exc:
            raise ValueError(str(exc)) from None

    def overrides(self) -> dict:
        """The plugin choices this request made (not the OpenAI fields of a subclass)."""
        chosen = {name: getattr(self, name) for name in SpecfwOptions.model_fields}
        return {name: value for name, value in chosen.items() if value is not None}


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    include_usage: bool = False


class _SamplingRequest(SpecfwOptions):
    model: Optional[str] = Field(None, description="a served model id (GET /v1/models); None: the served model")
    max_tokens: Optional[int] = Field(None, ge=1)
    temperature: Optional[float] = Field(None, ge=0.0, le=2.0)
    top_p: Optional[float] = Field(None, gt=0.0, le=1.0)
    seed: Optional[int] = Field(None, ge=0, le=MAX_SEED)
    stop: Union[str, list[str], None] = None
    stream: bool = False
    stream_options: Optional[StreamOptions] = None
    n: Literal[1] = 1
    user: Optional[str] = None
    # Accepted as OpenAI spells them; only 0 is served (the route refuses other values by name).
    presence_penalty: Optional[float] = Field(None, ge=-2.0, le=2.0)
    frequency_penalty: Optional[float] = Field(None, ge=-2.0, le=2.0)

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, stop):
        stops = [stop] if isinstance(stop, str) else list(stop or [])
        if len(stops) > MAX_STOP_SEQUENCES:
            raise ValueError(f"at most {MAX_STOP_SEQUENCES} stop sequences")
        if any(not s for s in stops):
            raise ValueError("a stop sequence is empty")
        return stops

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class CompletionRequest(_SamplingRequest):
    """POST /v1/completions: a text prompt (or one prompt's token ids)."""

    prompt: Union[str, list[str], list[int]]

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, prompt):
        if isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
            if len(prompt) != 1:
                raise ValueError("one prompt per request (batches are not supported)")
            prompt = prompt[0]
        if isinstance(prompt, list) and not prompt:
            raise ValueError("the prompt is empty")
        if isinstance(prompt, list) and any(i < 0 for i in prompt):
            raise ValueError("token ids must be non-negative")
        if isinstance(prompt, str) and not prompt.strip():
            raise ValueError("the prompt is empty")
        return prompt


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["text"]
    text: str


class FunctionCall(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    arguments: str


class ToolCall(BaseModel):
    """A tool call an earlier assistant turn made (agent frameworks send the history back with them)."""

    model_config = ConfigDict(extra="forbid")

    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Union[str, list[TextPart], None] = None
    name: Optional[str] = None
    tool_calls: Optional[list[ToolCall]] = None  # assistant messages only
    tool_call_id: Optional[str] = None  # tool messages only

    @model_validator(mode="after")
    def _fits_role(self):
        if self.content is None and self.role != "assistant":
            raise ValueError(f"a '{self.role}' message needs content (only an assistant message's may be null)")
        if self.tool_calls is not None and self.role != "assistant":
            raise ValueError(f"tool_calls belong to assistant messages, not '{self.role}' ones")
        if self.tool_call_id is not None and self.role != "tool":
            raise ValueError(f"tool_call_id belongs to tool messages, not '{self.role}' ones")
        return self

    @property
    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)

    def rendered(self) -> dict:
        """The message as chat templates take it: content always a string, the tool fields only when given."""
        message = {"role": self.role, "content": self.text}
        if self.name is not None:
            message["name"] = self.name
        if self.tool_calls:
            message["tool_calls"] = [call.model_dump() for call in self.tool_calls]
        if self.tool_call_id is not None:
            message["tool_call_id"] = self.tool_call_id
        return message


class ChatCompletionRequest(_SamplingRequest):
    """POST /v1/chat/completions: messages rendered with each model's own chat template."""

    messages: list[ChatMessage] = Field(..., min_length=1)
    max_completion_tokens: Optional[int] = Field(None, ge=1)

    @property
    def token_limit(self) -> Optional[int]:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


# --------------------------------------------------------------------------- responses


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def now() -> int:
    return int(time.time())


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class SpecfwInfo(BaseModel):
    """What speculative decoding did for one request (counted as ``specfw run`` counts; ``accepted`` among the
    tokens sent, so a stop string cuts it as it cuts the text)."""

    proposed: int
    accepted: int = Field(description="accepted draft ids among the completion tokens sent "
                                      "(acceptance_rate = accepted / proposed)")
    verified_accepted: int = Field(description="draft ids the verifier accepted, including those the last cycle did "
                                               "not emit (cut by max_tokens, or the stop id and the ids after it)")
    acceptance_rate: float
    cycles: int
    tokens_per_second: float
    prompt_seconds: float
    decode_seconds: float
    prompt_cached_tokens: int = Field(description="target prompt ids whose KV cache was reused, not prefilled")
    draft_cached_tokens: int = Field(description="drafter prompt ids whose KV cache was reused")
    plugins: dict[str, Optional[Union[str, int]]]


class CompletionChoice(BaseModel):
    index: int = 0
    text: str
    logprobs: None = None
    finish_reason: Optional[str]


class Completion(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Optional[Usage] = None
    specfw: Optional[SpecfwInfo] = None


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int = 0
    message: AssistantMessage
    logprobs: None = None
    finish_reason: Optional[str]


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    specfw: SpecfwInfo


class Delta(BaseModel):
    role: Optional[Literal["assistant"]] = None
    content: Optional[str] = None


class ChatChunkChoice(BaseModel):
    index: int = 0
    delta: Delta
    logprobs: None = None
    finish_reason: Optional[str] = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: Optional[Usage] = None
    specfw: Optional[SpecfwInfo] = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "specfw"
    draft: Optional[str] = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorDetail(BaseModel):
    message: str
    type: str
    code: Optional[str] = None
    param: Optional[str] = None


class ErrorBody(BaseModel):
    """Every error the server sends: ``{"error": {"message", "type", "code", "param"}}``."""

    error: ErrorDetail
