"""What every pass endpoint does, whichever API it speaks (the planner's ``/extract`` and ``/render``, the
OpenAI ``/v1/chat/completions``): pick the engine (``X-Engine``), set the deadline
(``X-Request-Timeout-Ms``), read what the live planner sends (:mod:`contracts.planner`), run a pass through
the app's :class:`~engines.fallback.PassRunner`, honour ``fallback.serve``, count the input notes and hand
the answered pass to shadow mode.

The engine and the deadline come from the headers :data:`XEngine` and :data:`XTimeout`, which each endpoint
declares and hands to :func:`resolve_engine` and :func:`resolve_deadline` once its body is valid: so a bad
body is a 422 before a bad header is a 400, and the OpenAI route learns its pass from the body. They are
not FastAPI dependencies (``Depends``) on purpose: a sub-dependency costs FastAPI's ``solve_dependencies``
about 10 us a request, some 6% of the CPU of a deterministic ``/render`` (docs/operations.md, section 6).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from fastapi import Header, Request
from starlette.background import BackgroundTask

from contracts.planner import (
    ExtractionShapeError,
    Notes,
    normalise_extraction,
    normalise_render_slot_state,
    normalise_tool_summary,
)
from contracts.turn import RenderRequest
from contracts.vocab import ENGINES
from engines.deterministic.fixtures import first_tool
from engines.fallback import PassRunner, Served
from server.errors import ApiError, JSONResponse, fallback_detail, fallback_error, field_errors, shape_error
from server.middleware.request_context import SCOPE_KEY

log = logging.getLogger("travel_slm.planner")

TIMEOUT_HEADER = "X-Request-Timeout-Ms"
#: the smallest and largest client budget the header may give (ms)
TIMEOUT_RANGE_MS = (1.0, 3_600_000.0)
ToolSummarySource = Literal["body", "turn", "fixture", "none"]

XEngine = Annotated[
    str | None,
    Header(alias="X-Engine", description="Per-request engine override: deterministic, slm or openai "
           "(any other value is refused with 400).", json_schema_extra={"enum": list(ENGINES)}),
]
XTimeout = Annotated[
    str | None,
    Header(alias=TIMEOUT_HEADER, description="The caller's own timeout for this HTTP call, in milliseconds "
           "(1 to 3600000). A model pass then ends, and falls back, fallback.deadline_margin_ms (or 10% of the "
           "budget, the larger) before it."),
]


# --- engine and deadline -----------------------------------------------------------------------------------


def context(request: Request) -> dict[str, Any]:
    """The per-request dict the request-context middleware logs and counts (request_id, pass, engine, fallback)."""
    ctx = request.scope.get(SCOPE_KEY)
    if ctx is None:
        ctx = request.scope[SCOPE_KEY] = {"request_id": None, "pass": None, "engine": None,
                                             "fallback_reason": None}
    return ctx


def resolve_engine(request: Request, pass_: str, override: str | None) -> str:
    """The engine of ``pass_`` for this request: ``X-Engine`` (any case; 400 naming it when unknown), else
    the configured one. Noted in the request's :func:`context` with the pass."""
    if override is None:
        engine: str = request.app.state.settings.engine_for(pass_)
    else:
        engine = override.strip().lower()
        if engine not in ENGINES:
            raise ApiError(400, f"unknown engine in X-Engine: expected one of {', '.join(ENGINES)}",
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


# --- running a pass ----------------------------------------------------------------------------------------


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


def serve_as_error(request: Request, served: Served) -> bool:
    """``fallback.serve = error`` and the pass fell back: the caller gets a 503, not the oracle's answer."""
    return bool(served.fallback_used and request.app.state.settings.fallback.serve == "error")


def fallback_response(served: Served) -> JSONResponse:
    return fallback_error(served.pass_name, served.engine, served.fallback_reason or "error",
                          fallback_detail(served.error))


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


# --- reading what the planner sends ------------------------------------------------------------------------


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


# --- the render request ------------------------------------------------------------------------------------


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
            noted = record_notes(request, "render", notes)
            return RenderAnswer(ex_served, turn, ex_served.document, None, "none", noted, failed=ex_served)
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
