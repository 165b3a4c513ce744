"""OpenAI-compatible endpoints (docs/api.md §3): ``/v1/models`` and ``/v1/chat/completions``.

``model`` selects the pass (``travel-extract``, ``travel-render`` or a configured alias); the last
``user`` message's content is the pass input as JSON (a ``Turn`` for extract, ``{turn, extraction?,
tool_summary?}`` for render); system messages are ignored. ``response_format`` may be absent,
``text``, ``json_object``, or ``json_schema`` with the pass's contract schema (the pydantic schema,
the exported file, or the strict form the ``openai`` engine sends); any other schema is refused
with 400, as is a foreign schema in vLLM's ``structured_outputs.json`` / ``guided_json``.

Request parameters are typed as OpenAI types them, strictly (``stream: "yes"`` is not a boolean): a wrong
type or value is a 400 whose ``error.param`` names it. ``stream: true`` is served as server-sent chunks;
``max_tokens`` / ``max_completion_tokens`` must be positive integers and are not applied (the answer is
always the whole contract document); ``tools``, ``tool_choice``, ``functions`` and ``logprobs`` are refused
with a 400 (the answer is the pass output, never a tool call), except an explicit ``tool_choice: "none"``.

The wire shapes (request, completion, chunk, model list) are the protocol models of :mod:`contracts.openai_api`,
which the ``openai`` engine speaks too; this module holds the serving logic only.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from pydantic import ValidationError

from contracts.openai_api import (
    GUIDED_PARAMETERS,
    RESPONSE_FORMAT_TYPES,
    STRUCTURED_OUTPUTS_KEYS,
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    Choice,
    ChoiceDelta,
    ChunkChoice,
    ModelCard,
    ModelList,
    Usage,
)
from contracts.planner import Notes
from contracts.strict import schema_matches_contract
from contracts.turn import RenderRequest, Turn
from contracts.vocab import CONTRACT_VERSION, PASSES
from engines.fallback import Served
from engines.shadow.redact import json_bytes, json_line
from server.errors import FALLBACK_503, OPENAI_ERRORS, ApiError, JSONResponse, validation_error
from server.passes import (
    XEngine,
    XTimeout,
    answer_render,
    context,
    fallback_response,
    normalised_turn,
    record_notes,
    resolve_deadline,
    resolve_engine,
    run_extract,
    serve_as_error,
    shadow_task,
)

router = APIRouter(prefix="/v1", tags=["openai"])

#: model id -> pass: travel-extract, travel-render
PASS_MODELS: dict[str, str] = {f"travel-{pass_}": pass_ for pass_ in PASSES}
_TOKEN = re.compile(r"\w+|[^\w\s]", re.UNICODE)
_CHUNK_CHARS = 96


# --- helpers ---------------------------------------------------------------------------------------------


def model_table(request: Request) -> dict[str, str]:
    """model id -> pass: the two pass models and the configured aliases."""
    return {**PASS_MODELS, **request.app.state.settings.model_aliases}


def _cards(request: Request) -> list[ModelCard]:
    created = request.app.state.started_at
    return [ModelCard(id=mid, created=created, owned_by="travel-slm", pass_=pass_)
            for mid, pass_ in model_table(request).items()]


def approx_tokens(text: str) -> int:
    """Token count when the engine has no tokenizer: words and punctuation marks."""
    return len(_TOKEN.findall(text))


def _check_schema(pass_: str, schema: Any, param: str) -> None:
    if not isinstance(schema, dict):
        raise ApiError(400, f"{param} must be a JSON Schema object", param=param, code="invalid_response_format")
    if not schema_matches_contract(pass_, schema):
        raise ApiError(400, f"{param} is not the {pass_} pass contract schema; this server only answers the "
                       "contract (send the schema from contracts/schemas, or no response_format)",
                       param=param, code="unsupported_response_format")


def check_response_format(pass_: str, body: ChatCompletionRequest) -> None:
    fmt = body.response_format
    if fmt is not None:
        if fmt.type == "json_schema":
            if fmt.json_schema is None or fmt.json_schema.schema_ is None:
                raise ApiError(400, "response_format json_schema needs json_schema.schema",
                               param="response_format.json_schema", code="invalid_response_format")
            _check_schema(pass_, fmt.json_schema.schema_, "response_format.json_schema.schema")
        elif fmt.type not in RESPONSE_FORMAT_TYPES:
            raise ApiError(400, f"response_format.type must be {', '.join(RESPONSE_FORMAT_TYPES[:-1])} or "
                           f"{RESPONSE_FORMAT_TYPES[-1]}", param="response_format.type", code="invalid_response_format")
    extra = body.model_extra or {}
    structured = extra.get("structured_outputs")
    if structured is not None:
        if not isinstance(structured, dict) or set(structured) - STRUCTURED_OUTPUTS_KEYS:
            raise ApiError(400, "structured_outputs: only {\"json\": <the pass contract schema>} is supported",
                           param="structured_outputs", code="invalid_response_format")
        if "json" in structured:
            _check_schema(pass_, structured["json"], "structured_outputs.json")
    for key in GUIDED_PARAMETERS:
        if extra.get(key) is None:
            continue
        if key != "guided_json":
            raise ApiError(400, f"{key} is not supported: the output follows the pass contract", param=key,
                           code="invalid_response_format")
        _check_schema(pass_, extra[key], key)


def check_unsupported(body: ChatCompletionRequest) -> None:
    """Parameters this server cannot honour are refused, never silently dropped: n > 1, tool calling
    (``tools``/``functions`` unless ``tool_choice``/``function_call`` is ``"none"``), log-probabilities."""
    if body.n not in (None, 1):
        raise ApiError(400, "only n=1 is supported", param="n", code="unsupported_parameter")
    for tools, choice, name, choice_name in ((body.tools, body.tool_choice, "tools", "tool_choice"),
                                             (body.functions, body.function_call, "functions", "function_call")):
        if choice not in (None, "none"):
            raise ApiError(400, f"{choice_name} is not supported: this server answers the pass contract as the "
                           "message content, never a tool call (only \"none\" is accepted)", param=choice_name,
                           code="unsupported_parameter")
        if tools and choice != "none":
            raise ApiError(400, f"{name} are not supported: this server answers the pass contract as the message "
                           f"content, never a tool call (send {choice_name}: \"none\" to keep the list)",
                           param=name, code="unsupported_parameter")
    if body.logprobs or body.top_logprobs:
        param = "logprobs" if body.logprobs else "top_logprobs"
        raise ApiError(400, "log-probabilities are not supported", param=param, code="unsupported_parameter")


def pass_input(pass_: str, body: ChatCompletionRequest) -> tuple[Any, int]:
    """The parsed, validated pass input from the last user message, and that message's index."""
    index = next((i for i in range(len(body.messages) - 1, -1, -1) if body.messages[i].role == "user"), None)
    if index is None:
        raise ApiError(400, "no user message: the last user message carries the pass input JSON", param="messages",
                       code="missing_user_message")
    param = f"messages.{index}.content"
    text = body.messages[index].text()
    if text is None:
        raise ApiError(400, "the user message has no text content", param=param, code="invalid_content")
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise ApiError(400, f"the user message content is not valid JSON: {exc.msg if hasattr(exc, 'msg') else exc}",
                       param=param, code="invalid_json") from None
    except RecursionError:  # e.g. arrays nested 5,000 deep: a client fault, never a 500
        raise ApiError(400, "the user message content is nested too deeply", param=param,
                       code="invalid_json") from None
    prefix = ("body", "messages", index, "content")
    try:
        if pass_ == "extract":
            return Turn.model_validate(raw), index
        return RenderRequest.model_validate(raw), index
    except ValidationError as exc:
        raise validation_error(exc, prefix) from None


def fingerprint(served: Served) -> str:
    return f"{served.engine}:{served.adapter}:{served.model}:{CONTRACT_VERSION}"


def usage(body: ChatCompletionRequest, served: Served, content: str) -> Usage:
    prompt = served.prompt_tokens
    if prompt <= 0:
        prompt = sum(approx_tokens(m.text() or "") for m in body.messages)
    completion = served.completion_tokens if served.completion_tokens > 0 and not served.fallback_used else 0
    if completion <= 0:
        completion = approx_tokens(content)
    return Usage.of(prompt, completion)


def _sse(chunk: ChatCompletionChunk, include_usage: bool) -> bytes:
    """One server-sent event; ``usage`` is written only when the client asked for it."""
    data = chunk.model_dump(exclude=None if include_usage else {"usage"})
    return b"data: " + json_bytes(data) + b"\n\n"


# --- endpoints -------------------------------------------------------------------------------------------


@router.get("/models", response_model=ModelList, response_model_by_alias=True,
            summary="The pass models and their aliases.", responses={401: OPENAI_ERRORS[401]})
async def list_models(request: Request) -> ModelList:
    return ModelList(data=_cards(request))


@router.get("/models/{model_id:path}", response_model=ModelCard, response_model_by_alias=True,
            summary="One model.", responses={401: OPENAI_ERRORS[401], 404: OPENAI_ERRORS[404]})
async def get_model(model_id: str, request: Request) -> ModelCard:
    for card in _cards(request):
        if card.id == model_id:
            return card
    raise ApiError(404, f"the model {model_id[:100]!r} does not exist", param="model", code="model_not_found")


@router.post(
    "/chat/completions",
    response_model=None,
    summary="Chat completions: `model` selects the pass, the last user message is the pass input JSON.",
    responses={200: {"model": ChatCompletion,
                     "content": {"text/event-stream": {"schema": {"type": "string"}}},
                     "description": "A chat.completion, or server-sent chunks when `stream` is true."},
               **OPENAI_ERRORS, **FALLBACK_503},
)
async def chat_completions(body: ChatCompletionRequest, request: Request, x_engine: XEngine = None,
                           x_timeout: XTimeout = None) -> Any:
    pass_ = model_table(request).get(body.model)
    if pass_ is None:
        raise ApiError(404, f"the model {body.model[:100]!r} does not exist: use travel-extract, travel-render "
                       "or a configured alias", param="model", code="model_not_found")
    context(request)["pass"] = pass_
    check_unsupported(body)
    check_response_format(pass_, body)
    parsed, index = pass_input(pass_, body)
    engine = resolve_engine(request, pass_, x_engine)
    deadline = resolve_deadline(request, x_timeout)
    extra_headers: dict[str, str] = {}
    if pass_ == "extract":
        notes = Notes()
        turn = normalised_turn(parsed.engine_input(), notes)
        served = await run_extract(request, turn, engine, deadline)
        record_notes(request, "extract", notes)
        if serve_as_error(request, served):
            return fallback_response(served)
        background = shadow_task(request, "extract", turn, served, served.document)
    else:
        answer = await answer_render(request, parsed, engine, ("body", "messages", index, "content"), deadline)
        if answer.failed is not None:
            return fallback_response(answer.failed)
        served = answer.served
        extra_headers = {"X-Tool-Summary-Source": answer.source}
        background = shadow_task(request, "render", answer.turn, served, answer.extraction, answer.tool_summary)

    content = json_line(served.document)  # lone surrogates escaped: the content always encodes
    completion_id = f"chatcmpl-{uuid.uuid4().hex}"
    created = int(time.time())
    fp = fingerprint(served)
    counts = usage(body, served, content)
    headers = {"X-Latency-Ms": f"{served.latency_ms:.1f}",
               "X-Fallback-Reason": served.fallback_reason or "none", **extra_headers}
    if not body.stream:
        completion = ChatCompletion(
            id=completion_id, created=created, model=body.model, system_fingerprint=fp,
            choices=[Choice(message=AssistantMessage(content=content), finish_reason="stop")], usage=counts,
        )
        return JSONResponse(completion.model_dump(), background=background, headers=headers)

    include_usage = bool(body.stream_options and body.stream_options.include_usage)

    def chunk(delta: ChoiceDelta | None, finish_reason: str | None = None, last: bool = False) -> bytes:
        choices = [] if delta is None else [ChunkChoice(delta=delta, finish_reason=finish_reason)]
        return _sse(ChatCompletionChunk(id=completion_id, created=created, model=body.model, system_fingerprint=fp,
                                        choices=choices, usage=counts if last else None), include_usage)

    async def events() -> AsyncIterator[bytes]:
        yield chunk(ChoiceDelta(role="assistant", content=""))
        for start in range(0, len(content), _CHUNK_CHARS):
            yield chunk(ChoiceDelta(content=content[start:start + _CHUNK_CHARS]))
        yield chunk(ChoiceDelta(), "stop")
        if include_usage:
            yield chunk(None, last=True)
        yield b"data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream", background=background,
                             headers={**headers, "Cache-Control": "no-cache"})
