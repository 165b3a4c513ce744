"""The server's live figures and the dashboard (docs/metrics.md).

- ``GET /v1/stats``: the server's own figures: counts since start from the Prometheus registry of
  ``app.state.metrics`` (:meth:`server.metrics.Metrics.collect_stats`), rolling windows (1 min, 5 min, 1 h) and
  their time series, circuit states, the gate targets. Every p50/p95 is the shadow report's definition
  (nearest-rank, an observed value) read from :class:`server.metrics.LatencySketch` es (within 0.5% of the exact
  figure). With several workers these are the figures of the worker that answers (``worker.pid``); ``/metrics``
  aggregates them all.
- ``GET /dashboard``: a self-contained page (inline CSS/JS/SVG, no external asset) that polls
  ``/v1/stats`` and refreshes itself. It needs no key; with an API key set it asks for one and sends it
  on its data calls.
"""

from __future__ import annotations

import os
from importlib import resources
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from server.errors import JSONResponse
from server.metrics import Metrics

router = APIRouter(tags=["operations"])


# -- live figures ------------------------------------------------------------------------------------


def stats_body(app_state: Any) -> dict[str, Any]:
    """The ``/v1/stats`` body for an application's state."""
    metrics: Metrics = app_state.metrics
    circuits = metrics.circuit_states()  # noted in the current window slot too
    rolling = metrics.windows.snapshot()
    body = metrics.collect_stats()
    shadow = getattr(app_state, "shadow", None)
    body["shadow"]["enabled"] = shadow is not None
    if shadow is not None:
        body["shadow"]["runner"] = shadow.stats()
    started = getattr(app_state, "started_at", None)
    body["ts"] = rolling["now"]
    body["uptime_s"] = None if started is None else round(rolling["now"] - started, 1)
    settings = getattr(app_state, "settings", None)
    if settings is not None:
        body["engines"] = {"extract": settings.extraction_engine, "render": settings.render_engine,
                           "shadow": settings.shadow.engine if settings.shadow.enabled else None}
    body["circuits"] = {f"{engine}/{pass_}": state for (engine, pass_), state in circuits.items()}
    body["windows"] = rolling["windows"]
    body["series"] = rolling["series"]
    body["worker"] = {"pid": os.getpid(), "multiprocess": metrics.multiprocess}
    return body


@router.get("/v1/stats", summary="The server's own figures for the dashboard (JSON)")
async def stats(request: Request) -> JSONResponse:
    return JSONResponse(stats_body(request.app.state), headers={"Cache-Control": "no-store"})


# -- the dashboard ---------------------------------------------------------------------------------


def dashboard_html() -> str:
    return resources.files("server").joinpath("static/dashboard.html").read_text(encoding="utf-8")


@router.get("/dashboard", response_class=HTMLResponse, summary="Live dashboard (self-contained HTML)")
async def dashboard() -> HTMLResponse:
    return HTMLResponse(dashboard_html(), headers={"Cache-Control": "no-store"})
