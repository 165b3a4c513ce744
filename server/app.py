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
import time
from collections.abc import AsyncIterator
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
from server.metrics import Metrics
from server.middleware import (
    AuthMiddleware,
    BodyLimitMiddleware,
    HeaderLimitMiddleware,
    RequestContextMiddleware,
)

log = logging.getLogger("travel_slm.app")

#: how long the lifespan waits for engines to start before serving anyway (slow ones go on loading).
STARTUP_GRACE_S = 2.0
#: where /docs's Swagger UI assets (script, stylesheet, icon) are served from
DOCS_ASSETS = "/docs/assets"


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
    # each add_middleware wraps the ones added before it: the request meets them in the reverse order,
    # RequestContext (request id, metrics, access log, span) -> HeaderLimit (431) -> Auth (401) -> BodyLimit (400, 413)
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=settings.max_body_bytes)
    app.add_middleware(AuthMiddleware, auth=ApiKeyCheck(api_key, metrics_require_key=settings.metrics_require_key))
    app.add_middleware(HeaderLimitMiddleware, max_header_count=settings.max_header_count)
    app.add_middleware(RequestContextMiddleware, metrics=metrics, log_probes=settings.log_probes, tracing=tracing)
    return app
