"""The FastAPI application: ``create_app(settings)``.

Public state: ``app.state.settings`` (:class:`~core.settings.Settings`), ``app.state.runner``
(:class:`~engines.fallback.PassRunner`), ``app.state.metrics`` (:class:`~server.metrics.Metrics`),
``app.state.shadow`` (``engines.shadow.runner.ShadowRunner`` or ``None``),
``app.state.engines`` (:class:`EngineSet`: which engines are configured, started, ready, and the start-up
step each is on) and ``app.state.tracing`` (:class:`server.tracing.Tracing`, or ``None`` with tracing off).

Engines are built when the app is created (a failure is recorded, never fatal: the passes then fall
back with ``unavailable`` and ``/readyz`` says why) and started in the background by the lifespan,
so that ``/healthz`` answers while a model loads.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from contracts.vocab import CONTRACT_VERSION
from core.settings import Settings, load_settings
from engines.base import Engine
from engines.fallback import PassRunner
from engines.registry import build_engine
from server import errors
from server.auth import ApiKeyCheck
from server.errors import BodyTooLargeError, error_response
from server.logs import access_log
from server.metrics import Metrics
from server.tracing import Tracing

log = logging.getLogger("travel_slm.app")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

#: how long the lifespan waits for engines to start before serving anyway (slow ones go on loading).
STARTUP_GRACE_S = 2.0
#: HTTP paths that answer a pass (request counters, in-flight gauge); the pass is known from the path
#: for the planner endpoints and set by the route for /v1/chat/completions.
PASS_PATHS: dict[str, str | None] = {
    "/extract": "extract", "/extract_turn": "extract", "/render": "render", "/render_widget_chat": "render",
    "/v1/chat/completions": None,
}
_LOGGED_PATHS = frozenset({*PASS_PATHS, "/healthz", "/readyz", "/metrics", "/v1/models", "/docs", "/openapi.json",
                           "/dashboard", "/v1/shadow/report", "/v1/stats", "/version"})
#: where /docs's Swagger UI assets (script, stylesheet, icon) are served from
DOCS_ASSETS = "/docs/assets"
#: the probe and scrape paths whose successful access-log lines ``log_probes = false`` mutes.
PROBE_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
SCOPE_KEY = "travel_slm"


class EngineSet:
    """The live engines of the two passes: built, started, ready."""

    def __init__(self, settings: Settings, metrics: Metrics, given: dict[str, Engine] | None = None) -> None:
        self.settings = settings
        self.metrics = metrics
        self.configured: list[str] = list(dict.fromkeys([settings.extraction_engine, settings.render_engine]))
        self.engines: dict[str, Engine] = {}
        self.problems: dict[str, str] = {}
        self.started: set[str] = set()
        for name in self.configured:
            if name == "deterministic":
                continue
            if given and name in given:
                self.engines[name] = given[name]
                continue
            try:
                self.engines[name] = build_engine(name, settings)
            except Exception as exc:  # a missing runtime or model: fall back, and say so on /readyz
                self.problems[name] = f"failed to load: {type(exc).__name__}: {exc}"[:300]
                log.error("engine could not be built", extra={"engine": name, "error": self.problems[name]})

    async def start(self) -> None:
        async def _one(name: str, engine: Engine) -> None:
            t0 = time.perf_counter()
            try:
                await engine.start()
            except Exception as exc:
                self.problems[name] = f"failed to start: {type(exc).__name__}: {exc}"[:300]
                log.error("engine failed to start", extra={"engine": name, "error": self.problems[name]})
            else:
                self.started.add(name)
                ready, reason = self.ready_engine(name)
                seconds = round(time.perf_counter() - t0, 3)
                if ready:
                    log.info("engine started", extra={"engine": name, "seconds": seconds})
                else:  # the engine caught its own failure: it stays not ready, with the reason
                    log.error("engine not ready after start", extra={"engine": name, "seconds": seconds,
                                                                     "error": reason[:300]})
                self._observe_compile(engine)
            self.metrics.set_engine_ready(name, self.ready_engine(name)[0])

        await asyncio.gather(*(_one(n, e) for n, e in self.engines.items()))

    def _observe_compile(self, engine: Engine) -> None:
        """Grammar compile times an engine reports after start (``{grammar key: seconds}``)."""
        compiled = getattr(engine, "grammar_compile_seconds", None)
        if not isinstance(compiled, dict):
            return
        for key, seconds in compiled.items():
            if isinstance(seconds, int | float):
                pass_ = "extract" if str(key).startswith("extract") else "render"
                self.metrics.grammar_compile(pass_, str(getattr(engine, "adapter", "none")), float(seconds))

    def ready_engine(self, name: str) -> tuple[bool, str]:
        if name == "deterministic":
            return True, "ready"
        if name in self.problems:
            return False, self.problems[name]
        engine = self.engines.get(name)
        if engine is None:
            return False, "not configured"
        try:
            ready, reason = engine.readiness()
        except Exception as exc:
            return False, f"readiness check failed: {type(exc).__name__}"
        if name not in self.started:
            # still in its start(): the engine's own reason names the step it is on (e.g. "warming extract")
            return False, reason if not ready and reason else "starting"
        return ready, reason

    def step(self, name: str) -> str:
        """The start-up step of engine ``name``: its own (``SlmEngine.step``), else ``ready`` / ``starting`` /
        ``failed``."""
        if name == "deterministic":
            return "ready"
        engine = self.engines.get(name)
        own = getattr(engine, "step", None) if engine is not None else None
        if isinstance(own, str):
            return own
        if name in self.problems or engine is None:
            return "failed"
        if name not in self.started:
            return "starting"
        return "ready" if self.ready_engine(name)[0] else "not ready"

    def readiness(self) -> tuple[bool, dict[str, str]]:
        reasons: dict[str, str] = {}
        ok = True
        for name in self.configured:
            ready, reason = self.ready_engine(name)
            reasons[name] = reason
            ok = ok and ready
            self.metrics.set_engine_ready(name, ready)
        return ok, reasons

    def steps(self) -> dict[str, str]:
        return {name: self.step(name) for name in self.configured}

    async def aclose(self) -> None:
        for name, engine in self.engines.items():
            try:
                await engine.aclose()
            except Exception:
                log.exception("engine close failed", extra={"engine": name})


class GuardMiddleware:
    """Pure ASGI: request id, API key, body size limit (on the raw stream), request metrics, access log."""

    def __init__(self, app: Any, *, auth: ApiKeyCheck, max_body_bytes: int, metrics: Metrics,
                 max_header_count: int = 100, log_probes: bool = True, tracing: Tracing | None = None) -> None:
        self.app = app
        self.tracing = tracing
        self.log_probes = log_probes
        self.auth = auth
        self.max_body = max_body_bytes
        self.max_header_count = max_header_count
        self.metrics = metrics

    async def _too_large(self, path: str, scope: Scope, receive: Receive, send: Send, declared: int | None) -> None:
        """413, after reading (and dropping) the body up to a bound so that every client reads the answer."""
        drained = await _discard_body(receive, declared, 0 if declared is not None else self.max_body)
        headers = None if drained else {"Connection": "close"}
        await error_response(path, 413, f"request body exceeds the limit of {self.max_body} bytes",
                             code="request_too_large", headers=headers)(scope, receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.tracing is None:
            await self._guard(scope, receive, send, None)
            return
        with self.tracing.request_span(scope) as span:  # the passes' spans are its children
            await self._guard(scope, receive, send, span)

    async def _guard(self, scope: Scope, receive: Receive, send: Send, span: Any) -> None:
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
        authorization: bytes | None = None
        content_length: bytes | None = None
        request_id: str | None = None
        json_typed = False
        for key, value in scope.get("headers", ()):
            if key == b"authorization":
                authorization = value
            elif key == b"content-length":
                content_length = value
            elif key == b"x-request-id":
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
            if len(scope.get("headers", ())) > self.max_header_count:
                await error_response(path, 431, f"more than {self.max_header_count} request header fields",
                                     code="request_header_fields_too_large")(scope, receive, send_wrapper)
                return
            if self.auth.required(path) and not self.auth.allowed(authorization):
                response = error_response(path, 401, "missing or invalid API key", code="invalid_api_key",
                                          headers={"WWW-Authenticate": "Bearer"})
                await response(scope, receive, send_wrapper)
                return
            if content_length is not None:
                try:
                    declared = int(content_length)
                except ValueError:
                    declared = -1
                if declared < 0:
                    await error_response(path, 400, "invalid Content-Length")(scope, receive, send_wrapper)
                    return
                if declared > self.max_body:
                    await self._too_large(path, scope, receive, send_wrapper, declared)
                    return
            received = 0
            limit = self.max_body

            async def limited_receive() -> Message:
                nonlocal received
                message = await receive()
                if message["type"] == "http.request":
                    received += len(message.get("body", b""))
                    if received > limit:
                        raise BodyTooLargeError(limit)
                return message

            await self.app(scope, limited_receive, send_wrapper)
        except BodyTooLargeError:
            if status == 0:
                await self._too_large(path, scope, receive, send_wrapper, None)
        except Exception:
            if status == 0:
                status = 500
            raise
        finally:
            if is_pass:
                self.metrics.inflight.dec()
                self.metrics.request_finished(ctx.get("pass"), ctx.get("engine"), status or 500)
            if span is not None and self.tracing is not None:
                self.tracing.finish(span, method, path if path in _LOGGED_PATHS else None, status or 500, ctx)
            muted = not self.log_probes and path in PROBE_PATHS and 0 < status < 400
            if not muted and access_log.isEnabledFor(logging.INFO):
                access_log.info("request", extra={
                    "method": scope.get("method"), "path": path if path in _LOGGED_PATHS else "other",
                    "status": status, "duration_ms": round((time.perf_counter() - started) * 1000.0, 2),
                    "request_id": request_id, "pass": ctx.get("pass"), "engine": ctx.get("engine"),
                    "fallback_reason": ctx.get("fallback_reason"), "fallback_detail": ctx.get("fallback_detail"),
                    "input_notes": ctx.get("input_notes") or 0,
                })


#: how much of an over-limit body is read and thrown away so that the client sees the 413 (a client such
#: as urllib or http.client writes its whole body before reading: closing on it unread resets the
#: connection instead); beyond this the connection is closed after the 413.
DRAIN_LIMIT_BYTES = 16 * 1024 * 1024
DRAIN_TIMEOUT_S = 10.0


def _without_body(send: Send) -> Send:
    async def send_head(message: Message) -> None:
        if message["type"] == "http.response.body":
            message = {**message, "body": b""}
        await send(message)

    return send_head


async def _discard_body(receive: Receive, declared: int | None, already: int) -> bool:
    """Read and drop the rest of the request body up to :data:`DRAIN_LIMIT_BYTES`; True when it all came."""
    if declared is not None and declared > DRAIN_LIMIT_BYTES:
        return False
    seen = already

    async def drain() -> bool:
        nonlocal seen
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return False
            seen += len(message.get("body", b""))
            if not message.get("more_body"):
                return True
            if seen > DRAIN_LIMIT_BYTES:
                return False

    try:
        return await asyncio.wait_for(drain(), DRAIN_TIMEOUT_S)
    except TimeoutError:
        return False


def create_app(settings: Settings | None = None, *, engines: dict[str, Engine] | None = None) -> FastAPI:
    """Build the application; engines are started by its lifespan.

    ``engines``: engine objects to serve instead of building them from the settings (by engine name, e.g.
    ``{"slm": SlmEngine(settings.slm, adapter=...)}`` to embed a model loaded by the caller); the
    lifespan starts them like built ones.
    """
    from server import tracing as tracing_module
    from server.routes_ops import package_version

    settings = settings or load_settings()
    metrics = Metrics()
    tracing = tracing_module.build(settings.tracing, package_version())
    engine_set = EngineSet(settings, metrics, engines)
    runner = PassRunner.from_settings(
        settings, engine_set.engines, policy="serve", observers=[metrics.observe_served],
        tracer=tracing.tracer if tracing is not None else None,
    )
    metrics.watch_circuits(runner.breakers)
    shadow: Any = None
    if settings.shadow.enabled:
        from engines.shadow.runner import ShadowRunner

        shadow = ShadowRunner(settings, runner, metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        start_task = asyncio.create_task(engine_set.start(), name="travel-slm-engine-start")
        await asyncio.wait({start_task}, timeout=STARTUP_GRACE_S)
        if shadow is not None:
            await shadow.start()
        ready, reasons = engine_set.readiness()
        log.info("serving", extra={"extraction_engine": settings.extraction_engine,
                                   "render_engine": settings.render_engine, "ready": ready, "engines": reasons,
                                   "shadow": settings.shadow.enabled, "contract_version": CONTRACT_VERSION})
        try:
            yield
        finally:
            if not start_task.done():
                start_task.cancel()
                await asyncio.gather(start_task, return_exceptions=True)
            if shadow is not None:
                try:
                    await shadow.close()
                except Exception:
                    log.exception("shadow close failed")
            await engine_set.aclose()
            if tracing is not None:
                await asyncio.to_thread(tracing.shutdown)  # flushes the spans still buffered

    # /docs is Swagger UI served with its assets from the fastapi-offline package (FastAPI's self-hosting
    # recipe): the page works offline, without a CDN
    app = FastAPIOffline(
        docs_url="/docs",
        static_url=DOCS_ASSETS,
        title="travel-slm",
        version=package_version(),
        description="Inference server for the travel planner's extract and render passes "
                    f"(contract {CONTRACT_VERSION}): planner endpoints, an OpenAI-compatible API, operations.",
        lifespan=lifespan,
        redoc_url=None,
        strict_content_type=False,
        default_response_class=errors.JSONResponse,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.runner = runner
    app.state.shadow = shadow
    app.state.engines = engine_set
    app.state.tracing = tracing
    app.state.started_at = int(time.time())

    from server import routes_openai, routes_ops, routes_planner, routes_shadow, routes_stats

    app.include_router(routes_planner.router)
    app.include_router(routes_openai.router)
    app.include_router(routes_ops.router)
    app.include_router(routes_shadow.router)
    app.include_router(routes_stats.router)
    errors.install(app)
    api_key = settings.api_key.get_secret_value() if settings.api_key is not None else None
    app.add_middleware(
        GuardMiddleware,
        auth=ApiKeyCheck(api_key, metrics_require_key=settings.metrics_require_key),
        max_body_bytes=settings.max_body_bytes,
        max_header_count=settings.max_header_count,
        metrics=metrics,
        log_probes=settings.log_probes,
        tracing=tracing,
    )
    return app
