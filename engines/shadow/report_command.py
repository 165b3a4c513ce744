"""``travel-slm shadow report [--store URL] [--since] [--json] [--html FILE]``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

EPILOG = """\
stores:
  sqlite:///shadow.db                      one server's file (relative; sqlite:////abs/path for an absolute one)
  postgresql://user:pw@host:5432/db        the fleet's database: every pod writes there, so this report is the
                                           fleet-wide verdict (needs pip install 'travel-slm[postgres]'; the
                                           password is never printed: give it in the URL, PGPASSWORD or ~/.pgpass)

exit status: 0 the report was printed; 1 the gate failed (with --fail-on-gate);
             2 bad arguments or settings, no store there, or the store cannot be read (one line on stderr)
"""


def _command(args: argparse.Namespace) -> int:
    from core.settings import ConfigFileError, load_settings
    from engines.shadow.report import format_html, format_table, parse_since, report_from_store
    from engines.shadow.store import StoreReadError, StoreURLError, backend_for, parse_store_url, reading

    def fail(message: str) -> int:
        print(f"travel-slm shadow report: {message}", file=sys.stderr)
        return 2

    try:
        settings = load_settings(args.config) if args.config else load_settings()
    except ConfigFileError as exc:
        return fail(str(exc))
    url = args.store or settings.shadow.store
    try:
        since = parse_since(args.since)
        target = parse_store_url(url)
        backend_for(target)  # a postgresql store without psycopg: one line
    except (ValueError, StoreURLError) as exc:
        return fail(str(exc))
    min_turns = args.min_turns if args.min_turns is not None else settings.shadow.min_turns_per_class
    try:
        with reading(url) as reader:
            present = reader is not None
        if not present:
            where = target.path if target.path is not None else f"{target.display} (no shadow tables yet)"
            return fail(f"no shadow store at {where} (is shadow mode on? TRAVEL_SLM_SHADOW__ENABLED=true)")
        report = report_from_store(url, since=since, min_turns_per_class=min_turns)
    except StoreReadError as exc:
        return fail(f"the shadow store {target.display} cannot be read: {exc}")
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
                       "shadow latency p50/p95, fallbacks, drops and losses, and the gate of docs/shadow.md §9. "
                       "Computed with SQL aggregates: memory does not grow with the number of records.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--store", default=None, help="store URL, sqlite:///path.db or postgresql://... (default: "
                   "settings, TRAVEL_SLM_SHADOW__STORE, else sqlite:///shadow.db)")
    p.add_argument("--since", default=None, help="only records since: 24h, 7d, 30m or an ISO date/time")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--html", metavar="FILE", default=None, help="write a self-contained HTML report with charts")
    p.add_argument("--min-turns", type=int, default=None, help="turns needed per class by the gate "
                   "(default: shadow.min_turns_per_class, 500)")
    p.add_argument("--config", default=None, help="config file (.toml, .json, .yaml) for the settings")
    p.add_argument("--fail-on-gate", action="store_true", help="exit 1 when the gate fails")
    p.set_defaults(func=_command)
