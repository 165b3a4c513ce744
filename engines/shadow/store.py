"""The shadow store: comparison records in SQLite (one JSON object a row), written off the request path.

Writing: :class:`ShadowStore` owns one writer thread and a bounded queue. :meth:`ShadowStore.append`
never blocks and never raises: when the queue is full the record is dropped and counted (the count
is written as a drop). The writer commits in batches (one transaction per batch, WAL mode), applies
retention by age and by row count, and on :meth:`ShadowStore.close` drains everything still queued
before it stops, so a clean shutdown loses no record.

Faults degrade shadow mode only, never the live side (issue 11): the store never raises at start-up
(a read-only directory, a corrupt or truncated file, a parent path that is a file); it reports
``state = "failed"`` with the error, keeps retrying to open the file every ``retry_s``, and counts the
records it cannot keep as *lost*. A failed write (a full disk) loses its batch: the records are counted
as lost by pass (``lost``), persisted in ``shadow_losses`` as soon as a later write succeeds, and shown
by the report, ``/v1/stats``, ``/healthz`` and the metrics. Whatever the writer loop raises, it logs,
counts (``restarts``), reconnects and goes on; a writer thread that died anyway is restarted by the next
:meth:`append`. A ``listener`` (the app's metrics) is told about every error and loss.

A ``redactor`` (the runner passes :func:`engines.shadow.redact.redact_record`) is applied to every record
in the writer thread, before it is serialised: nothing unredacted reaches the file. Text is written with
:func:`engines.shadow.redact.json_line`, which escapes lone surrogates instead of failing on them.

Each row also carries the few figures the report needs (class, fell back, reason, schema validity,
latencies, agreement per field) in columns, so the report is computed with SQL aggregates in bounded
memory (:mod:`engines.shadow.report`); an older file is migrated on open.

Reading: :func:`read_store` opens its own connection and returns the records (optionally since a
time) and the drop counts (small stores, tests); the report reads :func:`report_columns` instead.
"""

from __future__ import annotations

import json
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from engines.agreement import FIELDS
from engines.shadow.redact import json_line

log = logging.getLogger("travel_slm.shadow.store")

#: the report's figures, one column each (name -> SQL type), written beside the JSON record
AGREE_COLUMNS: dict[str, str] = {f: f"a_{f.removesuffix('_match')}" for f in FIELDS}
REPORT_COLUMNS: dict[str, str] = {
    "class": "TEXT", "fell_back": "INTEGER", "reason": "TEXT", "has_doc": "INTEGER", "schema_ok": "INTEGER",
    "live_ms": "REAL", "shadow_ms": "REAL", **dict.fromkeys(AGREE_COLUMNS.values(), "INTEGER"),
}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS shadow_records (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    pass TEXT NOT NULL,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS shadow_records_ts ON shadow_records (ts);
CREATE TABLE IF NOT EXISTS shadow_drops (
    ts REAL NOT NULL,
    pass TEXT NOT NULL,
    n INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS shadow_drops_ts ON shadow_drops (ts);
CREATE TABLE IF NOT EXISTS shadow_losses (
    ts REAL NOT NULL,
    pass TEXT NOT NULL,
    n INTEGER NOT NULL,
    cause TEXT NOT NULL
);
"""


class StoreURLError(ValueError):
    pass


def store_path(url: str) -> Path:
    """The SQLite file of a store URL.

    ``sqlite:///shadow.db`` is ``shadow.db`` relative to the working directory,
    ``sqlite:////var/lib/travel-slm/shadow.db`` is absolute; a bare path is accepted as is.
    """
    if url.startswith("sqlite:///"):
        rest = url[len("sqlite:///"):]
    elif "://" in url:
        raise StoreURLError(f"unsupported shadow store {url.split('://', 1)[0]!r}: only sqlite:/// is built in")
    else:
        rest = url
    if not rest or rest == ":memory:":
        raise StoreURLError("the shadow store needs a file path (sqlite:///path/to/shadow.db)")
    return Path(rest)


def _legacy_expr(column: str) -> str:
    """The SQL expression that computes a report column from the JSON record (old rows, old files)."""
    if column == "class":
        return "COALESCE(NULLIF(json_extract(record, '$.class'), ''), 'unknown|none')"
    if column == "fell_back":
        return "(CASE WHEN json_extract(record, '$.fell_back') THEN 1 ELSE 0 END)"
    if column == "reason":
        return "COALESCE(NULLIF(json_extract(record, '$.fallback_reason'), ''), 'unknown')"
    if column == "has_doc":
        return ("(IFNULL(json_type(record, CASE pass WHEN 'extract' THEN '$.shadow_extract' "
                "ELSE '$.shadow_render' END), 'null') != 'null')")
    if column == "schema_ok":
        return "(IFNULL(json_type(record, '$.schema_valid'), '') = 'true')"
    if column in ("live_ms", "shadow_ms"):
        key = "live_latency_ms" if column == "live_ms" else "shadow_latency_ms"
        return (f"(CASE WHEN json_type(record, '$.{key}') IN ('integer', 'real') "
                f"THEN json_extract(record, '$.{key}') END)")
    field_name = next(f for f, c in AGREE_COLUMNS.items() if c == column)
    return (f"(CASE json_type(record, '$.agreement.{field_name}') WHEN 'true' THEN 1 "
            f"WHEN 'false' THEN 0 END)")


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def report_values(record: dict[str, Any]) -> tuple[Any, ...]:
    """The report columns of one record, in :data:`REPORT_COLUMNS` order (the same rules as :func:`_legacy_expr`
    and :func:`engines.shadow.report.build_report`)."""
    pass_ = record.get("pass")
    agreement = record.get("agreement") if isinstance(record.get("agreement"), dict) else {}
    doc = record.get("shadow_extract" if pass_ == "extract" else "shadow_render")
    values: list[Any] = [
        str(record.get("class") or "unknown|none"),
        1 if record.get("fell_back") else 0,
        str(record.get("fallback_reason") or "unknown"),
        1 if doc is not None else 0,
        1 if record.get("schema_valid") is True else 0,
        _number(record.get("live_latency_ms")),
        _number(record.get("shadow_latency_ms")),
    ]
    for f in AGREE_COLUMNS:
        v = agreement.get(f)
        values.append((1 if v else 0) if isinstance(v, bool) else None)
    return tuple(values)


def _has_report_columns(conn: sqlite3.Connection) -> bool:
    have = {row[1] for row in conn.execute("PRAGMA table_info(shadow_records)")}
    return set(REPORT_COLUMNS) <= have


def _migrate(conn: sqlite3.Connection) -> None:
    """Add the report columns to a file written by an older version and fill them from the JSON."""
    have = {row[1] for row in conn.execute("PRAGMA table_info(shadow_records)")}
    missing = [c for c in REPORT_COLUMNS if c not in have]
    if not missing:
        return
    with conn:
        for column in missing:
            conn.execute(f"ALTER TABLE shadow_records ADD COLUMN {column} {REPORT_COLUMNS[column]}")
        sets = ", ".join(f"{c} = {_legacy_expr(c)}" for c in REPORT_COLUMNS)
        conn.execute(f"UPDATE shadow_records SET {sets}")
    log.info("shadow store migrated", extra={"columns": missing})


def _connect(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    if readonly:
        # mode=rw: never creates the file; a reader of a WAL database may need to create its -shm file
        conn = sqlite3.connect(f"file:{path}?mode=rw", uri=True, timeout=30.0, check_same_thread=False)
        conn.execute("PRAGMA query_only=ON")
        return conn
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), timeout=30.0, check_same_thread=False)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.executescript(_SCHEMA)
        conn.commit()
        _migrate(conn)
        # a corrupt or truncated file can open and still fail here: find out now, not at the first write
        row = conn.execute("PRAGMA quick_check(1)").fetchone()
        if row is None or row[0] != "ok":
            raise sqlite3.DatabaseError(f"quick_check: {row[0] if row else 'no answer'}")
    except BaseException:
        conn.close()
        raise
    return conn


def _epoch(ts: Any) -> float:
    if isinstance(ts, int | float):
        return float(ts)
    if isinstance(ts, str):
        try:
            parsed = datetime.fromisoformat(ts.replace("Z", "+00:00"))
        except ValueError:
            return time.time()
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return parsed.timestamp()
    return time.time()


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:300]


@dataclass
class _Flush:
    done: threading.Event = field(default_factory=threading.Event)


@dataclass
class _Drop:
    pass_name: str
    n: int = 1


_STOP = object()


class ShadowStore:
    """Asynchronous SQLite writer of shadow records."""

    def __init__(
        self,
        url: str,
        *,
        retention_days: float | None = None,
        retention_max_rows: int | None = None,
        queue_size: int = 10_000,
        batch_size: int = 256,
        retention_every_s: float = 60.0,
        retry_s: float = 5.0,
        redactor: Callable[[Any], Any] | None = None,
        listener: Any = None,
    ) -> None:
        self.url = url
        self.path = store_path(url)
        self.retention_days = retention_days
        self.retention_max_rows = retention_max_rows
        self.batch_size = batch_size
        self.retention_every_s = retention_every_s
        self.retry_s = retry_s
        self.redactor = redactor
        self.listener = listener
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self._thread: threading.Thread | None = None
        self._closed = False
        self._started = False
        self._lock = threading.Lock()
        self._overflow: dict[str, int] = {}
        self._unpersisted_losses: dict[tuple[str, str], int] = {}
        self.written = 0
        self.overflowed = 0
        self.write_errors = 0
        self.restarts = 0
        self.lost: dict[str, int] = {}
        self.state = "new"
        self.last_error: str | None = None

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the writer thread, which opens (or creates, or migrates) the file. Never raises: a store
        that cannot be opened reports ``state = "failed"`` and keeps retrying."""
        with self._lock:
            if self._started:
                return
            self._started = True
        self._start_thread()

    def _start_thread(self) -> None:
        self._thread = threading.Thread(target=self._run, name="shadow-store-writer", daemon=True)
        self._thread.start()

    def close(self, timeout: float | None = 30.0) -> None:
        """Write everything still queued, then stop the writer. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if self._thread is None or not self._thread.is_alive():
            self.state = "closed"
            return
        try:  # blocking put: the stop marker goes in behind every pending record
            self._queue.put(_STOP, timeout=timeout)
        except queue.Full:
            log.error("shadow store queue did not drain in time")
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error("shadow store writer did not stop in time", extra={"pending": self._queue.qsize()})
        self.state = "closed"

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    @property
    def lost_total(self) -> int:
        return sum(self.lost.values())

    def unpersisted_losses(self) -> dict[str, int]:
        """Losses counted in memory that are not in ``shadow_losses`` yet (the file could not take them)."""
        with self._lock:
            out: dict[str, int] = {}
            for (pass_name, _cause), n in self._unpersisted_losses.items():
                out[pass_name] = out.get(pass_name, 0) + n
            return out

    def health(self) -> dict[str, Any]:
        """What ``/healthz`` and ``/v1/stats`` show about the store."""
        alive = self._thread is not None and self._thread.is_alive()
        return {"state": self.state, "ok": self.state in ("ok", "closed", "new"), "error": self.last_error,
                "writer_alive": alive, "written": self.written, "lost": dict(self.lost), "lost_total": self.lost_total,
                "write_errors": self.write_errors, "restarts": self.restarts, "pending": self.pending,
                "overflowed": self.overflowed}

    # -- writing (any thread; never blocks, never raises) ------------------------------------------

    def append(self, record: dict[str, Any]) -> bool:
        """Queue one record; ``False`` (and a counted drop) when the queue is full or the store closed."""
        return self._offer(record, record.get("pass", "unknown"))

    def record_drop(self, pass_name: str, n: int = 1) -> None:
        """Count shadow runs that were dropped before running (in-flight limit)."""
        self._offer(_Drop(pass_name, n), pass_name)

    def _offer(self, item: Any, pass_name: str) -> bool:
        if self._closed or not self._started:
            return False
        if self._thread is None or not self._thread.is_alive():
            self._revive()
        try:
            self._queue.put_nowait(item)
            return True
        except queue.Full:
            with self._lock:
                self.overflowed += 1
                self._overflow[pass_name] = self._overflow.get(pass_name, 0) + 1
            return False

    def _revive(self) -> None:
        with self._lock:
            if self._closed or (self._thread is not None and self._thread.is_alive()):
                return
            self.restarts += 1
        log.error("shadow store writer was not running: restarted", extra={"restarts": self.restarts})
        self._notify("shadow_store_error", "writer_restart")
        self._start_thread()

    def flush(self, timeout: float | None = 10.0) -> bool:
        """Wait until everything queued before this call is committed (or counted as lost)."""
        if self._thread is None or not self._thread.is_alive():
            return self._queue.empty()
        marker = _Flush()
        try:
            self._queue.put(marker, timeout=timeout)
        except queue.Full:
            return False
        return marker.done.wait(timeout)

    # -- the writer thread -------------------------------------------------------------------------

    def _notify(self, name: str, *args: Any) -> None:
        if self.listener is None:
            return
        try:
            getattr(self.listener, name)(*args)
        except Exception:
            log.debug("shadow store listener %s failed", name, exc_info=True)

    def _fail(self, kind: str, exc: BaseException) -> None:
        self.last_error = _describe(exc)
        self.state = "failed" if kind == "open" else "degraded"
        self._notify("shadow_store_error", kind)
        self._notify("shadow_store_up", False)

    def _open(self) -> sqlite3.Connection | None:
        try:
            conn = _connect(self.path)
        except Exception as exc:
            self._fail("open", exc)
            log.error("shadow store cannot be opened; shadow records are counted as lost until it can",
                      extra={"path": str(self.path), "error": self.last_error, "retry_s": self.retry_s})
            return None
        self.state, self.last_error = "ok", None
        self._notify("shadow_store_up", True)
        log.info("shadow store open", extra={"path": str(self.path)})
        self._apply_retention(conn)
        return conn

    def _take_batch(self, wait_s: float) -> list[Any]:
        try:
            first = self._queue.get(timeout=wait_s)
        except queue.Empty:
            return []
        batch: list[Any] = [first]
        while len(batch) < self.batch_size:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        next_open = 0.0
        last_retention = time.monotonic()
        stop = False
        while not stop:
            batch: list[Any] = []
            try:
                if conn is None and time.monotonic() >= next_open:
                    conn = self._open()
                    if conn is None:
                        next_open = time.monotonic() + self.retry_s
                    last_retention = time.monotonic()
                batch = self._take_batch(1.0 if conn is not None else min(1.0, self.retry_s))
                stop = any(item is _STOP for item in batch)
                if stop:  # a stop marker: anything still queued (a racing append) is written too
                    while True:
                        try:
                            batch.append(self._queue.get_nowait())
                        except queue.Empty:
                            break
                if conn is None:
                    self._lose(batch, "store_unavailable")
                else:
                    self._write(conn, batch)
                    if stop or time.monotonic() - last_retention >= self.retention_every_s:
                        self._apply_retention(conn)
                        last_retention = time.monotonic()
            except Exception as exc:  # never let the writer die: count, reconnect, go on
                self.restarts += 1
                self._fail("writer", exc)
                log.exception("shadow store writer failed; reconnecting", extra={"restarts": self.restarts})
                self._lose(batch, "writer_error")
                if conn is not None:
                    try:
                        conn.close()
                    except Exception:
                        log.debug("closing the shadow store after a failure failed", exc_info=True)
                conn, next_open = None, time.monotonic() + min(self.retry_s, 1.0)
            finally:
                for item in batch:
                    if isinstance(item, _Flush):
                        item.done.set()
        if conn is not None:
            conn.close()

    def _lose(self, batch: list[Any], cause: str) -> None:
        """Count the records of ``batch`` as lost (and its drops as drops lost with them)."""
        lost: dict[str, int] = {}
        for item in batch:
            if isinstance(item, dict):
                p = str(item.get("pass", "unknown"))
                lost[p] = lost.get(p, 0) + 1
        self._count_lost(lost, cause)

    def _count_lost(self, lost: dict[str, int], cause: str) -> None:
        if not lost:
            return
        with self._lock:
            for p, n in lost.items():
                self.lost[p] = self.lost.get(p, 0) + n
                self._unpersisted_losses[(p, cause)] = self._unpersisted_losses.get((p, cause), 0) + n
        for p, n in lost.items():
            self._notify("shadow_lost", p, cause, n)

    def _prepare(self, item: dict[str, Any]) -> tuple[Any, ...]:
        if self.redactor is not None:
            item = self.redactor(item)
        return (_epoch(item.get("ts")), str(item.get("pass", "unknown")), json_line(item), *report_values(item))

    def _write(self, conn: sqlite3.Connection, batch: list[Any]) -> None:
        rows: list[tuple[Any, ...]] = []
        drops: dict[str, int] = {}
        unusable: dict[str, int] = {}
        for item in batch:
            if isinstance(item, dict):
                try:
                    rows.append(self._prepare(item))
                except Exception:
                    p = str(item.get("pass", "unknown"))
                    unusable[p] = unusable.get(p, 0) + 1
                    log.exception("shadow record could not be prepared")
            elif isinstance(item, _Drop):
                drops[item.pass_name] = drops.get(item.pass_name, 0) + item.n
        self._count_lost(unusable, "unserialisable")
        with self._lock:
            for pass_name, n in self._overflow.items():
                drops[pass_name] = drops.get(pass_name, 0) + n
            self._overflow.clear()
            losses = dict(self._unpersisted_losses)
        if not rows and not drops and not losses:
            return
        now = time.time()
        columns = ", ".join(REPORT_COLUMNS)
        marks = ", ".join("?" for _ in range(3 + len(REPORT_COLUMNS)))
        try:
            with conn:
                if rows:
                    conn.executemany(f"INSERT INTO shadow_records (ts, pass, record, {columns}) VALUES ({marks})",
                                     rows)
                if drops:
                    conn.executemany("INSERT INTO shadow_drops (ts, pass, n) VALUES (?, ?, ?)",
                                     [(now, p, n) for p, n in sorted(drops.items())])
                if losses:
                    conn.executemany("INSERT INTO shadow_losses (ts, pass, n, cause) VALUES (?, ?, ?, ?)",
                                     [(now, p, n, c) for (p, c), n in sorted(losses.items())])
        except sqlite3.Error as exc:
            self.write_errors += 1
            self._fail("write", exc)
            log.error("shadow store write failed; the batch is counted as lost",
                      extra={"rows": len(rows), "error": self.last_error})
            with self._lock:  # the drops are not lost: they go in with the next write
                for p, n in drops.items():
                    self._overflow[p] = self._overflow.get(p, 0) + n
            lost: dict[str, int] = {}
            for row in rows:
                lost[row[1]] = lost.get(row[1], 0) + 1
            self._count_lost(lost, "write_failed")
            return
        with self._lock:
            for key, n in losses.items():
                left = self._unpersisted_losses.get(key, 0) - n
                if left > 0:
                    self._unpersisted_losses[key] = left
                else:
                    self._unpersisted_losses.pop(key, None)
        self.written += len(rows)
        if self.state != "ok":
            self.state, self.last_error = "ok", None
            self._notify("shadow_store_up", True)

    def _apply_retention(self, conn: sqlite3.Connection) -> None:
        try:
            with conn:
                if self.retention_days is not None:
                    cutoff = time.time() - self.retention_days * 86400.0
                    conn.execute("DELETE FROM shadow_records WHERE ts < ?", (cutoff,))
                    conn.execute("DELETE FROM shadow_drops WHERE ts < ?", (cutoff,))
                    conn.execute("DELETE FROM shadow_losses WHERE ts < ?", (cutoff,))
                if self.retention_max_rows is not None:
                    conn.execute(
                        "DELETE FROM shadow_records WHERE id <= (SELECT id FROM shadow_records "
                        "ORDER BY id DESC LIMIT 1 OFFSET ?)",
                        (self.retention_max_rows,),
                    )
        except sqlite3.Error as exc:
            self._notify("shadow_store_error", "retention")
            log.error("shadow store retention failed", extra={"error": _describe(exc)})


# -- reading ---------------------------------------------------------------------------------------


@dataclass
class StoreContents:
    records: list[dict[str, Any]]
    drops: dict[str, int]


def open_reader(url: str) -> sqlite3.Connection | None:
    """A read-only connection to the store, or None when the file does not exist."""
    path = store_path(url)
    if not path.exists():
        return None
    return _connect(path, readonly=True)


def report_columns(conn: sqlite3.Connection) -> dict[str, str]:
    """column -> the SQL expression that reads it (the column itself, or the JSON for an unmigrated file)."""
    migrated = _has_report_columns(conn)
    return {c: (c if migrated else _legacy_expr(c)) for c in REPORT_COLUMNS}


def iter_records(url: str, since: float | None = None) -> Iterator[dict[str, Any]]:
    """Records in insertion order, optionally only those at or after ``since`` (epoch seconds)."""
    conn = open_reader(url)
    if conn is None:
        return
    try:
        sql = "SELECT record FROM shadow_records"
        args: tuple[Any, ...] = ()
        if since is not None:
            sql += " WHERE ts >= ?"
            args = (since,)
        for (text,) in conn.execute(sql + " ORDER BY id", args):
            try:
                yield json.loads(text)
            except ValueError:
                log.warning("unreadable shadow record skipped")
    finally:
        conn.close()


def _sum_by_pass(conn: sqlite3.Connection, table: str, since: float | None) -> dict[str, int]:
    sql = f"SELECT pass, SUM(n) FROM {table}"
    args: tuple[Any, ...] = ()
    if since is not None:
        sql += " WHERE ts >= ?"
        args = (since,)
    try:
        return {p: int(n) for p, n in conn.execute(sql + " GROUP BY pass", args)}
    except sqlite3.OperationalError:  # a file from before the table existed
        return {}


def read_drops(url: str, since: float | None = None) -> dict[str, int]:
    conn = open_reader(url)
    if conn is None:
        return {}
    try:
        return _sum_by_pass(conn, "shadow_drops", since)
    finally:
        conn.close()


def read_losses(url: str, since: float | None = None) -> dict[str, int]:
    """Records lost by pass (write failures, an unusable store), as persisted in ``shadow_losses``."""
    conn = open_reader(url)
    if conn is None:
        return {}
    try:
        return _sum_by_pass(conn, "shadow_losses", since)
    finally:
        conn.close()


def read_store(url: str, since: float | None = None) -> StoreContents:
    return StoreContents(records=list(iter_records(url, since)), drops=read_drops(url, since))
