"""The shadow store: comparison records in SQLite (one JSON object a row), written off the request path.

Writing: :class:`ShadowStore` owns one writer thread and a bounded queue. :meth:`ShadowStore.append`
never blocks and never raises: when the queue is full the record is dropped and counted (the count
is written as a drop). The writer commits in batches (WAL mode), applies retention by age and by
row count, and on :meth:`ShadowStore.close` drains everything still queued before it stops, so a
clean shutdown loses no record.

A ``redactor`` (the runner passes :func:`engines.shadow.redact.redact_record`) is applied to every record
in the writer thread, before it is serialised: nothing unredacted reaches the file.

Reading: :func:`read_store` opens its own connection and returns the records (optionally since a
time) and the drop counts; the report is computed from that.
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

log = logging.getLogger("travel_slm.shadow.store")

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


def _connect(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    if readonly:
        # mode=rw: never creates the file; a reader of a WAL database may need to create its -shm file
        conn = sqlite3.connect(f"file:{path}?mode=rw", uri=True, timeout=30.0, check_same_thread=False)
        conn.execute("PRAGMA query_only=ON")
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(path), timeout=30.0, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.executescript(_SCHEMA)
        conn.commit()
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
        redactor: Callable[[Any], Any] | None = None,
    ) -> None:
        self.url = url
        self.path = store_path(url)
        self.retention_days = retention_days
        self.retention_max_rows = retention_max_rows
        self.batch_size = batch_size
        self.retention_every_s = retention_every_s
        self.redactor = redactor
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self._thread: threading.Thread | None = None
        self._closed = False
        self._lock = threading.Lock()
        self._overflow: dict[str, int] = {}
        self.written = 0
        self.overflowed = 0
        self.write_errors = 0

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        """Create the file and tables, apply retention once, and start the writer thread."""
        if self._thread is not None:
            return
        conn = _connect(self.path)  # fail here, at start-up, on a bad path
        self._apply_retention(conn)
        self._thread = threading.Thread(target=self._run, args=(conn,), name="shadow-store-writer", daemon=True)
        self._thread.start()
        log.info("shadow store open", extra={"path": str(self.path)})

    def close(self, timeout: float | None = 30.0) -> None:
        """Write everything still queued, then stop the writer. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if self._thread is None or not self._thread.is_alive():
            return
        try:  # blocking put: the stop marker goes in behind every pending record
            self._queue.put(_STOP, timeout=timeout)
        except queue.Full:
            log.error("shadow store queue did not drain in time")
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error("shadow store writer did not stop in time", extra={"pending": self._queue.qsize()})

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    # -- writing (any thread; never blocks, never raises) ------------------------------------------

    def append(self, record: dict[str, Any]) -> bool:
        """Queue one record; ``False`` (and a counted drop) when the queue is full or the store closed."""
        return self._offer(record, record.get("pass", "unknown"))

    def record_drop(self, pass_name: str, n: int = 1) -> None:
        """Count shadow runs that were dropped before running (in-flight limit)."""
        self._offer(_Drop(pass_name, n), pass_name)

    def _offer(self, item: Any, pass_name: str) -> bool:
        if self._closed or self._thread is None:
            return False
        try:
            self._queue.put_nowait(item)
            return True
        except queue.Full:
            with self._lock:
                self.overflowed += 1
                self._overflow[pass_name] = self._overflow.get(pass_name, 0) + 1
            return False

    def flush(self, timeout: float | None = 10.0) -> bool:
        """Wait until everything queued before this call is committed."""
        if self._thread is None or not self._thread.is_alive():
            return self._queue.empty()
        marker = _Flush()
        try:
            self._queue.put(marker, timeout=timeout)
        except queue.Full:
            return False
        return marker.done.wait(timeout)

    # -- the writer thread -------------------------------------------------------------------------

    def _run(self, conn: sqlite3.Connection) -> None:
        last_retention = time.monotonic()
        stop = False
        try:
            while not stop:
                try:
                    first = self._queue.get(timeout=1.0)
                except queue.Empty:
                    first = None
                batch: list[Any] = [] if first is None else [first]
                while len(batch) < self.batch_size:
                    try:
                        batch.append(self._queue.get_nowait())
                    except queue.Empty:
                        break
                stop = any(item is _STOP for item in batch)
                self._write(conn, batch)
                if stop or time.monotonic() - last_retention >= self.retention_every_s:
                    self._apply_retention(conn)
                    last_retention = time.monotonic()
                for item in batch:
                    if isinstance(item, _Flush):
                        item.done.set()
        finally:
            # a stop marker was seen: anything still queued (a racing append) is written too
            rest: list[Any] = []
            while True:
                try:
                    rest.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            self._write(conn, rest)
            for item in rest:
                if isinstance(item, _Flush):
                    item.done.set()
            conn.close()

    def _write(self, conn: sqlite3.Connection, batch: list[Any]) -> None:
        rows: list[tuple[float, str, str]] = []
        drops: dict[str, int] = {}
        for item in batch:
            if isinstance(item, dict):
                try:
                    if self.redactor is not None:
                        item = self.redactor(item)
                    rows.append((_epoch(item.get("ts")), str(item.get("pass", "unknown")),
                                 json.dumps(item, ensure_ascii=False, separators=(",", ":"), default=str)))
                except Exception:
                    self.write_errors += 1
                    log.exception("shadow record could not be prepared")
            elif isinstance(item, _Drop):
                drops[item.pass_name] = drops.get(item.pass_name, 0) + item.n
        with self._lock:
            for pass_name, n in self._overflow.items():
                drops[pass_name] = drops.get(pass_name, 0) + n
            self._overflow.clear()
        if not rows and not drops:
            return
        now = time.time()
        try:
            with conn:
                if rows:
                    conn.executemany("INSERT INTO shadow_records (ts, pass, record) VALUES (?, ?, ?)", rows)
                if drops:
                    conn.executemany("INSERT INTO shadow_drops (ts, pass, n) VALUES (?, ?, ?)",
                                     [(now, p, n) for p, n in sorted(drops.items())])
            self.written += len(rows)
        except sqlite3.Error:
            self.write_errors += len(rows)
            log.exception("shadow store write failed", extra={"rows": len(rows)})

    def _apply_retention(self, conn: sqlite3.Connection) -> None:
        try:
            with conn:
                if self.retention_days is not None:
                    cutoff = time.time() - self.retention_days * 86400.0
                    conn.execute("DELETE FROM shadow_records WHERE ts < ?", (cutoff,))
                    conn.execute("DELETE FROM shadow_drops WHERE ts < ?", (cutoff,))
                if self.retention_max_rows is not None:
                    conn.execute(
                        "DELETE FROM shadow_records WHERE id <= (SELECT id FROM shadow_records "
                        "ORDER BY id DESC LIMIT 1 OFFSET ?)",
                        (self.retention_max_rows,),
                    )
        except sqlite3.Error:
            log.exception("shadow store retention failed")


# -- reading ---------------------------------------------------------------------------------------


@dataclass
class StoreContents:
    records: list[dict[str, Any]]
    drops: dict[str, int]


def iter_records(url: str, since: float | None = None) -> Iterator[dict[str, Any]]:
    """Records in insertion order, optionally only those at or after ``since`` (epoch seconds)."""
    path = store_path(url)
    if not path.exists():
        return
    conn = _connect(path, readonly=True)
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


def read_drops(url: str, since: float | None = None) -> dict[str, int]:
    path = store_path(url)
    if not path.exists():
        return {}
    conn = _connect(path, readonly=True)
    try:
        sql = "SELECT pass, SUM(n) FROM shadow_drops"
        args: tuple[Any, ...] = ()
        if since is not None:
            sql += " WHERE ts >= ?"
            args = (since,)
        return {p: int(n) for p, n in conn.execute(sql + " GROUP BY pass", args)}
    finally:
        conn.close()


def read_store(url: str, since: float | None = None) -> StoreContents:
    return StoreContents(records=list(iter_records(url, since)), drops=read_drops(url, since))
