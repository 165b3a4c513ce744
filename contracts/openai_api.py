"""The OpenAI chat-completions wire protocol as pydantic models (as vLLM's ``entrypoints/openai/protocol.py``).

One definition of the shape for everything that speaks it:

- the ``/v1`` routes validate requests with :class:`ChatCompletionRequest` and answer :class:`ChatCompletion`,
  :class:`ChatCompletionChunk` (``stream: true``), :class:`ModelList` / :class:`ModelCard` and
  :class:`ErrorResponse`;
- the ``openai`` engine builds its upstream request with :class:`ChatCompletionRequest` and reads the upstream's
  answer with :class:`ChatCompletion` (or its error with :class:`ErrorResponse`);
- the tests build request bodies and scripted upstream answers with the same models.

Requests are typed strictly, as OpenAI types them: ``stream: "yes"`` is not a boolean and ``max_tokens: -1``
is not a token count, so a wrong type or value fails validation at that parameter (the routes answer a 400
whose ``error.param`` names it). Unknown request parameters (vLLM's ``structured_outputs``, ``guided_json`` ...)
are kept in ``model_extra``. Answers are read leniently, as an OpenAI-compatible upstream may write them
(``id``, ``created``, ``usage`` ... may be missing, unknown fields are ignored), and written whole: every field
is documented as required in the serialization schema, since the server always writes it.

Bottom layer: imports pydantic only.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    StrictBool,
    StrictInt,
    StrictStr,
    model_serializer,
)

Role = Literal["system", "developer", "user", "assistant", "tool", "function"]
PositiveInt = Annotated[int, Field(strict=True, ge=1)]
Temperature = Annotated[float, Field(strict=True, ge=0, le=2)]
Probability = Annotated[float, Field(strict=True, ge=0, le=1)]
Penalty = Annotated[float, Field(strict=True, ge=-2, le=2)]
TopLogprobs = Annotated[int, Field(strict=True, ge=0, le=20)]
#: content part types that carry text (``input_text``: the Responses API's name for it)
TEXT_PART_TYPES = ("text", "input_text")
#: ``response_format.type`` values
RESPONSE_FORMAT_TYPES = ("text", "json_object", "json_schema")
#: vLLM's own structured-output parameters (extras of the request): the keys of ``structured_outputs`` (vLLM >= 0.12)
#: that ask for a JSON schema, and the ``guided_*`` parameters of older vLLM (``guided_json`` first)
STRUCTURED_OUTPUTS_KEYS = frozenset({"json", "disable_any_whitespace", "disable_additional_properties"})
GUIDED_PARAMETERS = ("guided_json", "guided_regex", "guided_choice", "guided_grammar")
_TOOLS_DOC = ("Refused (400): the answer is the pass output, never a tool call; only an explicit tool_choice "
              "\"none\" is accepted.")


class _Request(BaseModel):
    """A request object: parameters it does not declare are kept (``model_extra``), not refused."""

    model_config = ConfigDict(extra="allow")


class _Answer(BaseModel):
    """An answer object: read leniently (an upstream may leave fields out), documented and written whole."""

    model_config = ConfigDict(json_schema_serialization_defaults_required=True)


# --- the request -----------------------------------------------------------------------------------------


class ContentPart(_Request):
    """One part of a message's content (``{"type": "text", "text": ...}``; other types are kept, not read)."""

    type: str
    text: str | None = None


class ChatMessage(_Request):
    role: Role
    content: str | list[ContentPart] | None = None

    def text(self) -> str | None:
        """The message's text: the content string, or its text parts joined; None when it has no text."""
        if self.content is None or isinstance(self.content, str):
            return self.content
        parts = [p.text for p in self.content if p.type in TEXT_PART_TYPES and isinstance(p.text, str)]
        return "".join(parts) if parts else None


class JsonSchemaSpec(_Request):
    model_config = ConfigDict(populate_by_name=True)
    name: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class ResponseFormat(_Request):
    type: str
    json_schema: JsonSchemaSpec | None = None


class StreamOptions(_Request):
    include_usage: StrictBool | None = False


class ChatCompletionRequest(_Request):
    """The OpenAI chat request, typed strictly as OpenAI types it (a wrong type is a 400 naming the
    parameter). Sampling parameters are checked and otherwise ignored (decoding is deterministic)."""

    model: StrictStr
    messages: list[ChatMessage] = Field(min_length=1)
    response_format: ResponseFormat | None = None
    stream: StrictBool | None = Field(default=False, description="true: the answer as server-sent "
                                      "chat.completion.chunk events ending with data: [DONE].")
    stream_options: StreamOptions | None = None
    n: StrictInt | None = Field(default=1, description="Only 1 is supported.")
    max_tokens: PositiveInt | None = Field(default=None, description="A positive integer; not applied: the "
                                           "answer is always the whole contract document (a cut document "
                                           "would not be valid JSON).")
    max_completion_tokens: PositiveInt | None = Field(default=None, description="As max_tokens.")
    temperature: Temperature | None = None
    top_p: Probability | None = None
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    seed: StrictInt | None = None
    stop: StrictStr | list[StrictStr] | None = None
    user: StrictStr | None = None
    logprobs: StrictBool | None = Field(default=None, description="true is refused (400): no token "
                                        "log-probabilities are computed.")
    top_logprobs: TopLogprobs | None = None
    tools: list[dict[str, Any]] | None = Field(default=None, description=_TOOLS_DOC)
    tool_choice: Literal["none", "auto", "required"] | dict[str, Any] | None = Field(default=None,
                                                                                    description=_TOOLS_DOC)
    parallel_tool_calls: StrictBool | None = None
    functions: list[dict[str, Any]] | None = Field(default=None, description=_TOOLS_DOC)
    function_call: Literal["none", "auto"] | dict[str, Any] | None = Field(default=None, description=_TOOLS_DOC)

    def wire(self) -> dict[str, Any]:
        """The body as sent: the parameters given (defaults left out), extras included, ``schema`` by its name."""
        return self.model_dump(mode="python", by_alias=True, exclude_unset=True)


# --- the answer ------------------------------------------------------------------------------------------


class AssistantMessage(_Answer):
    role: Literal["assistant"] = "assistant"
    content: str | None = None
    refusal: str | None = None


class Usage(_Answer):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0

    @classmethod
    def of(cls, prompt_tokens: int, completion_tokens: int) -> Usage:
        return cls(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                   total_tokens=prompt_tokens + completion_tokens)


class Choice(_Answer):
    index: int = 0
    message: AssistantMessage
    logprobs: dict[str, Any] | None = None
    finish_reason: str | None = Field(default=None, description="stop, length, tool_calls, content_filter "
                                      "(this server: always stop).")


class _CompletionFields(_Answer):
    """What an answer and each chunk of a streamed answer carry, in this order (``object`` and ``choices``
    are typed by each)."""

    id: str = ""
    object: str
    created: int = 0
    model: str = ""
    system_fingerprint: str | None = None
    choices: list[Any]
    usage: Usage | None = None


class ChatCompletion(_CompletionFields):
    object: Literal["chat.completion"] = "chat.completion"
    choices: list[Choice] = Field(min_length=1)


class ChoiceDelta(BaseModel):
    """A piece of the message: written without its unset (None) fields, as OpenAI writes it."""

    role: Literal["assistant"] | None = None
    content: str | None = None

    # no return annotation: the documented schema stays the model's own (an annotation would replace it)
    @model_serializer(mode="wrap")
    def _without_nones(self, handler: SerializerFunctionWrapHandler):
        return {key: value for key, value in handler(self).items() if value is not None}


class ChunkChoice(_Answer):
    index: int = 0
    delta: ChoiceDelta
    logprobs: dict[str, Any] | None = None
    finish_reason: str | None = None


class ChatCompletionChunk(_CompletionFields):
    """One server-sent event of a streamed answer (``data: <chunk>``; the stream ends with ``data: [DONE]``).
    ``usage`` is written only with ``stream_options.include_usage``: null on every chunk but the last."""

    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    choices: list[ChunkChoice]


# --- models ----------------------------------------------------------------------------------------------


class ModelCard(_Answer):
    model_config = ConfigDict(populate_by_name=True)
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    pass_: str = Field(alias="pass")


class ModelList(_Answer):
    object: Literal["list"] = "list"
    data: list[ModelCard]


# --- errors ----------------------------------------------------------------------------------------------


class ErrorBody(_Answer):
    """What went wrong: ``param`` names the offending parameter (``messages.0.content.turn``), ``code`` is
    OpenAI's (``invalid_type``, ``model_not_found`` ...). An upstream may write a number as the code."""

    message: str = ""
    type: str = ""
    param: str | None = None
    code: str | int | None = None


class ErrorResponse(BaseModel):
    """``{"error": {message, type, param, code}}``: every error under ``/v1``."""

    error: ErrorBody
