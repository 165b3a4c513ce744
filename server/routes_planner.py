"""The planner endpoints (docs/api.md §2): ``/extract``, ``/render`` and their RFC names
``/extract_turn``, ``/render_widget_chat`` (a trailing slash answers the same). What a pass endpoint does
whatever API it speaks (engine, deadline, reading the planner's shapes, running the pass, shadow mode) is
in :mod:`server.passes`; this module adds the planner's request and response bodies.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from contracts.extract import ExtractOutput
from contracts.planner import InputNote, Notes
from contracts.render import RenderOutput
from contracts.turn import ExtractRequest, RenderRequest
from engines.agreement import widget_types as agreement_widget_types
from engines.base import FallbackReason
from engines.fallback import Served
from server import passes
from server.errors import FALLBACK_503, PLANNER_ERRORS, JSONResponse, fallback_detail
from server.passes import RenderAnswer, ToolSummarySource

router = APIRouter(tags=["planner"])


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


# --- response bodies ---------------------------------------------------------------------------------------


def widget_types(document: Any) -> list[str]:
    """The response's ``widget_types``: the document's widget types in order (those that are strings)."""
    return [t for t in agreement_widget_types(document) if isinstance(t, str)]


def llm_contract(served: Served) -> dict[str, Any]:
    contract = served.llm_contract()
    contract["fallback_detail"] = fallback_detail(served.error) if served.fallback_used else None
    return contract


def extract_body(served: Served, notes: list[dict[str, str]] | None = None) -> dict[str, Any]:
    return {"extract": served.document, "latency_ms": served.latency_ms, "schema_valid": served.schema_valid,
            "llm_contract": llm_contract(served), "input_notes": notes or []}


def render_body(answer: RenderAnswer) -> dict[str, Any]:
    s = answer.served
    return {"render": s.document, "latency_ms": s.latency_ms, "schema_valid": s.schema_valid,
            "widget_types": widget_types(s.document), "llm_contract": llm_contract(s),
            "input_notes": answer.notes, "tool_summary_source": answer.source,
            "fixtures_used": answer.source == "fixture"}


# --- endpoints ---------------------------------------------------------------------------------------------


async def extract(body: ExtractRequest, request: Request, x_engine: passes.XEngine = None,
                  x_timeout: passes.XTimeout = None) -> Response:
    engine = passes.resolve_engine(request, "extract", x_engine)
    deadline = passes.resolve_deadline(request, x_timeout)
    notes = Notes()
    turn = passes.normalised_turn(body.turn.engine_input(), notes)
    served = await passes.run_extract(request, turn, engine, deadline)
    noted = passes.record_notes(request, "extract", notes)
    if passes.serve_as_error(request, served):
        return passes.fallback_response(served)
    return JSONResponse(extract_body(served, noted), headers={"X-Fallback-Reason": served.fallback_reason or "none"},
                        background=passes.shadow_task(request, "extract", turn, served, served.document))


async def render(body: RenderRequest, request: Request, x_engine: passes.XEngine = None,
                 x_timeout: passes.XTimeout = None) -> Response:
    engine = passes.resolve_engine(request, "render", x_engine)
    deadline = passes.resolve_deadline(request, x_timeout)
    answer = await passes.answer_render(request, body, engine, ("body",), deadline)
    if answer.failed is not None:
        return passes.fallback_response(answer.failed)
    headers = {"X-Fallback-Reason": answer.served.fallback_reason or "none", "X-Tool-Summary-Source": answer.source}
    return JSONResponse(render_body(answer), headers=headers,
                        background=passes.shadow_task(request, "render", answer.turn, answer.served,
                                                      answer.extraction, answer.tool_summary))


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
