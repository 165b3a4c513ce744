"""``travel-slm serve``: run the HTTP server with uvicorn.

Settings: CLI flags > environment (``TRAVEL_SLM_*``, nested with ``__``) > ``--config FILE`` > defaults.
The default serves both passes with the deterministic engine, which needs no model.

``--workers N`` (N > 1) runs N worker processes behind uvicorn's supervisor, on one listening socket.
prometheus-client then runs in multiprocess mode: ``PROMETHEUS_MULTIPROC_DIR`` is a fresh folder for this
start (a temporary one, removed at exit; or the folder the variable already names, emptied first), every
worker writes its counters and histograms there, and ``/metrics`` in any worker aggregates them. Each
worker builds its own application from the same flags, environment and config file.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import json
import logging
import os
import shutil
import sys
import tempfile
import typing
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from contracts.vocab import ENGINES
from core.cli import positive_int

#: what a worker process needs to build its application (the config file and the CLI overrides, as JSON);
#: no ``TRAVEL_SLM_`` prefix, so that it is never taken for a setting
WORKER_SPEC_ENV = "_TRAVEL_SLM_SERVE_SPEC"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

log = logging.getLogger("travel_slm.config")


def register(subparsers: Any) -> None:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "serve",
        help="run the HTTP server (planner endpoints, OpenAI-compatible API, metrics)",
        description="Run the travel-slm HTTP server. Flags override TRAVEL_SLM_* environment variables, "
                    "which override the --config file.",
    )
    p.add_argument("--host", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default 8000)")
    p.add_argument("--config", metavar="FILE", help="settings file (.toml, .json or .yaml)")
    p.add_argument("--extraction-engine", choices=ENGINES, help="live engine of the extract pass")
    p.add_argument("--render-engine", choices=ENGINES, help="live engine of the render pass")
    p.add_argument("--engine", choices=ENGINES, help="live engine of both passes (the two flags above win)")
    p.add_argument("--slm-adapter", choices=("auto", "mlx", "vllm", "transformers"), help="runtime of the slm engine")
    p.add_argument("--slm-model", help="'bundled', a Hugging Face model folder or a .gguf file")
    p.add_argument("--slm-lora", help="LoRA adapter folder (both passes)")
    p.add_argument("--slm-device", help="auto, cpu, cuda, mps")
    p.add_argument("--render-mode", choices=("plan", "full"), help="slm render mode")
    p.add_argument("--openai-base-url", help="OpenAI-compatible upstream, e.g. http://127.0.0.1:8001/v1")
    p.add_argument("--openai-model-extract", help="upstream model of the extract pass")
    p.add_argument("--openai-model-render", help="upstream model of the render pass")
    p.add_argument("--openai-structured-outputs", choices=("response_format", "vllm"),
                   help="vllm: also send vLLM's structured_outputs field")
    p.add_argument("--shadow", action=argparse.BooleanOptionalAction, default=None, help="shadow mode on/off")
    p.add_argument("--shadow-engine", choices=ENGINES, help="candidate engine of shadow mode")
    p.add_argument("--shadow-store", help="shadow record store, e.g. sqlite:///shadow.db")
    p.add_argument("--max-body-bytes", type=int, help="request body limit (default 1 MiB)")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"), help="log level (default info)")
    p.add_argument("--workers", type=positive_int, metavar="N", default=1,
                   help="worker processes sharing the port (default 1). With N > 1 /metrics aggregates every "
                        "worker (prometheus-client multiprocess mode, PROMETHEUS_MULTIPROC_DIR: a fresh folder per "
                        "start); /v1/stats, the dashboard, circuit breakers and the shadow runner are per worker")
    p.set_defaults(func=run)


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """CLI flags -> nested settings overrides (``None`` = not given)."""
    slm = {k: v for k, v in {"adapter": args.slm_adapter, "model": args.slm_model, "lora": args.slm_lora,
                             "device": args.slm_device, "render_mode": args.render_mode}.items() if v is not None}
    openai = {k: v for k, v in {"base_url": args.openai_base_url, "model_extract": args.openai_model_extract,
                                "model_render": args.openai_model_render,
                                "structured_outputs": args.openai_structured_outputs}.items() if v is not None}
    shadow = {k: v for k, v in {"enabled": args.shadow, "engine": args.shadow_engine,
                                "store": args.shadow_store}.items() if v is not None}
    out: dict[str, Any] = {
        "host": args.host, "port": args.port,
        "extraction_engine": args.extraction_engine or args.engine,
        "render_engine": args.render_engine or args.engine,
        "max_body_bytes": args.max_body_bytes, "log_level": args.log_level,
    }
    for key, value in (("slm", slm), ("openai", openai), ("shadow", shadow)):
        if value:
            out[key] = value
    return out


def uvicorn_config(app: Any, host: str, port: int, log_level: str, *, max_header_bytes: int = 64 * 1024,
                   header_timeout_s: float = 10.0, http: Any = None, **extra: Any) -> Any:
    """The uvicorn settings of ``travel-slm serve`` (the serve benchmark runs its echo baseline with them too):
    uvicorn's h11 protocol with the header limits of :mod:`server.http_protocol`. ``http``: another protocol
    (the workers' import string, since the configuration travels to each worker by pickling)."""
    import uvicorn

    from server.http_protocol import guarded_protocol

    return uvicorn.Config(
        app, host=host, port=port, log_config=None, access_log=False, log_level=log_level, lifespan="on",
        server_header=False, timeout_graceful_shutdown=10,
        http=http if http is not None else guarded_protocol(header_timeout_s, max_header_bytes),
        h11_max_incomplete_event_size=max_header_bytes, **extra,
    )


_worker_protocol: type | None = None


def __getattr__(name: str) -> Any:
    """``WorkerH11Protocol``: the workers' protocol class (made on first use, so that the other commands do
    not import uvicorn); :func:`worker_app` sets its limits from the settings."""
    global _worker_protocol
    if name != "WorkerH11Protocol":
        raise AttributeError(name)
    if _worker_protocol is None:
        from server.http_protocol import GuardedH11Protocol

        _worker_protocol = type("WorkerH11Protocol", (GuardedH11Protocol,), {"__module__": __name__})
    return _worker_protocol


def worker_app() -> Any:
    """The application of one worker (uvicorn's factory, run in each worker process): the settings from the
    same config file, flags and environment as the supervisor's."""
    from core.settings import load_settings
    from server.app import create_app

    spec = json.loads(os.environ[WORKER_SPEC_ENV])
    settings = load_settings(spec["config"], **spec["overrides"])
    _configure_process(settings)
    protocol = __getattr__("WorkerH11Protocol")
    protocol.header_timeout_s = float(settings.header_timeout_s)
    protocol.max_header_bytes = int(settings.max_header_bytes)
    return create_app(settings)


def _configure_process(settings: Any) -> None:
    from server.logs import configure_logging, route_library_output

    api_key = settings.api_key.get_secret_value() if settings.api_key is not None else None
    configure_logging(settings.log_level, secrets=[api_key])
    uses_slm = "slm" in (settings.extraction_engine, settings.render_engine) or (
        settings.shadow.enabled and settings.shadow.engine == "slm")
    route_library_output(transformers=uses_slm)


@contextlib.contextmanager
def multiprocess_dir() -> Iterator[str]:
    """A fresh ``PROMETHEUS_MULTIPROC_DIR`` for this start: the folder the variable names, emptied of the
    files of an earlier start, or a new temporary folder, removed at exit. Set in the environment, which the
    workers inherit (prometheus-client reads it when a worker first imports it)."""
    given = os.environ.get(MULTIPROC_ENV)
    if given:
        os.makedirs(given, exist_ok=True)
        for name in os.listdir(given):
            if name.endswith(".db"):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(os.path.join(given, name))
        yield given
        return
    path = tempfile.mkdtemp(prefix="travel-slm-metrics-")
    os.environ[MULTIPROC_ENV] = path
    try:
        yield path
    finally:
        os.environ.pop(MULTIPROC_ENV, None)
        shutil.rmtree(path, ignore_errors=True)


def unknown_settings_env(environ: Mapping[str, str]) -> list[tuple[str, str | None]]:
    """``TRAVEL_SLM_*`` variables that are no setting (pydantic-settings ignores them silently), each with the
    nearest valid variable name (``difflib``), or ``None`` when none is close."""
    from core.settings import Settings, env_name, setting_paths

    prefix = Settings.model_config["env_prefix"]
    paths = setting_paths()
    valid = sorted(env_name(path) for path in paths)
    # a dict setting takes its keys as nested variables too: TRAVEL_SLM_MODEL_ALIASES__MY_MODEL=extract
    open_prefixes = tuple(env_name(path) + "__" for path in paths if _is_mapping(path))
    out: list[tuple[str, str | None]] = []
    for key in sorted(environ):
        name = key.upper()
        if not name.startswith(prefix) or name in valid or name.startswith(open_prefixes):
            continue
        # compared without the common prefix, which would make every name look close
        close = difflib.get_close_matches(name[len(prefix):], [v[len(prefix):] for v in valid], n=1, cutoff=0.6)
        out.append((key, prefix + close[0] if close else None))
    return out


def _is_mapping(path: tuple[str, ...]) -> bool:
    from pydantic import BaseModel

    from core.settings import Settings

    model: type[BaseModel] = Settings
    for part in path[:-1]:
        model = model.model_fields[part].annotation  # type: ignore[assignment]
    return typing.get_origin(model.model_fields[path[-1]].annotation) is dict


def unknown_config_keys(config_file: str | Path | None) -> list[tuple[str, str | None]]:
    """Keys of a config file's sections that are no setting (the sections ignore them silently; an unknown
    top-level key is already an error), each with the nearest valid key of its section."""
    if config_file is None:
        return []
    from pydantic import BaseModel

    from core.settings import Settings

    path = Path(config_file)
    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix.lower() == ".toml":
            import tomllib

            data: Any = tomllib.loads(text)
        elif path.suffix.lower() == ".json":
            import json

            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception:  # already reported by load_settings
        return []
    out: list[tuple[str, str | None]] = []
    if not isinstance(data, dict):
        return out
    for section, values in data.items():
        field = Settings.model_fields.get(section)
        annotation = field.annotation if field is not None else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel) and isinstance(values, dict)):
            continue
        known = sorted(annotation.model_fields)
        for key in values:
            if key not in annotation.model_fields:
                close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
                out.append((f"{section}.{key}", f"{section}.{close[0]}" if close else None))
    return out


def warn_unknown_settings(environ: Mapping[str, str], config_file: str | Path | None) -> None:
    """One warning line per unknown ``TRAVEL_SLM_*`` variable or config-file key (names only, never values)."""
    for name, nearest in unknown_settings_env(environ):
        log.warning("unknown environment variable %s is ignored%s", name,
                    f"; did you mean {nearest}?" if nearest else "", extra={"variable": name, "nearest": nearest})
    for key, nearest in unknown_config_keys(config_file):
        log.warning("unknown config file key %s is ignored%s", key, f"; did you mean {nearest}?" if nearest else "",
                    extra={"key": key, "nearest": nearest, "config_file": str(config_file)})


def run(args: argparse.Namespace) -> int:
    import uvicorn
    from pydantic import ValidationError

    from core.settings import ConfigFileError, load_settings

    try:
        settings = load_settings(args.config, **overrides_from_args(args))
    except (ConfigFileError, ValidationError) as exc:
        print(f"travel-slm serve: {exc}", file=sys.stderr)
        return 2
    _configure_process(settings)
    warn_unknown_settings(os.environ, args.config)
    workers = getattr(args, "workers", 1) or 1
    if workers > 1:
        return _run_workers(args, settings, workers)
    # one process keeps its metrics in memory: a multiprocess folder left in the environment would make it
    # read (and add up) the files of an earlier start
    os.environ.pop(MULTIPROC_ENV, None)
    from server.app import create_app

    app = create_app(settings)
    server = uvicorn.Server(uvicorn_config(app, settings.host, settings.port, settings.log_level,
                                           max_header_bytes=settings.max_header_bytes,
                                           header_timeout_s=settings.header_timeout_s))
    server.run()
    return 0 if server.started else 1


def _run_workers(args: argparse.Namespace, settings: Any, workers: int) -> int:
    """uvicorn's supervisor with ``workers`` processes on one socket, metrics in multiprocess mode."""
    from uvicorn.config import STARTUP_FAILURE
    from uvicorn.supervisors import Multiprocess

    from server.metrics import SUPERVISOR_PID_ENV

    with multiprocess_dir() as path:
        os.environ[WORKER_SPEC_ENV] = json.dumps({"config": args.config, "overrides": overrides_from_args(args)})
        os.environ[SUPERVISOR_PID_ENV] = str(os.getpid())
        log.info("starting workers", extra={"workers": workers, "metrics_dir": path})
        config = uvicorn_config(f"{__name__}:worker_app", settings.host, settings.port, settings.log_level,
                                max_header_bytes=settings.max_header_bytes,
                                header_timeout_s=settings.header_timeout_s,
                                http=f"{__name__}:WorkerH11Protocol", factory=True, workers=workers)
        sock = config.bind_socket()
        supervisor = Multiprocess(config, sockets=[sock])
        try:
            supervisor.run()
        finally:
            sock.close()
    failed = any(getattr(p, "exitcode", None) == STARTUP_FAILURE for p in supervisor.processes)
    return 1 if failed else 0
