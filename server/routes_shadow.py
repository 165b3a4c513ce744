"""Shadow report, live figures and the dashboard (service.md sections 2.3, 5 and 6).

- ``GET /v1/shadow/report``: the shadow report as JSON (``?format=html``: the self-contained HTML
  page; ``?since=24h``; ``?min_turns=N``; ``?wait=true`` also waits for shadow runs in flight).
- ``GET /v1/stats``: the server's own figures, computed from the Prometheus registry of
  ``app.state.metrics``: latency p50/p95 per pass and engine (interpolated inside histogram buckets
  exactly like ``histogram_quantile``), request, fallback and error counts, shadow runs and agreement.
- ``GET /dashboard``: a self-contained page (inline CSS/JS/SVG, no external asset) that polls
  ``/v1/stats`` and refreshes itself.
"""

from __future__ import annotations

import asyncio
import math
import sqlite3
import time
from importlib import resources
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, Response

from engines.agreement import FIELDS
from server.errors import JSONResponse

router = APIRouter(tags=["operations"])

PREFIX = "travel_slm_"


# -- figures from the registry ---------------------------------------------------------------------


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """Prometheus' ``histogram_quantile`` over cumulative ``(le, count)`` pairs (seconds in, seconds out).

    Linear interpolation inside the bucket holding rank ``q * total``; the first bucket starts at 0;
    a rank in the ``+Inf`` bucket returns the highest finite bound.
    """
    ordered = sorted(buckets)
    if not ordered or ordered[-1][1] <= 0:
        return None
    total = ordered[-1][1]
    rank = q * total
    prev_le, prev_count = 0.0, 0.0
    for le, cumulative in ordered:
        if cumulative >= rank:
            if math.isinf(le):
                return prev_le
            width = cumulative - prev_count
            if width <= 0:
                return le
            return prev_le + (le - prev_le) * (rank - prev_count) / width
        prev_le, prev_count = le, cumulative
    return prev_le


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 3)


def _registry(request: Request) -> Any:
    metrics = getattr(request.app.state, "metrics", None)
    registry = getattr(metrics, "registry", None)
    if registry is None:
        from prometheus_client import REGISTRY

        registry = REGISTRY
    return registry


def collect_stats(registry: Any) -> dict[str, Any]:
    """The dashboard's figures from a prometheus_client registry (cumulative since the process started)."""
    lat_buckets: dict[tuple[str, str], dict[float, float]] = {}
    lat_count: dict[tuple[str, str], float] = {}
    lat_sum: dict[tuple[str, str], float] = {}
    outcomes: dict[tuple[str, str], dict[str, float]] = {}
    requests: dict[tuple[str, str, str], float] = {}
    fallbacks: dict[tuple[str, str, str], float] = {}
    schema_invalid: dict[tuple[str, str], float] = {}
    shadow_runs: dict[tuple[str, str], float] = {}
    shadow_agree: dict[tuple[str, str, str], float] = {}
    shadow_buckets: dict[tuple[str, str], dict[float, float]] = {}
    inflight = 0.0
    for family in registry.collect():
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
                requests[(lab.get("pass", ""), lab.get("engine", ""), lab.get("status", ""))] = v
            elif name == PREFIX + "fallback_total":
                fallbacks[(lab.get("pass", ""), lab.get("engine", ""), lab.get("reason", ""))] = v
            elif name == PREFIX + "schema_invalid_total":
                schema_invalid[(lab.get("pass", ""), lab.get("engine", ""))] = v
            elif name == PREFIX + "inflight":
                inflight = v
            elif name == PREFIX + "shadow_runs_total":
                shadow_runs[(lab.get("pass", ""), lab.get("outcome", ""))] = v
            elif name == PREFIX + "shadow_agreement_total":
                shadow_agree[(lab.get("pass", ""), lab.get("field", ""), lab.get("result", ""))] = v
            elif name == PREFIX + "shadow_duration_seconds_bucket":
                per = shadow_buckets.setdefault((lab.get("pass", ""), lab.get("engine", "")), {})
                le = float(lab["le"])
                per[le] = per.get(le, 0.0) + v

    latency: dict[str, dict[str, dict[str, Any]]] = {}
    for (p, e), per in sorted(lat_buckets.items()):
        cum = sorted(per.items())
        count = lat_count.get((p, e), 0.0)
        if count <= 0:
            continue
        fb = outcomes.get((p, e), {}).get("fallback", 0.0)
        latency.setdefault(p, {})[e] = {
            "count": int(count),
            "p50_ms": _ms(histogram_quantile(0.50, cum)),
            "p95_ms": _ms(histogram_quantile(0.95, cum)),
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
                agreement.setdefault(p, {})[field] = {"match": match, "total": total, "rate": match / total}
    shadow_latency: dict[str, dict[str, dict[str, Any]]] = {}
    for (p, e), per in sorted(shadow_buckets.items()):
        cum = sorted(per.items())
        if cum and cum[-1][1] > 0:
            shadow_latency.setdefault(p, {})[e] = {"count": int(cum[-1][1]),
                                                   "p50_ms": _ms(histogram_quantile(0.50, cum)),
                                                   "p95_ms": _ms(histogram_quantile(0.95, cum))}
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
        "schema_invalid": {"total": int(sum(schema_invalid.values()))},
        "inflight": int(inflight),
        "shadow": {"runs": runs, "agreement": agreement, "latency": shadow_latency},
    }


@router.get("/v1/stats", summary="The server's own figures for the dashboard (JSON)")
async def stats(request: Request) -> JSONResponse:
    body = collect_stats(_registry(request))
    shadow = getattr(request.app.state, "shadow", None)
    body["shadow"]["enabled"] = shadow is not None
    if shadow is not None:
        body["shadow"]["runner"] = shadow.stats()
    started = getattr(request.app.state, "started_at", None)
    body["ts"] = time.time()
    body["uptime_s"] = None if started is None else round(time.time() - started, 1)
    settings = getattr(request.app.state, "settings", None)
    if settings is not None:
        body["engines"] = {"extract": settings.extraction_engine, "render": settings.render_engine,
                           "shadow": settings.shadow.engine if settings.shadow.enabled else None}
    return JSONResponse(body, headers={"Cache-Control": "no-store"})


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
    from engines.shadow.store import StoreURLError, store_path

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
        store_path(url)
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
        except sqlite3.Error as exc:  # a corrupt or unreadable store: shadow is degraded, the server is not
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
