"""``travel-slm shadow report [--store URL] [--since] [--json] [--html FILE]``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _command(args: argparse.Namespace) -> int:
    from engines.shadow.report import format_html, format_table, parse_since, report_from_store
    from engines.shadow.store import StoreURLError, store_path
    from server.config import load_settings

    settings = load_settings(args.config) if args.config else load_settings()
    url = args.store or settings.shadow.store
    try:
        since = parse_since(args.since)
        path = store_path(url)
    except (ValueError, StoreURLError) as exc:
        print(f"travel-slm shadow report: {exc}", file=sys.stderr)
        return 2
    if not path.exists():
        print(f"travel-slm shadow report: no shadow store at {path} (is shadow mode on? "
              "TRAVEL_SLM_SHADOW__ENABLED=true)", file=sys.stderr)
        return 2
    min_turns = args.min_turns if args.min_turns is not None else settings.shadow.min_turns_per_class
    report = report_from_store(url, since=since, min_turns_per_class=min_turns)
    if args.html:
        Path(args.html).write_text(format_html(report), encoding="utf-8")
        print(f"wrote {args.html}", file=sys.stderr)
    if args.json:
        print(json.dumps(report.as_json(), indent=2))
    elif not args.html:
        print(format_table(report))
    if args.fail_on_gate and not report.gate.passed:
        return 1
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    shadow = subparsers.add_parser("shadow", help="shadow mode: compare a candidate engine with the live one")
    sub = shadow.add_subparsers(dest="shadow_command", metavar="SUBCOMMAND", required=True)
    p = sub.add_parser("report", help="agreement, latency, fallbacks, drops and the promotion gate",
                       description="Summarise the shadow store: agreement per field, pass and class, live and "
                       "shadow latency p50/p95, fallbacks and drops, and the gate of service.md section 5.")
    p.add_argument("--store", default=None, help="store URL (default: settings, TRAVEL_SLM_SHADOW__STORE, "
                   "else sqlite:///shadow.db)")
    p.add_argument("--since", default=None, help="only records since: 24h, 7d, 30m or an ISO date/time")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--html", metavar="FILE", default=None, help="write a self-contained HTML report with charts")
    p.add_argument("--min-turns", type=int, default=None, help="turns needed per class by the gate "
                   "(default: shadow.min_turns_per_class, 500)")
    p.add_argument("--config", default=None, help="config file (.toml, .json, .yaml) for the settings")
    p.add_argument("--fail-on-gate", action="store_true", help="exit 1 when the gate fails")
    p.set_defaults(func=_command)
