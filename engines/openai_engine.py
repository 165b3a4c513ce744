"""The ``openai`` engine: any OpenAI-compatible upstream (OpenAI, a vLLM server, another instance of this server).

Requests carry ``response_format`` ``json_schema`` with the *strict form* of the pass contract
(:func:`contracts.strict.strict_schema`): every object closed and every key required, optional keys made nullable,
the render envelopes typed per widget. With ``structured_outputs = "vllm"`` the same schema also goes
in vLLM's own field ``structured_outputs: {"json": ...}`` (vLLM >= 0.12; ``guided_json`` before).
Answers are mapped back with :func:`contracts.strict.destrict` (nulls the strict form added are dropped) and then
validated by the fallback layer like every other engine's.

The key comes from the ``OPENAI_API_KEY`` environment variable only; it never appears in an error,
a log line, ``describe()`` or ``/healthz``.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, ClassVar

import httpx

from contracts.extract import SlotUpdates
from contracts.openai_api import (
    ChatCompletion,
    ChatCompletionRequest,
    ChatMessage,
    ErrorResponse,
    JsonSchemaSpec,
    ResponseFormat,
    Usage,
)
from contracts.strict import destrict, strict_schema, warm
from contracts.vocab import EVENT_TYPES, MISSING_VALUES, PASSES, TOOLS
from core.settings import OpenAISettings
from engines.base import Engine, EngineError, PassOutput
from engines.shadow.redact import configured_secrets, json_bytes, scrub_secrets

#: upstream statuses that mean "this request", not "this upstream": they never count toward the breaker
#: (LiteLLM's cooldowns count 401, 404, 408, 429 and 5xx, not these)
CLIENT_STATUSES = frozenset({400, 413, 415, 422})
#: default cap on one upstream answer (bytes); a longer answer is cut there and falls back as ``truncated``
DEFAULT_MAX_RESPONSE_BYTES = 1024 * 1024


class ClientInputError(EngineError):
    """The pass failed because of the caller's input (it could not be sent, or the upstream refused it with
    a 4xx), not because of the upstream: a fallback, but never a failure of the circuit breaker."""

    counts_toward_breaker = False


# --- prompts -------------------------------------------------------------------------------------------

#: the pass prompts; every list in them comes from the contract (vocabularies and models)
SYSTEM_PROMPTS: dict[str, str] = {
    "extract": (
        "You are the extraction pass of a travel planner. The user message is one planner turn as JSON: "
        f"event_type ({', '.join(EVENT_TYPES[:-1])} or {EVENT_TYPES[-1]}), event_payload (free text under "
        "text/message/label, widget data under submitted_value/value, a CTA id under action_id) and slot_state "
        "(the slots known before the turn). Answer with one JSON object {slot_updates, tool_requests, "
        f"render_intent}}: slot_updates is a shallow patch of slot_state ({', '.join(SlotUpdates.model_fields)}); "
        "tool_requests holds zero or one request for one "
        f"of the tools {', '.join(TOOLS)}; render_intent names what to show next, with missing "
        f"({', '.join(MISSING_VALUES)} in that order) only for collect_missing and a reason only for error or clarify. "
        "Follow the JSON schema exactly."
    ),
    "render": (
        "You are the render pass of a travel planner. The user message is JSON {turn, extraction, tool_summary}: "
        "the planner turn, the extraction of that turn and the normalised result of the tool it requested "
        "({ok, tool, data}). Answer with one JSON object {bot_message, widgets}: a short assistant message and "
        "one or two widget envelopes {schema_version: 1, widget_type, variant, payload} that show the tool data "
        "or ask for what is missing. A failed tool (ok false) is shown with an error_card. "
        "Follow the JSON schema exactly."
    ),
}


def _error_message(raw: bytes) -> str:
    """The message of an upstream's error answer (``{"error": {"message": ...}}``), or ""."""
    try:
        return ErrorResponse.model_validate(json.loads(raw)).error.message
    except (ValueError, RecursionError):
        return ""


def _key_from_env() -> str | None:
    key = os.environ.get("OPENAI_API_KEY")
    return key.strip() if key and key.strip() else None


class OpenAIEngine(Engine):
    """An OpenAI-compatible upstream over async HTTP."""

    name: ClassVar[str] = "openai"
    adapter = "http"
    constrained = True

    def __init__(self, settings: OpenAISettings, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.settings = settings
        self.model = (settings.model_extract if settings.model_extract == settings.model_render
                      else f"{settings.model_extract}|{settings.model_render}")
        self._api_key = _key_from_env()
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._start_error: str | None = None
        self._templates: dict[str, dict[str, Any]] = {}

    def model_for(self, pass_: str) -> str:
        return self.settings.model_for(pass_)

    async def start(self) -> None:
        base = self.settings.base_url.rstrip("/") + "/"
        headers = {"Accept": "application/json", "User-Agent": "travel-slm"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        warm()  # the schemas and the request templates now, so that the first request does not pay for them
        for pass_ in PASSES:
            self._template(pass_)
        self._client = httpx.AsyncClient(
            base_url=base, headers=headers, transport=self._transport,
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
            timeout=httpx.Timeout(max(self.settings.timeout_ms_extract, self.settings.timeout_ms_render) / 1000.0),
        )

    def readiness(self) -> tuple[bool, str]:
        if self._client is None:
            return False, "openai: client not started"
        return True, "ready"

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "model_extract": self.settings.model_extract,
                "model_render": self.settings.model_render, "api_key_set": self._api_key is not None,
                "structured_outputs": self.settings.structured_outputs}

    def request_template(self, pass_: str) -> ChatCompletionRequest:
        """The upstream request of a pass but for its user message: the pass prompt, the strict form of the pass
        contract as ``response_format`` (and as vLLM's ``structured_outputs`` when configured), the output cap."""
        schema = strict_schema(pass_)
        extra: dict[str, Any] = {}
        if self.settings.structured_outputs == "vllm":
            extra["structured_outputs"] = {"json": schema}
        cap = self.settings.max_tokens(pass_)
        if cap is not None:
            extra["max_tokens"] = cap
        return ChatCompletionRequest(
            model=self.settings.model_for(pass_),
            messages=[ChatMessage(role="system", content=SYSTEM_PROMPTS[pass_])],
            response_format=ResponseFormat(type="json_schema", json_schema=JsonSchemaSpec(
                name=f"travel_{pass_}", strict=True, schema_=schema)),
            temperature=0,
            n=1,
            **extra,
        )

    def _template(self, pass_: str) -> dict[str, Any]:
        template = self._templates.get(pass_)
        if template is None:
            template = self._templates[pass_] = self.request_template(pass_).wire()
        return template

    def request_body(self, pass_: str, user_content: dict[str, Any]) -> dict[str, Any]:
        """The request as sent (JSON-ready, only the parameters set): the pass's template, built once, with the
        pass input as the user message's JSON. Nested values are shared with the template: do not mutate them."""
        template = self._template(pass_)
        user = ChatMessage(role="user", content=json.dumps(user_content, ensure_ascii=False, separators=(",", ":")))
        return {**template, "messages": [*template["messages"], user.model_dump(exclude_unset=True)]}

    def _scrub(self, text: str) -> str:
        """An error text without any echo of a secret (the upstream key, whole or in part; see
        :func:`engines.shadow.redact.scrub_secrets`), cut to 300 characters."""
        return scrub_secrets(text, configured_secrets((self._api_key,)))[:300]

    def max_response_bytes(self) -> int:
        cap = getattr(self.settings, "max_response_bytes", None)
        return int(cap) if isinstance(cap, int) and cap > 0 else DEFAULT_MAX_RESPONSE_BYTES

    async def _post(self, payload: bytes, timeout_s: float) -> tuple[int, bytes]:
        """POST the request; read at most ``max_response_bytes`` of the answer (streamed, never more)."""
        assert self._client is not None
        cap = self.max_response_bytes()
        chunks: list[bytes] = []
        size = 0
        async with self._client.stream("POST", "chat/completions", content=payload, timeout=timeout_s,
                                       headers={"Content-Type": "application/json"}) as response:
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > cap:
                    raise EngineError("truncated", f"upstream answer exceeds the cap of {cap} bytes")
                chunks.append(chunk)
            return response.status_code, b"".join(chunks)

    async def _complete(self, pass_: str, user_content: dict[str, Any]) -> PassOutput:
        if self._client is None:
            raise EngineError("unavailable", "openai engine not started")
        timeout_s = self.settings.timeout_ms(pass_) / 1000.0
        try:  # any JSON the caller sent (lone surrogates included) can be sent on: escaped, never an error
            payload = json_bytes(self.request_body(pass_, user_content))
        except (TypeError, ValueError, RecursionError) as exc:
            raise ClientInputError("error", f"the pass input cannot be sent upstream: {type(exc).__name__}") from None
        started = time.perf_counter()
        try:
            status, raw = await self._post(payload, timeout_s)
        except httpx.TimeoutException:
            raise EngineError("timeout", f"upstream did not answer within {timeout_s * 1000:.0f} ms") from None
        except httpx.HTTPError as exc:
            raise EngineError("error", self._scrub(f"upstream unreachable: {type(exc).__name__}")) from None
        extra_ms = round((time.perf_counter() - started) * 1000.0, 1)
        if status >= 400:
            error_class = ClientInputError if status in CLIENT_STATUSES else EngineError
            raise error_class("error", self._scrub(f"upstream HTTP {status}: {_error_message(raw)}"))
        try:
            body = ChatCompletion.model_validate(json.loads(raw))
        except (ValueError, RecursionError):  # not JSON, or not a chat.completion (pydantic's error is a ValueError)
            raise EngineError("error", "upstream answer is not a chat.completion") from None
        choice = body.choices[0]
        content = choice.message.content
        finish = choice.finish_reason or "stop"
        usage = body.usage or Usage()
        prompt_tokens = usage.prompt_tokens
        completion_tokens = usage.completion_tokens
        extra = {"upstream_ms": extra_ms, "upstream_model": body.model[:100],
                 "system_fingerprint": (body.system_fingerprint or "")[:200]}
        if finish == "length":
            document = None
            if isinstance(content, str):
                try:
                    document = json.loads(content)
                except ValueError:
                    document = None
            return PassOutput(document=document, finish_reason="length", prompt_tokens=prompt_tokens,
                              completion_tokens=completion_tokens, text=content, extra=extra)
        if content is None:
            raise EngineError("error", "upstream refused" if choice.message.refusal else "upstream answer has no content")
        try:
            document = json.loads(content)
        except ValueError as exc:
            raise EngineError("invalid_json", f"upstream content is not JSON: {exc}"[:300]) from None
        return PassOutput(
            document=destrict(pass_, document), finish_reason="stop", prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens, text=content, extra=extra,
        )

    async def extract(self, turn: dict[str, Any]) -> PassOutput:
        return await self._complete("extract", turn)

    async def render(
        self, turn: dict[str, Any], extraction: dict[str, Any], tool_summary: dict[str, Any]
    ) -> PassOutput:
        return await self._complete("render", {"turn": turn, "extraction": extraction, "tool_summary": tool_summary})

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
