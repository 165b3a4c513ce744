"""The planner endpoints (service.md 2.1): ``/extract``, ``/render`` and their RFC names
``/extract_turn``, ``/render_widget_chat`` (a trailing slash answers the same). Also the helpers the
OpenAI routes share: engine selection (``X-Engine``), the request deadline (``X-Request-Timeout-Ms``),
normalising what the live planner sends (:mod:`contracts.planner`), running a pass, ``fallback.serve``,
and handing the answered pass to shadow mode.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field
from starlette.background import BackgroundTask

from contracts.extract import ExtractOutput
from contracts.planner import (
    ExtractionShapeError,
    InputNote,
    Notes,
    normalise_extraction,
    normalise_render_slot_state,
    normalise_tool_summary,
)
from contracts.render import RenderOutput
from contracts.turn import ExtractRequest, RenderRequest
from engines.base import FallbackReason
from engines.deterministic.fixtures import first_tool
from engines.fallback import PassRunner, Served
from engines.registry import ENGINE_NAMES
from server.errors import (
    FALLBACK_503,
    PLANNER_ERRORS,
    ApiError,
    JSONResponse,
    fallback_detail,
    fallback_error,
    field_errors,
    shape_error,
)

log = logging.getLogger("travel_slm.planner")

router = APIRouter(tags=["planner"])

TIMEOUT_HEADER = "X-Request-Timeout-Ms"
#: the smallest and largest client budget the header may give (ms)
TIMEOUT_RANGE_MS = (1.0, 3_600_000.0)
ToolSummarySource = Literal["body", "turn", "fixture", "none"]


# --- documented response bodies --------------------------------------------------------------------------


class LlmContract(BaseModel):
    """Who answered the pass, and whether it fell back to the deterministic output."""

    engine: str
    adapter: str
    model: str
    fallback_used: bool
    fallback_reason: FallbackReason | None
    fallback_detail: str | None = Field(description="Why it fell back: one line, redacted, at most 300 "
                                        "characters; null when it did not.")
    contract_version: str


_NOTES_DOC = ("What the server mapped or dropped to read the request (live planner shapes: its tool_result, "
              "slot aliases, unknown keys, tool arguments ...): one entry per rule applied, never the value.")


class ExtractResponse(BaseModel):
    extract: ExtractOutput
    latency_ms: float = Field(description="Server-measured wall time of the pass, 1 decimal.")
    schema_valid: bool
    llm_contract: LlmContract
    input_notes: list[InputNote] = Field(description=_NOTES_DOC)


class RenderResponse(BaseModel):
    render: RenderOutput
    latency_ms: float = Field(description="Server-measured wall time of the render pass, 1 decimal.")
    schema_valid: bool
    widget_types: list[str]
    llm_contract: LlmContract
    input_notes: list[InputNote] = Field(description=_NOTES_DOC)
    tool_summary_source: ToolSummarySource = Field(description="Where the tool data came from: the body's "
                                                   "tool_summary, the turn's, the oracle's fixtures (no summary "
                                                   "was sent and the extraction requests a tool), or none (no "
                                                   "summary and no tool). Also the X-Tool-Summary-Source header.")
    fixtures_used: bool = Field(description="True when the widgets were filled from the oracle's fixtures, "
                                "not from provider data.")


XEngine = Annotated[
    str | None,
    Header(alias="X-Engine", description="Per-request engine override: deterministic, slm or openai "
           "(any other value is refused with 400).", json_schema_extra={"enum": list(ENGINE_NAMES)}),
]
XTimeout = Annotated[
    str | None,
    Header(alias=TIMEOUT_HEADER, description="The caller's own timeout for this HTTP call, in milliseconds "
           "(1 to 3600000). A model pass then ends, and falls back, fallback.deadline_margin_ms (or 10% of the "
           "budget, the larger) before it."),
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


def resolve_deadline(request: Request, header: str | None) -> float | None:
    """The ``time.monotonic()`` instant a model pass must end by, from ``X-Request-Timeout-Ms``.

    Rule: the caller's budget counts from when the server received the request; the pass ends
    ``max(fallback.deadline_margin_ms, 10% of the budget)`` before it, leaving time for the fallback and
    the response to reach the caller. Absent header: no deadline (the pass timeouts alone apply).
    """
    if header is None:
        return None
    try:
        budget = float(header.strip())
    except ValueError:
        budget = float("nan")
    low, high = TIMEOUT_RANGE_MS
    if not (low <= budget <= high):
        raise ApiError(400, f"{TIMEOUT_HEADER} must be a number of milliseconds from {low:.0f} to {high:.0f}",
                       code="invalid_header", param=TIMEOUT_HEADER)
    margin = max(float(request.app.state.settings.fallback.deadline_margin_ms), 0.1 * budget)
    started = context(request).get("started")
    started = started if isinstance(started, float) else time.monotonic()
    return started + (budget - margin) / 1000.0


def _runner(request: Request) -> PassRunner:
    return request.app.state.runner  # type: ignore[no-any-return]


def _note_fallback(request: Request, served: Served) -> None:
    ctx = context(request)
    ctx["fallback_reason"] = served.fallback_reason
    ctx["fallback_detail"] = fallback_detail(served.error) if served.fallback_used else None


async def run_extract(request: Request, turn: dict[str, Any], engine: str, deadline: float | None = None) -> Served:
    try:
        served = await _runner(request).extract(turn, engine, deadline=deadline)
    except Exception as exc:
        log.error("extract pass failed", extra={"engine": engine, "error": type(exc).__name__}, exc_info=exc)
        raise ApiError(500, "the extract pass failed") from None
    if served.fallback_used:
        _note_fallback(request, served)
    return served


async def run_render(
    request: Request, turn: dict[str, Any], extraction: dict[str, Any], tool_summary: dict[str, Any] | None,
    engine: str, deadline: float | None = None,
) -> Served:
    try:
        served = await _runner(request).render(turn, extraction, tool_summary, engine, deadline=deadline)
    except Exception as exc:
        log.error("render pass failed", extra={"engine": engine, "error": type(exc).__name__}, exc_info=exc)
        raise ApiError(500, "the render pass failed") from None
    _note_fallback(request, served)
    return served


def llm_contract(served: Served) -> dict[str, Any]:
    contract = served.llm_contract()
    contract["fallback_detail"] = fallback_detail(served.error) if served.fallback_used else None
    return contract


def serve_as_error(request: Request, served: Served) -> bool:
    """``fallback.serve = error`` and the pass fell back: the caller gets a 503, not the oracle's answer."""
    return bool(served.fallback_used and request.app.state.settings.fallback.serve == "error")


def fallback_response(served: Served) -> JSONResponse:
    return fallback_error(served.pass_name, served.engine, served.fallback_reason or "error",
                          fallback_detail(served.error))


def record_notes(request: Request, pass_: str, notes: Notes) -> list[dict[str, str]]:
    """Count the notes (``travel_slm_input_notes_total``) and return them for the response body."""
    if notes.items:
        request.app.state.metrics.input_notes(pass_, notes.items)
        context(request)["input_notes"] = len(notes.items)
    return notes.dump()


def normalised_turn(turn: dict[str, Any], notes: Notes) -> dict[str, Any]:
    """``turn.tool_summary`` (ours or the planner's tool_result) in the internal ``{ok, tool, data}``, and the
    slot values both passes read (region, dates, party, picked offer) of a usable type: converted where they
    can be, else dropped, each with a note (the same for the extract pass as for the render)."""
    out = dict(turn)
    if isinstance(turn.get("tool_summary"), dict):
        out["tool_summary"] = normalise_tool_summary(turn["tool_summary"], notes, "turn.tool_summary")
    if isinstance(turn.get("slot_state"), dict):
        out["slot_state"] = normalise_render_slot_state(turn["slot_state"], (), notes)
    return out


def checked_extraction(extraction: Any, prefix: tuple[str | int, ...], notes: Notes) -> tuple[dict[str, Any],
                                                                                              list[str]]:
    """A caller-supplied extraction in any live shape -> the contract's, and the slots it clears with null;
    422 (400 on the OpenAI API) naming the field only when it is not an object with slot_updates,
    tool_requests and render_intent."""
    try:
        return normalise_extraction(extraction, notes)
    except ExtractionShapeError as exc:
        raise shape_error(field_errors(exc.errors, prefix)) from None


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


def extract_body(served: Served, notes: list[dict[str, str]] | None = None) -> dict[str, Any]:
    return {"extract": served.document, "latency_ms": served.latency_ms, "schema_valid": served.schema_valid,
            "llm_contract": llm_contract(served), "input_notes": notes or []}


@dataclass
class RenderAnswer:
    """An answered render request: the served pass and what it was computed from."""

    served: Served
    turn: dict[str, Any]
    extraction: dict[str, Any]
    tool_summary: dict[str, Any] | None
    source: ToolSummarySource
    notes: list[dict[str, str]] = field(default_factory=list)
    failed: Served | None = None
    """The pass that fell back under ``fallback.serve = error`` (the extract run first, or the render)."""

    def body(self) -> dict[str, Any]:
        s = self.served
        return {"render": s.document, "latency_ms": s.latency_ms, "schema_valid": s.schema_valid,
                "widget_types": widget_types(s.document), "llm_contract": llm_contract(s),
                "input_notes": self.notes, "tool_summary_source": self.source,
                "fixtures_used": self.source == "fixture"}

    def headers(self) -> dict[str, str]:
        return {"X-Fallback-Reason": self.served.fallback_reason or "none", "X-Tool-Summary-Source": self.source}


async def answer_render(
    request: Request, body: RenderRequest, engine: str, prefix: tuple[str | int, ...], deadline: float | None = None,
) -> RenderAnswer:
    """Normalise a render request (live planner shapes included), extract first when needed, render."""
    notes = Notes()
    turn = normalised_turn(body.turn.engine_input(), notes)
    clears: list[str] = []
    if body.extraction is None:
        ex_served = await run_extract(request, turn, engine, deadline)
        if serve_as_error(request, ex_served):
            return RenderAnswer(ex_served, turn, ex_served.document, None, "none", record_notes(request, "render", notes),
                                failed=ex_served)
        extraction = ex_served.document
    else:
        extraction, clears = checked_extraction(body.extraction, (*prefix, "extraction"), notes)
    summary = (normalise_tool_summary(body.tool_summary.model_dump(), notes, "tool_summary")
               if body.tool_summary is not None else None)
    source: ToolSummarySource
    if summary is not None:
        source = "body"
    elif isinstance(turn.get("tool_summary"), dict):
        source = "turn"
    else:
        source = "fixture" if first_tool(extraction) else "none"
    if source == "fixture" and request.app.state.settings.render.fixtures == "refuse":
        loc = [*prefix, "tool_summary"]
        raise ApiError(422, "tool_summary: required (render.fixtures = refuse: the oracle's fixtures are not "
                       "served; send the provider's tool_result)", param="tool_summary",
                       detail=[{"loc": loc, "msg": "Field required: render.fixtures = refuse", "type": "missing"}],
                       code="missing_required_parameter", openai_status=400)
    render_turn = {**turn, "slot_state": normalise_render_slot_state(turn.get("slot_state") or {}, clears, notes)}
    served = await run_render(request, render_turn, extraction, summary, engine, deadline)
    answer = RenderAnswer(served, render_turn, extraction, summary, source, record_notes(request, "render", notes))
    if serve_as_error(request, served):
        answer.failed = served
    return answer


# --- endpoints ---------------------------------------------------------------------------------------------


async def extract(body: ExtractRequest, request: Request, x_engine: XEngine = None,
                  x_timeout: XTimeout = None) -> Response:
    engine = resolve_engine(request, "extract", x_engine)
    deadline = resolve_deadline(request, x_timeout)
    notes = Notes()
    turn = normalised_turn(body.turn.engine_input(), notes)
    served = await run_extract(request, turn, engine, deadline)
    noted = record_notes(request, "extract", notes)
    if serve_as_error(request, served):
        return fallback_response(served)
    return JSONResponse(extract_body(served, noted), headers={"X-Fallback-Reason": served.fallback_reason or "none"},
                        background=shadow_task(request, "extract", turn, served, served.document))


async def render(body: RenderRequest, request: Request, x_engine: XEngine = None,
                 x_timeout: XTimeout = None) -> Response:
    engine = resolve_engine(request, "render", x_engine)
    deadline = resolve_deadline(request, x_timeout)
    answer = await answer_render(request, body, engine, ("body",), deadline)
    if answer.failed is not None:
        return fallback_response(answer.failed)
    return JSONResponse(answer.body(), headers=answer.headers(),
                        background=shadow_task(request, "render", answer.turn, answer.served, answer.extraction,
                                               answer.tool_summary))


_EXTRACT_DOC = ("Run the extract pass on a turn. `slot_state` may be the Firestore read envelope "
                "`{found, path, document: {data}}`.")
_RENDER_DOC = ("Run the render pass. Without `extraction` the extract pass runs first on the same engine; "
               "`tool_summary` comes from the body, then from `turn.tool_summary` (ours `{ok, tool, data}` or the "
               "planner's tool_result, cards at the top level), then from the deterministic fixtures "
               "(`fixtures_used`, header `X-Tool-Summary-Source`; refused with 422 under render.fixtures = "
               "refuse). A live planner extraction is accepted in any of its shapes; what was mapped or dropped "
               "is listed in `input_notes`.")

for _path, _name in (("/extract", "extract"), ("/extract_turn", "extract_turn")):
    router.add_api_route(_path, extract, methods=["POST"], response_model=None, operation_id=_name,
                         summary=_EXTRACT_DOC.split(".")[0], description=_EXTRACT_DOC,
                         responses={200: {"model": ExtractResponse}, **PLANNER_ERRORS, **FALLBACK_503})
for _path, _name in (("/render", "render"), ("/render_widget_chat", "render_widget_chat")):
    router.add_api_route(_path, render, methods=["POST"], response_model=None, operation_id=_name,
                         summary=_RENDER_DOC.split(".")[0], description=_RENDER_DOC,
                         responses={200: {"model": RenderResponse}, **PLANNER_ERRORS, **FALLBACK_503})
