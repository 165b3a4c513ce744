"""The planner endpoints (service.md 2.1): ``/extract``, ``/render`` and their RFC names
``/extract_turn``, ``/render_widget_chat``. Also the helpers the OpenAI routes share: engine
selection (``X-Engine``), running a pass, and handing the answered pass to shadow mode.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError
from starlette.background import BackgroundTask

from contracts.extract import ExtractOutput
from contracts.render import RenderOutput
from contracts.turn import ExtractRequest, RenderRequest
from engines.base import FallbackReason
from engines.fallback import PassRunner, Served
from engines.registry import ENGINE_NAMES
from server.errors import PLANNER_ERRORS, ApiError, validation_error

log = logging.getLogger("travel_slm.planner")

router = APIRouter(tags=["planner"])


# --- documented response bodies --------------------------------------------------------------------------


class LlmContract(BaseModel):
    """Who answered the pass, and whether it fell back to the deterministic output."""

    engine: str
    adapter: str
    model: str
    fallback_used: bool
    fallback_reason: FallbackReason | None
    contract_version: str


class ExtractResponse(BaseModel):
    extract: ExtractOutput
    latency_ms: float = Field(description="Server-measured wall time of the pass, 1 decimal.")
    schema_valid: bool
    llm_contract: LlmContract


class RenderResponse(BaseModel):
    render: RenderOutput
    latency_ms: float = Field(description="Server-measured wall time of the render pass, 1 decimal.")
    schema_valid: bool
    widget_types: list[str]
    llm_contract: LlmContract


XEngine = Annotated[
    str | None,
    Header(alias="X-Engine", description="Per-request engine override: deterministic, slm or openai "
           "(any other value is refused with 400).", json_schema_extra={"enum": list(ENGINE_NAMES)}),
]


# --- shared helpers ----------------------------------------------------------------------------------------


def context(request: Request) -> dict[str, Any]:
    """The per-request dict the guard middleware logs and counts (request_id, pass, engine, fallback)."""
    ctx = request.scope.get("travel_slm")
    if ctx is None:
        ctx = request.scope["travel_slm"] = {"request_id": None, "pass": None, "engine": None,
                                             "fallback_reason": None}
    return ctx


def resolve_engine(request: Request, pass_: str, override: str | None) -> str:
    if override is None:
        engine: str = request.app.state.settings.engine_for(pass_)
    else:
        engine = override.strip().lower()
        if engine not in ENGINE_NAMES:
            raise ApiError(400, f"unknown engine in X-Engine: expected one of {', '.join(ENGINE_NAMES)}",
                           code="unknown_engine", param="X-Engine")
    ctx = context(request)
    ctx["pass"] = pass_
    ctx["engine"] = engine
    return engine


def _runner(request: Request) -> PassRunner:
    return request.app.state.runner  # type: ignore[no-any-return]


async def run_extract(request: Request, turn: dict[str, Any], engine: str) -> Served:
    try:
        served = await _runner(request).extract(turn, engine)
    except Exception as exc:
        log.error("extract pass failed", extra={"engine": engine, "error": type(exc).__name__}, exc_info=exc)
        raise ApiError(500, "the extract pass failed") from None
    if served.fallback_used:
        context(request)["fallback_reason"] = served.fallback_reason
    return served


async def run_render(
    request: Request, turn: dict[str, Any], extraction: dict[str, Any], tool_summary: dict[str, Any] | None,
    engine: str,
) -> Served:
    try:
        served = await _runner(request).render(turn, extraction, tool_summary, engine)
    except Exception as exc:
        log.error("render pass failed", extra={"engine": engine, "error": type(exc).__name__}, exc_info=exc)
        raise ApiError(500, "the render pass failed") from None
    context(request)["fallback_reason"] = served.fallback_reason
    return served


def checked_extraction(extraction: Any, prefix: tuple[str | int, ...]) -> dict[str, Any]:
    """A caller-supplied extraction must satisfy the contract: 422 with field messages otherwise."""
    try:
        ExtractOutput.model_validate(extraction, strict=True)
    except ValidationError as exc:
        raise validation_error(exc, prefix) from None
    return extraction  # type: ignore[no-any-return]


def shadow_task(
    request: Request, pass_: str, turn: dict[str, Any], served: Served, extraction: dict[str, Any] | None,
    tool_summary: dict[str, Any] | None = None,
) -> BackgroundTask | None:
    """A task that hands the answered pass to shadow mode after the response is sent (None when off)."""
    shadow = request.app.state.shadow
    if shadow is None:
        return None
    request_id = context(request).get("request_id")

    async def _submit() -> None:  # async: runs on the event loop, after the response went out
        try:
            shadow.submit(pass_, request_id, turn, served, extraction, tool_summary)
        except Exception:  # submit never raises; belt and braces for the live side
            log.exception("shadow submit failed")

    return BackgroundTask(_submit)


def widget_types(document: Any) -> list[str]:
    widgets = document.get("widgets") if isinstance(document, dict) else None
    if not isinstance(widgets, list):
        return []
    return [w["widget_type"] for w in widgets if isinstance(w, dict) and isinstance(w.get("widget_type"), str)]


def extract_body(served: Served) -> dict[str, Any]:
    return {"extract": served.document, "latency_ms": served.latency_ms, "schema_valid": served.schema_valid,
            "llm_contract": served.llm_contract()}


def render_body(served: Served) -> dict[str, Any]:
    return {"render": served.document, "latency_ms": served.latency_ms, "schema_valid": served.schema_valid,
            "widget_types": widget_types(served.document), "llm_contract": served.llm_contract()}


async def answer_render(
    request: Request, body: RenderRequest, engine: str, prefix: tuple[str | int, ...]
) -> tuple[Served, dict[str, Any], dict[str, Any], dict[str, Any] | None]:
    """``(served, turn, extraction, tool_summary)`` of a render request; extracts first when needed."""
    turn = body.turn.engine_input()
    if body.extraction is None:
        extraction = (await run_extract(request, turn, engine)).document
    else:
        extraction = checked_extraction(body.extraction, (*prefix, "extraction"))
    summary = body.tool_summary.model_dump() if body.tool_summary is not None else None
    served = await run_render(request, turn, extraction, summary, engine)
    return served, turn, extraction, summary


# --- endpoints ---------------------------------------------------------------------------------------------


async def extract(body: ExtractRequest, request: Request, x_engine: XEngine = None) -> JSONResponse:
    engine = resolve_engine(request, "extract", x_engine)
    turn = body.turn.engine_input()
    served = await run_extract(request, turn, engine)
    return JSONResponse(extract_body(served), background=shadow_task(request, "extract", turn, served, served.document))


async def render(body: RenderRequest, request: Request, x_engine: XEngine = None) -> JSONResponse:
    engine = resolve_engine(request, "render", x_engine)
    served, turn, extraction, summary = await answer_render(request, body, engine, ("body",))
    return JSONResponse(render_body(served),
                        background=shadow_task(request, "render", turn, served, extraction, summary))


_EXTRACT_DOC = ("Run the extract pass on a turn. `slot_state` may be the Firestore read envelope "
                "`{found, path, document: {data}}`.")
_RENDER_DOC = ("Run the render pass. Without `extraction` the extract pass runs first on the same engine; "
               "`tool_summary` comes from the body, then from `turn.tool_summary`, then from the deterministic "
               "fixtures.")

for _path, _name in (("/extract", "extract"), ("/extract_turn", "extract_turn")):
    router.add_api_route(_path, extract, methods=["POST"], response_model=None, operation_id=_name,
                         summary=_EXTRACT_DOC.split(".")[0], description=_EXTRACT_DOC,
                         responses={200: {"model": ExtractResponse}, **PLANNER_ERRORS})
for _path, _name in (("/render", "render"), ("/render_widget_chat", "render_widget_chat")):
    router.add_api_route(_path, render, methods=["POST"], response_model=None, operation_id=_name,
                         summary=_RENDER_DOC.split(".")[0], description=_RENDER_DOC,
                         responses={200: {"model": RenderResponse}, **PLANNER_ERRORS})
