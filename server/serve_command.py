"""``travel-slm serve``: run the HTTP server with uvicorn.

Settings: CLI flags > environment (``TRAVEL_SLM_*``, nested with ``__``) > ``--config FILE`` > defaults.
The default serves both passes with the deterministic engine, which needs no model.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

_ENGINES = ("deterministic", "slm", "openai")


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
    p.add_argument("--extraction-engine", choices=_ENGINES, help="live engine of the extract pass")
    p.add_argument("--render-engine", choices=_ENGINES, help="live engine of the render pass")
    p.add_argument("--engine", choices=_ENGINES, help="live engine of both passes (the two flags above win)")
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
    p.add_argument("--shadow-engine", choices=_ENGINES, help="candidate engine of shadow mode")
    p.add_argument("--shadow-store", help="shadow record store, e.g. sqlite:///shadow.db")
    p.add_argument("--max-body-bytes", type=int, help="request body limit (default 1 MiB)")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"), help="log level (default info)")
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
                   header_timeout_s: float = 10.0, **extra: Any) -> Any:
    """The uvicorn settings of ``travel-slm serve`` (the serve benchmark runs its echo baseline with them too):
    uvicorn's h11 protocol with the header limits of :mod:`server.http_protocol`."""
    import uvicorn

    from server.http_protocol import guarded_protocol

    return uvicorn.Config(
        app, host=host, port=port, log_config=None, access_log=False, log_level=log_level, lifespan="on",
        server_header=False, timeout_graceful_shutdown=10, http=guarded_protocol(header_timeout_s, max_header_bytes),
        h11_max_incomplete_event_size=max_header_bytes, **extra,
    )


def run(args: argparse.Namespace) -> int:
    import uvicorn
    from pydantic import ValidationError

    from server.app import create_app
    from server.config import ConfigFileError, load_settings
    from server.logs import configure_logging

    try:
        settings = load_settings(args.config, **overrides_from_args(args))
    except (ConfigFileError, ValidationError) as exc:
        print(f"travel-slm serve: invalid settings: {exc}", file=sys.stderr)
        return 2
    api_key = settings.api_key.get_secret_value() if settings.api_key is not None else None
    configure_logging(settings.log_level, secrets=[api_key])
    app = create_app(settings)
    server = uvicorn.Server(uvicorn_config(app, settings.host, settings.port, settings.log_level,
                                           max_header_bytes=settings.max_header_bytes,
                                           header_timeout_s=settings.header_timeout_s))
    server.run()
    return 0 if server.started else 1
