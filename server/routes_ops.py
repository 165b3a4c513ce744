"""Operations endpoints (docs/api.md §2 and §4): ``/healthz``, ``/readyz``, ``/metrics``, ``/version``."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel

from contracts.vocab import CONTRACT_VERSION, PASSES
from engines.fallback import PassRunner
from server.errors import ErrorMessage, JSONResponse

router = APIRouter(tags=["operations"])


class EngineHealth(BaseModel):
    engine: str
    adapter: str
    model: str
    constrained: bool
    ready: bool
    reason: str
    step: str
    """The start-up step (as in ``/readyz``'s ``steps``)."""
    passes: list[str]
    circuit: dict[str, str]


class Health(BaseModel):
    ok: bool
    backend: str
    model: str
    constrained: bool
    domain: str
    contract_version: str
    passes: dict[str, str]
    shadow: bool
    shadow_store: dict[str, Any] | None = None
    """With shadow mode on: the store's state (ok, failed: cannot be opened, degraded: a write failed),
    its last error, and written / lost / write_errors / restarts counts. A store fault degrades shadow mode
    only: ``ok`` stays true and the live passes keep serving."""
    engines: dict[str, EngineHealth]


class Readiness(BaseModel):
    ready: bool
    reason: str
    engines: dict[str, str]
    """Per configured engine: ``ready``, or why not (the start-up step it is on, or what failed)."""
    steps: dict[str, str]
    """Per configured engine, its start-up step: the slm engine goes ``building adapter``, ``loading model``,
    ``loading LoRA``, ``compiling grammars``, ``warming extract``, ``warming render``, ``ready`` (or
    ``failed``); the others are ``ready`` once started."""


class PassVersion(BaseModel):
    engine: str
    model: str


class VersionInfo(BaseModel):
    package: str
    version: str
    """The installed package's version (``travel-slm --version`` prints the same)."""
    contract_version: str
    """``contracts.vocab.CONTRACT_VERSION``: the vocabulary and schemas both passes answer in."""
    model: str
    """The slm model: what the loaded slm engine reports (the model package's name, or the runtime's model id
    once it started), else the configured ``slm.model`` spec."""
    model_source: Literal["engine", "settings"]
    passes: dict[str, PassVersion]
    """Per pass, its live engine and the model that engine answers with (``oracle`` for the deterministic one)."""


PACKAGE = "travel-slm"


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(PACKAGE)
    except PackageNotFoundError:  # pragma: no cover - a plain checkout that was never installed
        return "0+unknown"


def version_info(settings: Any, runner: PassRunner | None = None) -> dict[str, Any]:
    """The ``/version`` document; without ``runner`` (the CLI) the model is the configured spec."""
    slm = runner.engines.get("slm") if runner is not None else None
    model, source = (str(slm.describe().get("model") or settings.slm.model), "engine") if slm is not None \
        else (str(settings.slm.model), "settings")
    passes: dict[str, dict[str, str]] = {}
    for pass_ in PASSES:
        engine_name = settings.engine_for(pass_)
        engine = runner.engines.get(engine_name) if runner is not None else None
        if engine is not None:
            pass_model = engine.model_for(pass_)
        elif engine_name == "slm":
            pass_model = model
        elif engine_name == "openai":
            pass_model = settings.openai.model_for(pass_)
        else:
            pass_model = "oracle"
        passes[pass_] = {"engine": engine_name, "model": pass_model}
    return {"package": PACKAGE, "version": package_version(), "contract_version": CONTRACT_VERSION,
            "model": model, "model_source": source, "passes": passes}


def version_text() -> str:
    """One line for ``travel-slm --version`` (settings from the environment; the defaults if they are invalid)."""
    from core.settings import ConfigFileError, Settings, load_settings

    try:
        settings = load_settings()
    except ConfigFileError:
        settings = Settings.model_construct()  # the defaults, unvalidated
    info = version_info(settings)
    return f"{PACKAGE} {info['version']} (contract {info['contract_version']}, model {info['model']})"


def _describe(runner: PassRunner, name: str) -> dict[str, Any]:
    engine = runner.engines.get(name)
    if engine is None:
        return {"engine": name, "adapter": "none", "model": "none", "constrained": False}
    info = engine.describe()
    return {"engine": name, "adapter": str(info.get("adapter", "none")), "model": str(info.get("model", "none")),
            "constrained": bool(info.get("constrained", False))}


@router.get("/healthz", response_model=Health, summary="Liveness: 200 while the process lives.")
async def healthz(request: Request) -> dict[str, Any]:
    settings = request.app.state.settings
    runner: PassRunner = request.app.state.runner
    engine_set = request.app.state.engines
    passes = {"extract": settings.extraction_engine, "render": settings.render_engine}
    engines: dict[str, Any] = {}
    for name in engine_set.configured:
        ready, reason = engine_set.ready_engine(name)
        circuit = {p: runner.breakers[(name, p)].state for p in PASSES if (name, p) in runner.breakers}
        engines[name] = {**_describe(runner, name), "ready": ready, "reason": reason, "step": engine_set.step(name),
                         "passes": [p for p, e in passes.items() if e == name], "circuit": circuit}
    live = _describe(runner, settings.extraction_engine)
    shadow = request.app.state.shadow
    return {"shadow_store": shadow.store.health() if shadow is not None else None,
            "ok": True, "backend": settings.extraction_engine, "model": live["model"],
            "constrained": live["constrained"], "domain": "travel", "contract_version": CONTRACT_VERSION,
            "passes": passes, "shadow": request.app.state.shadow is not None, "engines": engines}


@router.get("/readyz", response_model=Readiness,
            summary="Readiness: 200 once every configured engine is loaded, compiled and warmed.",
            responses={503: {"model": Readiness, "description": "An engine is not ready; `reason` says which."}})
async def readyz(request: Request) -> Any:
    engine_set = request.app.state.engines
    ready, reasons = engine_set.readiness()
    steps = engine_set.steps()
    if ready:
        return {"ready": True, "reason": "ready", "engines": reasons, "steps": steps}
    reason = "; ".join(f"{name}: {why}" for name, why in reasons.items() if why != "ready")
    return JSONResponse({"ready": False, "reason": reason, "engines": reasons, "steps": steps}, status_code=503)


@router.get(
    "/metrics",
    summary="Prometheus metrics (text exposition format).",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}},
               401: {"model": ErrorMessage, "description": "Missing or wrong API key (metrics_require_key)."}},
)
async def metrics(request: Request) -> Response:
    body, content_type = request.app.state.metrics.render()
    return Response(content=body, media_type=content_type)


@router.get("/version", response_model=VersionInfo,
            summary="Package, contract and model versions (also `travel-slm --version`).")
async def version_route(request: Request) -> dict[str, Any]:
    return version_info(request.app.state.settings, request.app.state.runner)
