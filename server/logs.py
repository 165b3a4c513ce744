"""Structured JSON logging: one JSON object per line on stderr.

Only metadata is logged (method, route, status, duration, pass, engine, fallback reason, request id):
never a request body, never user text, never a key. Every line also goes through a scrubber that
replaces the configured secrets (``TRAVEL_SLM_API_KEY``, ``OPENAI_API_KEY``) should one ever slip in.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterable
from typing import Any

from engines.shadow.redact import json_line

#: attributes every LogRecord has; anything else passed through ``extra=`` becomes a JSON field.
_STANDARD = frozenset(vars(logging.LogRecord("x", 0, "x", 0, "x", None, None))) | {"message", "asctime", "taskName"}
_MAX_FIELD = 2000
_MAX_TRACEBACK = 8000


class JsonFormatter(logging.Formatter):
    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s and len(s) >= 4]

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": _clip(record.getMessage()),
        }
        for key, value in record.__dict__.items():
            if key in _STANDARD or key.startswith("_") or key == "color_message":
                continue
            entry[key] = value if isinstance(value, int | float | bool) or value is None else _clip(value)
        if record.exc_info:
            # the end of a traceback is the error line itself: keep it, cut the middle if anything
            entry["exc"] = _clip_middle(self.formatException(record.exc_info), _MAX_TRACEBACK)
        line = json_line(entry)  # a lone surrogate anywhere is escaped, never a logging error
        for secret in self.secrets:
            line = line.replace(secret, "[REDACTED]")
        return line


def _clip_middle(text: str, limit: int) -> str:
    """``text`` within ``limit`` characters: its start and its end (where a traceback names the error)."""
    if len(text) <= limit:
        return text
    head = limit // 4
    return text[:head] + f"\n... [{len(text) - limit} characters cut] ...\n" + text[-(limit - head):]


def _clip(value: Any, limit: int = _MAX_FIELD) -> Any:
    if isinstance(value, str):
        return value if len(value) <= limit else value[:limit] + "..."
    if isinstance(value, list | dict):
        text = json_line(value)
        return value if len(text) <= limit else text[:limit] + "..."
    return str(value)[:limit]


def configure_logging(level: str = "info", secrets: Iterable[str | None] = ()) -> None:
    """Route the root logger (and uvicorn's) to one JSON handler on stderr."""
    known = [s for s in secrets if s]
    for name in ("OPENAI_API_KEY", "TRAVEL_SLM_API_KEY"):
        value = os.environ.get(name)
        if value:
            known.append(value)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(known))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    # uvicorn's own access log duplicates ours (which carries pass, engine and fallback fields)
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)


def route_library_output(*, transformers: bool) -> None:
    """Keep third-party output inside the JSON lines while the server runs (call after :func:`configure_logging`).

    - Python warnings (``warnings.warn``, e.g. a library's deprecation notice) become log records
      (logger ``py.warnings``) instead of bare text on stderr;
    - Hugging Face Hub progress bars are off;
    - with ``transformers`` (the slm engine is configured, so the library loads anyway): its progress bars
      (the "Loading weights" bar of a model load) are off, and its loggers, which print ``[transformers] ...``
      through a handler of their own, propagate to the JSON handler instead.
    """
    import importlib.util

    logging.captureWarnings(True)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if transformers and importlib.util.find_spec("transformers") is not None:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.disable_default_handler()
        hf_logging.enable_propagation()


access_log = logging.getLogger("travel_slm.access")
