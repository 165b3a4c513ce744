"""Shadow report, live figures and the dashboard (service.md sections 2.3, 5 and 6).

- ``GET /v1/shadow/report``: the shadow report as JSON (``?format=html``: the self-contained HTML
  page; ``?since=24h``; ``?min_turns=N``; ``?wait=true`` also waits for shadow runs in flight).
- ``GET /v1/stats``: the server's own figures: counts since start from the Prometheus registry of
  ``app.state.metrics``, rolling windows (1 min, 5 min, 1 h) and their time series, circuit states, the
  gate targets. Every p50/p95 is the shadow report's definition (nearest-rank, an observed value) read from
  :class:`server.metrics.LatencySketch` es (within 0.5% of the exact figure). With several workers these are
  the figures of the worker that answers (``worker.pid``); ``/metrics`` aggregates them all.
- ``GET /dashboard``: a self-contained page (inline CSS/JS/SVG, no external asset) that polls
  ``/v1/stats`` and refreshes itself. It needs no key; with an API key set it asks for one and sends it
  on its data calls.
"""

from __future__ import annotations

import asyncio
import math
import os
import sqlite3
from importlib import resources
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, Response

from engines.agreement import FIELDS
from engines.shadow.report import GATE_TARGETS, P95_TARGET_MS, SCHEMA_TARGET
from server.errors import JSONResponse
from server.metrics import Metrics

router = APIRouter(tags=["operations"])

PREFIX = "travel_slm_"


# -- figures from the registry ---------------------------------------------------------------------


def collect_stats(metrics: Metrics) -> dict[str, Any]:
    """The dashboard's figures since the process started: counts from the registry of ``metrics`` (this
    process), p50/p95 from its latency sketches."""
    lat_buckets: dict[tuple[str, str], dict[float, float]] = {}
    lat_count: dict[tuple[str, str], float] = {}
    lat_sum: dict[tuple[str, str], float] = {}
    outcomes: dict[tuple[str, str], dict[str, float]] = {}
    requests: dict[tuple[str, str, str], float] = {}
    fallbacks: dict[tuple[str, str, str], float] = {}
    schema_invalid: dict[str, float] = {}
    shadow_runs: dict[tuple[str, str], float] = {}
    shadow_agree: dict[tuple[str, str, str], float] = {}
    inflight = 0.0
    for family in metrics.registry.collect():
        for s in family.samples:
            name, lab, v = s.name, s.labels, float(s.value)
            if name == PREFIX + "request_duration_seconds_bucket":
                per = lat_buckets.setdefault((lab.get("pass", ""), lab.get("engine", "")), {})
                le = float(lab["le"])
                per[le] = per.get(le, 0.0) + v
            elif name == PREFIX + "request_duration_seconds_count":
                key = (lab.get("pass", ""), lab.get("engine", ""))
                lat_count[key] = lat_count.get(key, 0.0) + v
                out = outcomes.setdefault(key, {})
                out[lab.get("outcome", "")] = out.get(lab.get("outcome", ""), 0.0) + v
            elif name == PREFIX + "request_duration_seconds_sum":
                key = (lab.get("pass", ""), lab.get("engine", ""))
                lat_sum[key] = lat_sum.get(key, 0.0) + v
            elif name == PREFIX + "requests_total":
                key3 = (lab.get("pass", ""), lab.get("engine", ""), lab.get("status", ""))
                requests[key3] = requests.get(key3, 0.0) + v
            elif name == PREFIX + "fallback_total":
                key3 = (lab.get("pass", ""), lab.get("engine", ""), lab.get("reason", ""))
                fallbacks[key3] = fallbacks.get(key3, 0.0) + v
            elif name == PREFIX + "schema_invalid_total":
                cause = lab.get("cause", "")
                schema_invalid[cause] = schema_invalid.get(cause, 0.0) + v
            elif name == PREFIX + "inflight":
                inflight += v
            elif name == PREFIX + "shadow_runs_total":
                shadow_runs[(lab.get("pass", ""), lab.get("outcome", ""))] = v
            elif name == PREFIX + "shadow_agreement_total":
                shadow_agree[(lab.get("pass", ""), lab.get("field", ""), lab.get("result", ""))] = v

    quantiles = metrics.latency_totals("live")
    latency: dict[str, dict[str, dict[str, Any]]] = {}
    for (p, e), per in sorted(lat_buckets.items()):
        cum = sorted(per.items())
        count = lat_count.get((p, e), 0.0)
        if count <= 0:
            continue
        fb = outcomes.get((p, e), {}).get("fallback", 0.0)
        q = quantiles.get(p, {}).get(e, {})
        latency.setdefault(p, {})[e] = {
            "count": int(count),
            "p50_ms": q.get("p50_ms"),
            "p95_ms": q.get("p95_ms"),
            "mean_ms": round(lat_sum.get((p, e), 0.0) / count * 1000.0, 3),
            "fallback": int(fb),
            "fallback_rate": fb / count,
            "buckets": [[("+Inf" if math.isinf(le) else le), int(c)] for le, c in cum],
        }

    by_status: dict[str, int] = {}
    by_pass: dict[str, int] = {}
    for (p, _e, status), v in requests.items():
        by_status[status] = by_status.get(status, 0) + int(v)
        by_pass[p] = by_pass.get(p, 0) + int(v)
    total_requests = sum(by_status.values())
    errors = sum(n for st, n in by_status.items() if st.startswith("5"))
    client_errors = sum(n for st, n in by_status.items() if st.startswith("4"))

    fb_reason: dict[str, int] = {}
    fb_pass: dict[str, int] = {}
    for (p, _e, reason), v in fallbacks.items():
        fb_reason[reason] = fb_reason.get(reason, 0) + int(v)
        fb_pass[p] = fb_pass.get(p, 0) + int(v)
    served = int(sum(lat_count.values()))
    fb_total = sum(fb_reason.values())

    runs: dict[str, dict[str, int]] = {}
    for (p, outcome), v in shadow_runs.items():
        runs.setdefault(p, {"compared": 0, "fell_back": 0, "dropped": 0})[outcome] = int(v)
    agreement: dict[str, dict[str, dict[str, Any]]] = {}
    for p in sorted({k[0] for k in shadow_agree}):
        for field in FIELDS:
            match = int(shadow_agree.get((p, field, "match"), 0.0))
            total = match + int(shadow_agree.get((p, field, "mismatch"), 0.0))
            if total:
                target = GATE_TARGETS.get(field)
                agreement.setdefault(p, {})[field] = {
                    "match": match, "total": total, "rate": match / total, "target": target,
                    "meets_target": None if target is None else match / total >= target,
                }
    return {
        "latency": latency,
        "requests": {"total": total_requests, "by_status": dict(sorted(by_status.items())),
                     "by_pass": dict(sorted(by_pass.items()))},
        "errors": {"total": errors, "client_total": client_errors,
                   "rate": (errors / total_requests) if total_requests else None},
        "passes_served": served,
        "fallbacks": {"total": fb_total, "by_reason": dict(sorted(fb_reason.items())),
                      "by_pass": dict(sorted(fb_pass.items())),
                      "rate": (fb_total / served) if served else None},
        "schema_invalid": {"total": int(sum(schema_invalid.values())),
                           "by_cause": {k: int(v) for k, v in sorted(schema_invalid.items()) if v}},
        "inflight": int(inflight),
        "shadow": {"runs": runs, "agreement": agreement, "latency": metrics.latency_totals("shadow"),
                   "gate_targets": {"agreement": dict(GATE_TARGETS), "schema_validity": SCHEMA_TARGET,
                                    "p95_ms": P95_TARGET_MS}},
    }


def stats_body(app_state: Any) -> dict[str, Any]:
    """The ``/v1/stats`` body for an application's state."""
    metrics: Metrics = app_state.metrics
    circuits = metrics.circuit_states()  # noted in the current window slot too
    rolling = metrics.windows.snapshot()
    body = collect_stats(metrics)
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


# -- the shadow report -------------------------------------------------------------------------------


@router.get(
    "/v1/shadow/report", summary="The shadow report of service.md section 5", response_model=None,
    responses={200: {"description": "The report: JSON by default, a self-contained page with ?format=html",
                     "content": {"application/json": {"schema": {"type": "object"}},
                                 "text/html": {"schema": {"type": "string"}}}}},
)
async def shadow_report(
    request: Request,
    since: str | None = Query(default=None, description="24h, 7d, 30m or an ISO date/time"),
    min_turns: int | None = Query(default=None, ge=1, description="turns needed per class by the gate"),
    format: str = Query(default="json", pattern="^(json|html)$"),
    wait: bool = Query(default=False, description="also wait for shadow runs in flight"),
) -> Response:
    from engines.shadow.report import format_html, parse_since, report_from_store
    from engines.shadow.store import StoreURLError
    from engines.shadow.store_base import StoreReadError, parse_store_url

    settings = request.app.state.settings
    shadow = getattr(request.app.state, "shadow", None)
    try:
        since_ts = parse_since(since)
    except ValueError as exc:
        raise RequestValidationError([{"loc": ("query", "since"), "msg": str(exc), "type": "value_error",
                                       "input": since}]) from None
    url = settings.shadow.store
    if shadow is not None:
        if wait:
            await shadow.flush()
        else:
            await asyncio.to_thread(shadow.store.flush)
    try:
        parse_store_url(url)
    except StoreURLError as exc:
        return JSONResponse({"detail": str(exc)}, status_code=500)
    turns = min_turns if min_turns is not None else settings.shadow.min_turns_per_class
    extra_lost = shadow.store.unpersisted_losses() if shadow is not None else None
    lock = getattr(request.app.state, "report_lock", None)
    if lock is None:
        lock = request.app.state.report_lock = asyncio.Lock()
    async with lock:  # one report at a time: concurrent calls wait instead of multiplying the cost
        try:
            report = await asyncio.to_thread(report_from_store, url, since=since_ts, min_turns_per_class=turns,
                                             extra_lost=extra_lost)
        except (StoreReadError, sqlite3.Error) as exc:  # an unreadable store: shadow is degraded, the server is not
            detail = f"the shadow store cannot be read: {type(exc).__name__}: {exc}"[:300]
            return JSONResponse({"detail": detail}, status_code=503)
    if format == "html":
        return HTMLResponse(format_html(report))
    body = report.as_json()
    body["shadow_enabled"] = shadow is not None
    if shadow is not None:
        body["runner"] = shadow.stats()
    return JSONResponse(body)


# -- the dashboard ---------------------------------------------------------------------------------


def dashboard_html() -> str:
    return resources.files("server").joinpath("static/dashboard.html").read_text(encoding="utf-8")


@router.get("/dashboard", response_class=HTMLResponse, summary="Live dashboard (self-contained HTML)")
async def dashboard() -> HTMLResponse:
    return HTMLResponse(dashboard_html(), headers={"Cache-Control": "no-store"})
