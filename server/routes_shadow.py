"""The shadow report over HTTP (docs/shadow.md).

``GET /v1/shadow/report``: the shadow report as JSON (``?format=html``: the self-contained HTML page;
``?since=24h``; ``?min_turns=N``; ``?wait=true`` also waits for shadow runs in flight). The live figures
and the dashboard are :mod:`server.routes_stats`.
"""

from __future__ import annotations

import asyncio
import sqlite3

from fastapi import APIRouter, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, Response

from server.errors import JSONResponse

router = APIRouter()


@router.get(
    "/v1/shadow/report", summary="The shadow report of docs/shadow.md §8", response_model=None,
    tags=["operations"],
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
    from core.store_url import parse_store_url
    from engines.shadow.report import format_html, parse_since, report_from_store
    from engines.shadow.store import StoreURLError
    from engines.shadow.store_base import StoreReadError

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
