"""``travel-slm schemas``: export the JSON Schemas of the contract from the pydantic models.

The models are the single source of truth; the exported files under ``contracts/schemas/`` are
committed and a test keeps them equal to a fresh export.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
PACKAGE_SCHEMAS = Path(__file__).resolve().parent / "schemas"


def _schema(model: type[BaseModel], title: str) -> dict[str, Any]:
    schema = model.model_json_schema(by_alias=True, mode="validation")
    return {"$schema": SCHEMA_DIALECT, "$id": f"travel-slm/{title}", **schema}


def contract_schemas() -> dict[str, dict[str, Any]]:
    """File name -> JSON Schema, for every schema the code validates or constrains with."""
    from contracts.extract import ExtractOutput
    from contracts.render import ToolSummary, TypedRenderOutput
    from contracts.turn import Turn
    from contracts.widgets import PAYLOAD_MODELS, Envelope

    files = {
        "extract_output.schema.json": _schema(ExtractOutput, "extract_output.schema.json"),
        "render_output.schema.json": _schema(TypedRenderOutput, "render_output.schema.json"),
        "tool_summary.schema.json": _schema(ToolSummary, "tool_summary.schema.json"),
        "turn.schema.json": _schema(Turn, "turn.schema.json"),
        "_envelope.schema.json": _schema(Envelope, "_envelope.schema.json"),
    }
    for widget_type, model in PAYLOAD_MODELS.items():
        name = f"{widget_type}.schema.json"
        files[name] = _schema(model, name)
    return files


def render_file(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def export(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in contract_schemas().items():
        path = out / name
        path.write_text(render_file(schema), encoding="utf-8")
        written.append(path)
    return written


def stale_files(directory: Path = PACKAGE_SCHEMAS) -> list[str]:
    """Names whose committed file differs from a fresh export (missing and extra files too)."""
    expected = {name: render_file(schema) for name, schema in contract_schemas().items()}
    present = {p.name for p in directory.glob("*.json")} if directory.is_dir() else set()
    stale = [n for n, text in expected.items()
             if n not in present or (directory / n).read_text(encoding="utf-8") != text]
    return sorted(stale + [n for n in present if n not in expected])


def _command(args: argparse.Namespace) -> int:
    if args.check:
        stale = stale_files(Path(args.out))
        if stale:
            print(f"travel-slm schemas: out of date in {args.out}: {', '.join(stale)}", file=sys.stderr)
            return 1
        print(f"schemas in {args.out} are up to date")
        return 0
    try:
        written = export(Path(args.out))
    except OSError as exc:
        print(f"travel-slm schemas: cannot write {args.out}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    print(f"wrote {len(written)} schemas to {args.out}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("schemas", help="export the contract's JSON Schemas from the pydantic models",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(PACKAGE_SCHEMAS), metavar="DIR",
                   help=f"output folder (default: the package's own {PACKAGE_SCHEMAS.name}/ folder)")
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 if DIR differs from a fresh export")
    p.set_defaults(func=_command)
