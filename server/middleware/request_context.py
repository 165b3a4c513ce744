"""The outermost ASGI middleware: what every request gets, whatever answers it.

The tracing span, HEAD on the probes, the trailing slash on the pass paths, the JSON content type on them,
the request id (the client's ``x-request-id`` when well formed, else a new one; sent back on every answer),
the per-request context that routes and passes fill in (``scope["travel_slm"]``), the in-flight gauge and
request counters of the pass paths, and one access-log line per request (no user text).
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.logs import access_log
from server.metrics import Metrics
from server.tracing import Tracing

#: HTTP paths that answer a pass (request counters, in-flight gauge); the pass is known from the path
#: for the planner endpoints and set by the route for /v1/chat/completions.
PASS_PATHS: dict[str, str | None] = {
    "/extract": "extract", "/extract_turn": "extract", "/render": "render", "/render_widget_chat": "render",
    "/v1/chat/completions": None,
}
#: the paths the access log and the request span name; any other is logged as ``other``
LOGGED_PATHS = frozenset({*PASS_PATHS, "/healthz", "/readyz", "/metrics", "/v1/models", "/docs", "/openapi.json",
                          "/dashboard", "/v1/shadow/report", "/v1/stats", "/version"})
#: the probe and scrape paths whose successful access-log lines ``log_probes = false`` mutes.
PROBE_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
#: where the per-request context lives in the ASGI scope
SCOPE_KEY = "travel_slm"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


class RequestContextMiddleware:
    """Pure ASGI: request id, request context, request metrics, tracing span and access log."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics, log_probes: bool = True,
                 tracing: Tracing | None = None) -> None:
        self.app = app
        self.metrics = metrics
        self.log_probes = log_probes
        self.tracing = tracing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.tracing is None:
            await self._serve(scope, receive, send, None)
            return
        with self.tracing.request_span(scope) as span:  # the passes' spans are its children
            await self._serve(scope, receive, send, span)

    async def _serve(self, scope: Scope, receive: Receive, send: Send, span: Any) -> None:
        method = str(scope.get("method"))
        if method == "HEAD" and scope.get("path") in ("/healthz", "/readyz"):
            # probes may use HEAD (Kubernetes httpGet does not, load balancers do): the GET route, no body
            scope = {**scope, "method": "GET"}
            send = _without_body(send)
        started = time.perf_counter()
        path: str = scope.get("path", "")
        if len(path) > 1 and path.endswith("/") and path.rstrip("/") in PASS_PATHS:
            # POST /extract/ answers like /extract (no 307 redirect the planner's client would not follow)
            path = path.rstrip("/")
            scope["path"] = path
            scope["raw_path"] = path.encode("latin-1")
        request_id: str | None = None
        json_typed = False
        for key, value in scope.get("headers", ()):
            if key == b"x-request-id":
                text = value.decode("latin-1")
                request_id = text if _REQUEST_ID.match(text) else None
            elif key == b"content-type":
                json_typed = b"json" in value.lower()
        request_id = request_id or uuid.uuid4().hex
        is_pass = path in PASS_PATHS
        if is_pass and not json_typed:
            # every body is JSON (docs/api.md §1): parse it as such whatever the client labelled it
            scope["headers"] = [(k, v) for k, v in scope.get("headers", ()) if k != b"content-type"]
            scope["headers"].append((b"content-type", b"application/json"))
        ctx: dict[str, Any] = {"request_id": request_id, "pass": PASS_PATHS.get(path), "engine": None,
                               "fallback_reason": None, "fallback_detail": None, "input_notes": 0,
                               "started": time.monotonic()}
        scope[SCOPE_KEY] = ctx
        status = 0
        rid_header = (b"x-request-id", request_id.encode("latin-1"))

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), rid_header]
            await send(message)

        if is_pass:
            self.metrics.inflight.inc()
        try:
            await self.app(scope, receive, send_wrapper)
        except Exception:
            if status == 0:
                status = 500
            raise
        finally:
            if is_pass:
                self.metrics.inflight.dec()
                self.metrics.request_finished(ctx.get("pass"), ctx.get("engine"), status or 500)
            if span is not None and self.tracing is not None:
                self.tracing.finish(span, method, path if path in LOGGED_PATHS else None, status or 500, ctx)
            muted = not self.log_probes and path in PROBE_PATHS and 0 < status < 400
            if not muted and access_log.isEnabledFor(logging.INFO):
                access_log.info("request", extra={
                    "method": scope.get("method"), "path": path if path in LOGGED_PATHS else "other",
                    "status": status, "duration_ms": round((time.perf_counter() - started) * 1000.0, 2),
                    "request_id": request_id, "pass": ctx.get("pass"), "engine": ctx.get("engine"),
                    "fallback_reason": ctx.get("fallback_reason"), "fallback_detail": ctx.get("fallback_detail"),
                    "input_notes": ctx.get("input_notes") or 0,
                })


def _without_body(send: Send) -> Send:
    async def send_head(message: Message) -> None:
        if message["type"] == "http.response.body":
            message = {**message, "body": b""}
        await send(message)

    return send_head
