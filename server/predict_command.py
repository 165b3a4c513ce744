"""``travel-slm predict``: one pass on one turn, JSON in on stdin, JSON out on stdout."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import TYPE_CHECKING

from pydantic import ValidationError

from contracts.planner import ExtractionShapeError, Notes, normalise_extraction, normalise_tool_summary
from contracts.turn import RenderRequest
from contracts.vocab import ENGINES, PASSES
from engines.shadow.redact import json_line

if TYPE_CHECKING:
    from core.settings import Settings
    from engines.fallback import Served

DESCRIPTION = """Run one pass on one turn.

stdin holds a turn (`{"event_type", "event_payload", "slot_state", ...}`), or for either pass a
request object `{"turn": ..., "extraction"?: ..., "tool_summary"?: ...}`. The served output (after
validation and, for model engines, fallback) is printed on stdout as one JSON line. The turn's and the
request's tool_summary may be ours ({ok, tool, data}) or the live planner's tool_result, and the
extraction any live extract_turn shape; what was mapped or dropped is listed on stderr. A pass that
fell back prints "fell back (<reason>): <detail>" on stderr; with fallback.serve = error it prints
nothing on stdout and exits with status 1. Bad input prints one line on stderr and exits with status 2."""


class InputError(ValueError):
    pass


def _first_error(exc: ValidationError) -> str:
    err = exc.errors(include_url=False)[0]
    loc = ".".join(str(p) for p in err["loc"]) or "<root>"
    return f"{loc}: {err['msg']}"


def parse_input(raw: str, pass_name: str, notes: Notes | None = None) -> RenderRequest:
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise InputError(f"stdin is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    if not isinstance(data, dict):
        raise InputError("stdin must hold a JSON object (a turn, or {turn, extraction?, tool_summary?})")
    if not isinstance(data.get("turn"), dict):
        data = {"turn": data}
    elif pass_name == "extract":
        data = {"turn": data["turn"]}
    try:
        request = RenderRequest.model_validate(data)
    except ValidationError as exc:
        raise InputError(f"invalid input: {_first_error(exc)}") from None
    if request.extraction is not None:
        try:
            extraction, clears = normalise_extraction(request.extraction, notes)
        except ExtractionShapeError as exc:
            raise InputError(f"invalid extraction: {exc}") from None
        turn = request.turn
        if clears:  # a null update clears the slot the render reads
            turn = turn.model_copy(update={"slot_state": {k: v for k, v in (turn.slot_state or {}).items()
                                                          if k not in clears}})
        request = request.model_copy(update={"extraction": extraction, "turn": turn})
    return request


async def predict(request: RenderRequest, pass_name: str, engine_name: str, settings: Settings) -> Served:
    from engines.fallback import PassRunner
    from engines.registry import build_engine

    engine = build_engine(engine_name, settings)
    await engine.start()
    try:
        runner = PassRunner.from_settings(settings, {engine_name: engine}, policy="serve")
        turn = request.turn.engine_input()
        if isinstance(turn.get("tool_summary"), dict):
            turn["tool_summary"] = normalise_tool_summary(turn["tool_summary"])
        if pass_name == "extract":
            return await runner.extract(turn, engine_name)
        extraction = request.extraction
        if extraction is None:
            extracted = await runner.extract(turn, engine_name)
            if extracted.fallback_used and settings.fallback.serve == "error":
                return extracted
            extraction = extracted.document
        summary = request.tool_summary.model_dump() if request.tool_summary is not None else None
        return await runner.render(turn, extraction, summary, engine_name)
    finally:
        await engine.aclose()


def _command(args: argparse.Namespace) -> int:
    from core.settings import ConfigFileError, load_settings
    from server.errors import fallback_detail

    notes = Notes()
    try:
        settings = load_settings(args.config)
        request = parse_input(sys.stdin.read(), args.pass_name, notes)
    except (InputError, ConfigFileError) as exc:
        print(f"travel-slm predict: {exc}", file=sys.stderr)
        return 2
    for note in notes.items:
        print(f"travel-slm predict: input {note.action}: {note.path} ({note.rule})", file=sys.stderr)
    try:
        served = asyncio.run(predict(request, args.pass_name, args.engine, settings))
    except Exception as exc:
        print(f"travel-slm predict: engine {args.engine!r} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    if served.fallback_used:
        detail = fallback_detail(served.error)
        print(f"travel-slm predict: the {served.pass_name} pass fell back ({served.fallback_reason})"
              + (f": {detail}" if detail else ""), file=sys.stderr)
        if settings.fallback.serve == "error":
            return 1
    print(json_line(served.document))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("predict", help="run one pass on one turn read from stdin",
                              description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pass", dest="pass_name", required=True, choices=PASSES, help="which pass")
    p.add_argument("--engine", default="deterministic", choices=ENGINES,
                   help="engine (default: deterministic)")
    p.add_argument("--config", metavar="FILE", help="settings file (.toml, .json, .yaml)")
    p.set_defaults(func=_command)
