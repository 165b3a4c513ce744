"""The shadow store: redaction before the file, flush on clean shutdown, overflow drops, retention."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pytest

from engines.shadow.redact import CARD, EMAIL, PHONE, redact, redact_record, redact_text
from engines.shadow.store import (
    ShadowStore,
    StoreURLError,
    parse_store_url,
    read_store,
    redact_dsn,
    store_path,
)


def _record(i: int, *, ts: str | None = None, text: str = "hello", pass_: str = "extract") -> dict:
    return {"kind": "slm_shadow_comparison", "ts": ts or "2099-01-01T00:00:00.000Z", "request_id": f"req-{i}",
            "pass": pass_, "turn": {"event_type": "user_message", "event_payload": {"text": text}, "slot_state": {}},
            "agreement": {"tool_match": True}, "error": None}


def _rows(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT COUNT(*) FROM shadow_records").fetchone()[0]


# -- redaction -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "expected"), [
    ("write to jane.doe+trips@example.co.uk please", f"write to {EMAIL} please"),
    ("call me on +1 (415) 555-0100 tonight", f"call me on {PHONE} tonight"),
    ("mobile 020 7946 0958", f"mobile {PHONE}"),
    ("digits 123456789", f"digits {PHONE}"),
    ("pay with 4111 1111 1111 1111 now", f"pay with {CARD} now"),
    ("card 5500-0000-0000-0004", f"card {CARD}"),
    ("amex 378282246310005.", f"amex {CARD}."),
    # not redacted: fewer than 9 digits, dates, prices, flight numbers, timestamps
    ("room 12345678", "room 12345678"),
    ("from 2026-07-10 to 2026-07-14", "from 2026-07-10 to 2026-07-14"),
    ("flight AA101 at 2026-07-10T08:00:00 for 480.00 USD", "flight AA101 at 2026-07-10T08:00:00 for 480.00 USD"),
    ("Paris for 2 adults", "Paris for 2 adults"),
])
def test_redact_text(text: str, expected: str) -> None:
    assert redact_text(text) == expected


def test_redact_walks_nested_values_and_keys() -> None:
    # a card sent as a JSON number is redacted too (issue 11, redaction gaps); ordinary numbers stay numbers
    value = {"text": "a@b.io", "submitted_value": {"phone": "+44 20 7946 0958", "n": 4111111111111111, "adults": 2},
             "list": ["x", "4111111111111111", 480.5], "a@b.io": 1}
    assert redact(value) == {"text": EMAIL, "submitted_value": {"phone": PHONE, "n": CARD, "adults": 2},
                             "list": ["x", CARD, 480.5], EMAIL: 1}


def test_redact_record_leaves_ids_and_timestamps_alone() -> None:
    rec = _record(1, text="mail x@y.com")
    rec["request_id"] = "1234567890-1234"  # looks like a phone number, is an id
    out = redact_record(rec)
    assert out["request_id"] == "1234567890-1234" and out["ts"] == rec["ts"]
    assert out["turn"]["event_payload"]["text"] == f"mail {EMAIL}"
    assert rec["turn"]["event_payload"]["text"] == "mail x@y.com"  # the original is not mutated


# -- URLs ------------------------------------------------------------------------------------------

def test_store_url_forms(tmp_path: Path) -> None:
    assert store_path("sqlite:///shadow.db") == Path("shadow.db")
    assert store_path(f"sqlite:///{tmp_path}/s.db") == tmp_path / "s.db"
    assert store_path(str(tmp_path / "x.db")) == tmp_path / "x.db"
    for server in ("postgresql://u:pw@db:5432/shadow", "postgres://db/shadow", "postgresql:///shadow?host=/run/pg"):
        target = parse_store_url(server)
        assert target.backend == "postgresql" and target.path is None and store_path(server) is None
    for bad in ("mysql://h/db", "sqlite:///", "sqlite:///:memory:", "sqlite://relative.db", "postgresql://"):
        with pytest.raises(StoreURLError):
            store_path(bad)


@pytest.mark.parametrize(("url", "shown"), [
    ("postgresql://travel:s3cr%40t@db.internal:5432/shadow?sslmode=require",
     "postgresql://travel:***@db.internal:5432/shadow?sslmode=require"),
    ("postgres://travel@db/shadow?password=s3cr%40t&connect_timeout=3",
     "postgres://travel@db/shadow?password=***&connect_timeout=3"),
    ("postgresql://db/shadow", "postgresql://db/shadow"),
])
def test_a_dsn_is_shown_without_its_password(url: str, shown: str) -> None:
    target = parse_store_url(url)
    assert redact_dsn(url) == target.display == shown
    # the password is scrubbed from any text, raw or URL-encoded, and so is the whole DSN
    text = f"could not connect with {url}: password s3cr@t / s3cr%40t rejected"
    scrubbed = target.scrub(text)
    if "s3cr" in url:
        assert "s3cr" not in scrubbed and "***" in scrubbed
    else:
        assert scrubbed == text  # nothing secret to remove


# -- writing ---------------------------------------------------------------------------------------

def test_pii_never_reaches_the_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/s.db"
    store = ShadowStore(url, redactor=redact_record)
    store.start()
    secrets = ["traveller.one@example.com", "+1 (415) 555-0100", "4111 1111 1111 1111", "5500000000000004"]
    for i, secret in enumerate(secrets):
        rec = _record(i, text=f"my details: {secret}")
        rec["live_render"] = {"bot_message": f"Booked for {secret}", "widgets": []}
        rec["error"] = f"engine echoed {secret}"
        store.append(rec)
    assert store.flush()
    # grep the bytes while the writer is still running (WAL file included), and after the close
    def raw() -> bytes:
        return b"".join(p.read_bytes() for p in tmp_path.iterdir())
    for blob in (raw(), (store.close(), raw())[1]):
        for secret in secrets:
            assert secret.encode() not in blob
            assert secret.replace(" ", "").encode() not in blob
        assert b"REDACTED_EMAIL" in blob and b"REDACTED_PHONE" in blob and b"REDACTED_CARD" in blob
    records = read_store(url).records
    assert len(records) == 4
    assert all("[REDACTED_" in r["turn"]["event_payload"]["text"] for r in records)


def test_one_json_object_per_row_and_wal_mode(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/s.db"
    store = ShadowStore(url)
    store.start()
    store.append(_record(1))
    store.close()
    with sqlite3.connect(tmp_path / "s.db") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        (text,) = conn.execute("SELECT record FROM shadow_records").fetchone()
    assert json.loads(text) == _record(1)


def test_clean_shutdown_flushes_every_pending_record(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/s.db"
    store = ShadowStore(url, batch_size=16)
    store.start()
    n = 3000
    accepted = sum(store.append(_record(i)) for i in range(n))
    assert accepted == n
    store.close()  # no flush() first: close alone must write everything queued
    assert _rows(tmp_path / "s.db") == n
    assert [r["request_id"] for r in read_store(url).records] == [f"req-{i}" for i in range(n)]
    assert store.append(_record(n)) is False  # closed: refused, not queued
    store.close()  # idempotent


def _wait(cond, what: str, timeout: float = 30.0) -> None:
    """Poll ``cond`` (a hang guard, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_full_queue_drops_and_counts_instead_of_growing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/s.db"
    store = ShadowStore(url, queue_size=5)
    store.start()
    _wait(lambda: store.state == "ok", "the store to open")
    # stall the writer for real: another connection holds the write lock
    blocker = sqlite3.connect(tmp_path / "s.db", isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        assert store.append(_record(100))
        _wait(lambda: store.pending == 0, "the writer to take the first record and block on the lock")
        results = [store.append(_record(i)) for i in range(20)]
        assert results.count(True) == 5 and results.count(False) == 15
        assert store.overflowed == 15 and store.pending == 5
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    # the writer then drains the six and writes the overflow as drops
    store.close()
    contents = read_store(url)
    assert len(contents.records) == 6
    assert contents.drops == {"extract": 15}


def test_drops_are_stored_per_pass(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/s.db"
    store = ShadowStore(url)
    store.start()
    for _ in range(7):
        store.record_drop("render")
    store.record_drop("extract", 2)
    store.close()
    assert read_store(url).drops == {"render": 7, "extract": 2}


def test_retention_by_count(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/s.db"
    store = ShadowStore(url, retention_max_rows=10)
    store.start()
    for i in range(25):
        store.append(_record(i))
    store.close()  # retention runs at close
    assert [r["request_id"] for r in read_store(url).records] == [f"req-{i}" for i in range(15, 25)]


def test_retention_by_age(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/s.db"
    store = ShadowStore(url)  # no retention while writing
    store.start()
    store.append(_record(1, ts="2020-01-01T00:00:00Z"))
    store.append(_record(2, ts=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 3 * 86400))))
    store.append(_record(3, ts=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())))
    store.close()
    assert len(read_store(url).records) == 3
    again = ShadowStore(url, retention_days=2)
    again.start()  # retention also runs when the store opens
    again.close()
    assert [r["request_id"] for r in read_store(url).records] == ["req-3"]


def test_since_filters_records(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/s.db"
    store = ShadowStore(url)
    store.start()
    store.append(_record(1, ts="2026-01-01T00:00:00Z"))
    store.append(_record(2, ts="2026-03-01T00:00:00Z"))
    store.close()
    from engines.shadow.report import parse_since

    since = parse_since("2026-02-01")
    assert [r["request_id"] for r in read_store(url, since).records] == ["req-2"]


def test_reading_a_missing_store_is_empty(tmp_path: Path) -> None:
    contents = read_store(f"sqlite:///{tmp_path}/absent.db")
    assert contents.records == [] and contents.drops == {}
    assert not (tmp_path / "absent.db").exists()
