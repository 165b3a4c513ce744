"""Issue 11, finding 4: the shadow report is computed with SQL aggregates, in memory that does not grow
with the number of records, and gives exactly the report of the records in memory; retention defaults
fit the 2 Gi volume."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.settings import ShadowSettings
from engines.agreement import FIELDS
from engines.shadow.report import build_report, report_from_store
from engines.shadow.store import ShadowStore

REPO = Path(__file__).resolve().parent.parent

_latency = st.one_of(st.none(), st.integers(0, 5000), st.floats(0, 40_000, allow_nan=False), st.booleans(),
                     st.just("12"))
_agreement = st.one_of(st.none(), st.dictionaries(st.sampled_from(FIELDS), st.one_of(st.booleans(), st.none(),
                                                                                     st.integers(0, 1))))


@st.composite
def shadow_record(draw: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {"kind": "slm_shadow_comparison", "ts": 4_000_000_000.0 + draw(st.integers(0, 100)),
                           "pass": draw(st.sampled_from(["extract", "extract", "render", "render", "other"]))}
    optional = {
        "class": st.one_of(st.none(), st.just(""), st.sampled_from(["show_hotels|hotelbeds", "collect_missing|none"])),
        "fell_back": st.one_of(st.none(), st.booleans()),
        "fallback_reason": st.one_of(st.none(), st.sampled_from(["timeout", "error", "schema_invalid"])),
        "shadow_extract": st.one_of(st.none(), st.just({"slot_updates": {}})),
        "shadow_render": st.one_of(st.none(), st.just({"widgets": []})),
        "schema_valid": st.one_of(st.none(), st.booleans(), st.just("yes")),
        "live_latency_ms": _latency,
        "shadow_latency_ms": _latency,
        "agreement": _agreement,
    }
    for key, strategy in optional.items():
        if draw(st.booleans()) or key in ("pass",):
            rec[key] = draw(strategy)
    return rec


def _comparable(report: Any) -> dict[str, Any]:
    body = report.as_json()
    body.pop("generated_at")
    body.pop("store")
    return body


def _legacy_store(path: Path, records: list[dict[str, Any]]) -> str:
    """A store file in the format written before the report columns existed."""
    with sqlite3.connect(path) as conn:
        conn.executescript("CREATE TABLE shadow_records (id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, "
                           "pass TEXT NOT NULL, record TEXT NOT NULL); CREATE TABLE shadow_drops (ts REAL NOT NULL, "
                           "pass TEXT NOT NULL, n INTEGER NOT NULL);")
        conn.executemany("INSERT INTO shadow_records (ts, pass, record) VALUES (?, ?, ?)",
                         [(r["ts"], r["pass"], json.dumps(r)) for r in records])
    return f"sqlite:///{path}"


def check_store_report_equals_the_in_memory_one(url: str, records: list[dict[str, Any]], min_turns: int) -> None:
    """Write ``records`` and 3 render drops to the (empty) store at ``url``; its SQL report, whole and since a
    time, equals the in-memory report of the same records (shared by the SQLite and PostgreSQL tiers)."""
    store = ShadowStore(url)
    store.start()
    for rec in records:
        assert store.append(rec)
    store.record_drop("render", 3)
    store.close()
    expected = build_report(records, {"render": 3}, min_turns_per_class=min_turns)
    assert _comparable(report_from_store(url, min_turns_per_class=min_turns)) == _comparable(expected)
    since = 4_000_000_050.0
    later = [r for r in records if r["ts"] >= since]
    assert (_comparable(report_from_store(url, since=since, min_turns_per_class=min_turns))
            == _comparable(build_report(later, {}, min_turns_per_class=min_turns, since=since)))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(records=st.lists(shadow_record(), max_size=60), min_turns=st.integers(1, 5))
def test_sql_report_equals_the_in_memory_report(tmp_path_factory: Any, records: list[dict[str, Any]],
                                                min_turns: int) -> None:
    folder = tmp_path_factory.mktemp("rep")
    url = f"sqlite:///{folder}/s.db"
    check_store_report_equals_the_in_memory_one(url, records, min_turns)

    # a file of the previous format: read through the JSON, then migrated in place on open
    legacy = _legacy_store(folder / "old.db", records)
    plain = build_report(records, {}, min_turns_per_class=min_turns)
    assert _comparable(report_from_store(legacy, min_turns_per_class=min_turns)) == _comparable(plain)
    migrated = ShadowStore(legacy)
    migrated.start()
    assert migrated.flush()
    migrated.close()
    assert migrated.health()["error"] is None
    assert _comparable(report_from_store(legacy, min_turns_per_class=min_turns)) == _comparable(plain)


def _big_record(i: int) -> dict[str, Any]:
    text = f"hotels in Paris for 2 adults, trip {i} " * 8
    doc = {"slot_updates": {"region": {"label": "Paris", "city_code": "PAR", "kind": "city"},
                            "party": {"adults": 2, "children": [], "rooms": 1}},
           "tool_requests": [{"tool": "mcp/hotelbeds.search_hotels", "arguments": {"city": "Paris", "adults": 2,
                                                                                   "note": text}}],
           "render_intent": {"kind": "show_hotels"}}
    return {"kind": "slm_shadow_comparison", "ts": time.time(), "request_id": f"r{i}", "pass": "extract",
            "turn": {"event_type": "user_message", "event_payload": {"text": text}, "slot_state": {}},
            "live_extract": doc, "shadow_extract": doc, "agreement": dict.fromkeys(FIELDS[:4], i % 7 != 0),
            "schema_valid": True, "live_latency_ms": (i % 97) / 10.0, "shadow_latency_ms": float(i % 1013),
            "fell_back": i % 11 == 0, "fallback_reason": "timeout" if i % 11 == 0 else None,
            "class": f"show_hotels|c{i % 5}"}


def _fill(path: Path, n: int) -> None:
    from engines.shadow.store import REPORT_COLUMNS, report_values

    store = ShadowStore(f"sqlite:///{path}")  # creates the current schema
    store.start()
    assert store.flush()
    store.close()
    columns = ", ".join(REPORT_COLUMNS)
    marks = ", ".join("?" for _ in range(3 + len(REPORT_COLUMNS)))
    with sqlite3.connect(path) as conn:
        conn.executemany(f"INSERT INTO shadow_records (ts, pass, record, {columns}) VALUES ({marks})",
                         ((r["ts"], r["pass"], json.dumps(r), *report_values(r)) for r in map(_big_record, range(n))))


_MEASURE = """
import json, resource, sys
from engines.shadow.report import report_from_store
report = report_from_store(sys.argv[1], min_turns_per_class=10)
print(json.dumps({"records": report.records, "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def _report_rss(path: Path) -> dict[str, int]:
    proc = subprocess.run([sys.executable, "-c", _MEASURE, f"sqlite:///{path}"], cwd=REPO, capture_output=True,
                          text=True, timeout=600, check=True)
    return json.loads(proc.stdout)


def test_report_memory_does_not_grow_with_the_number_of_records(tmp_path: Path) -> None:
    small, large = tmp_path / "small.db", tmp_path / "large.db"
    _fill(small, 5_000)
    _fill(large, 40_000)  # about 90 MB of records: loading them would take several hundred MB
    a, b = _report_rss(small), _report_rss(large)
    assert (a["records"], b["records"]) == (5_000, 40_000)
    assert b["maxrss_kb"] - a["maxrss_kb"] < 24 * 1024, (a, b)


def test_retention_defaults_fit_the_shadow_volume() -> None:
    # records average about 3 KB; the base deployment gives the store a 2 Gi emptyDir
    rows = ShadowSettings().retention_max_rows
    assert rows is not None and rows * 3 * 1024 * 2 < 2 * 1024**3  # twice the data (WAL, free pages) still fits
