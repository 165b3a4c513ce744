"""The shadow store: comparison records (one JSON object a row), written off the request path.

One interface, two backends (:mod:`engines.shadow.store_base`): ``sqlite:///path.db`` (the default, one file
per process, :mod:`engines.shadow.store_sqlite`) and ``postgresql://...`` (one database for the whole fleet,
:mod:`engines.shadow.store_postgres`, with ``pip install 'travel-slm[postgres]'``). Everything below holds
for both.

Writing: :class:`ShadowStore` owns one writer thread and a bounded queue. :meth:`ShadowStore.append`
never blocks and never raises: when the queue is full the record is dropped and counted (the count
is written as a drop). The writer commits in batches (one transaction per batch), applies retention by age
and by row count in the database, and on :meth:`ShadowStore.close` drains everything still queued before it
stops, so a clean shutdown loses no record.

Faults degrade shadow mode only, never the live side (issue 11): the store never raises at start-up (a
read-only directory, a corrupt or truncated file, a parent path that is a file, a PostgreSQL server that is
down or refuses the login); it reports ``state = "failed"`` with the error, keeps retrying every ``retry_s``,
and counts the records it cannot keep as *lost*. A failed write (a full disk, a server that stopped) loses
its batch: the records are counted as lost by pass (``lost``), persisted in ``shadow_losses`` as soon as a
later write succeeds, and shown by the report, ``/v1/stats``, ``/healthz`` and the metrics. A connection that
broke (the server stopped) is closed and opened again once the server is back. Whatever the writer loop
raises, it logs, counts (``restarts``), reconnects and goes on; a writer thread that died anyway is restarted
by the next :meth:`append`. A ``listener`` (the app's metrics) is told about every error and loss.

A ``redactor`` (the runner passes :func:`engines.shadow.redact.redact_record`) is applied to every record
in the writer thread, before it is serialised: nothing unredacted reaches the store. Text is written with
:func:`engines.shadow.redact.json_line`, which escapes lone surrogates instead of failing on them. A DSN's
password is never logged, shown in ``/healthz`` or put in an error text (:meth:`StoreTarget.scrub`).

Each row also carries the few figures the report needs (class, fell back, reason, schema validity,
latencies, agreement per field) in columns, so the report is computed with SQL aggregates in bounded
memory (:mod:`engines.shadow.report`).

Reading: :func:`reading` opens a :class:`~engines.shadow.store_base.StoreReader` (any backend error becomes
a :class:`StoreReadError`); :func:`read_store` returns the records (optionally since a time) and the drop
counts (small stores, tests); the report reads aggregates instead.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from core.store_url import StoreTarget, StoreURLError, parse_store_url, redact_dsn
from engines.shadow.observe import notify
from engines.shadow.redact import json_line
from engines.shadow.store_base import (
    AGREE_COLUMNS,
    REPORT_COLUMNS,
    SCHEMA_VERSION,
    Backend,
    BackendConnection,
    StoreReader,
    StoreReadError,
    backend_for,
    describe_error,
    report_values,
)

__all__ = [
    "AGREE_COLUMNS",
    "REPORT_COLUMNS",
    "SCHEMA_VERSION",
    "ShadowStore",
    "StoreContents",
    "StoreReadError",
    "StoreTarget",
    "StoreURLError",
    "backend_for",
    "iter_records",
    "parse_store_url",
    "read_drops",
    "read_losses",
    "read_store",
    "reading",
    "redact_dsn",
    "report_values",
    "store_path",
]

log = logging.getLogger("travel_slm.shadow.store")

#: a writer busy in one database call for longer than this is shown as stalled in /healthz
STALL_S = 60.0


def store_path(url: str) -> Path | None:
    """The SQLite file of a store URL (None for a PostgreSQL store); :class:`StoreURLError` when unusable.

    ``sqlite:///shadow.db`` is ``shadow.db`` relative to the working directory,
    ``sqlite:////var/lib/travel-slm/shadow.db`` is absolute; a bare path is accepted as is.
    """
    return parse_store_url(url).path


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
    """Asynchronous writer of shadow records to a SQLite file or a PostgreSQL database."""

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
        self.target = parse_store_url(url)
        self.backend: Backend = backend_for(self.target)
        self.url = url
        self.path = self.target.path
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
        self._busy_since: float | None = None
        self.written = 0
        self.overflowed = 0
        self.write_errors = 0
        self.restarts = 0
        self.reconnects = 0
        self.lost: dict[str, int] = {}
        self.state = "new"
        self.last_error: str | None = None

    @property
    def location(self) -> str:
        """Where the records go, as it may be shown (a DSN without its password)."""
        return self.target.display

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the writer thread, which opens (or creates, or migrates) the store. Never raises: a store
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
        """Losses counted in memory that are not in ``shadow_losses`` yet (the store could not take them)."""
        with self._lock:
            out: dict[str, int] = {}
            for (pass_name, _cause), n in self._unpersisted_losses.items():
                out[pass_name] = out.get(pass_name, 0) + n
            return out

    def health(self) -> dict[str, Any]:
        """What ``/healthz`` and ``/v1/stats`` show about the store (never the DSN's password)."""
        alive = self._thread is not None and self._thread.is_alive()
        busy = self._busy_since
        stalled = busy is not None and time.monotonic() - busy > STALL_S
        return {"state": self.state, "ok": self.state in ("ok", "closed", "new") and not stalled,
                "error": self.last_error, "backend": self.backend.name, "location": self.location,
                "writer_alive": alive, "stalled": stalled, "written": self.written, "lost": dict(self.lost),
                "lost_total": self.lost_total, "write_errors": self.write_errors, "restarts": self.restarts,
                "reconnects": self.reconnects, "pending": self.pending, "overflowed": self.overflowed}

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
        notify(self.listener, name, *args)

    def _describe(self, exc: BaseException) -> str:
        return describe_error(exc, self.target)

    def _fail(self, kind: str, exc: BaseException) -> None:
        self.last_error = self._describe(exc)
        self.state = "failed" if kind == "open" else "degraded"
        self._notify("shadow_store_error", kind)
        self._notify("shadow_store_up", False)

    def _open(self) -> BackendConnection | None:
        self._busy_since = time.monotonic()
        try:
            conn = self.backend.connect()
        except Exception as exc:
            self._fail("open", exc)
            log.error("shadow store cannot be opened; shadow records are counted as lost until it can",
                      extra={"store": self.location, "error": self.last_error, "retry_s": self.retry_s})
            return None
        finally:
            self._busy_since = None
        self.state, self.last_error = "ok", None
        self._notify("shadow_store_up", True)
        log.info("shadow store open", extra={"backend": self.backend.name, "store": self.location})
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

    def _drop_connection(self, conn: BackendConnection) -> None:
        try:
            conn.close()
        except Exception:
            log.debug("closing the shadow store connection failed", exc_info=True)

    def _run(self) -> None:
        conn: BackendConnection | None = None
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
                    if not conn.broken and (stop or time.monotonic() - last_retention >= self.retention_every_s):
                        self._apply_retention(conn)
                        last_retention = time.monotonic()
                    if conn.broken:  # the server went away: reconnect (soon, then every retry_s)
                        log.warning("shadow store connection lost; reconnecting", extra={"store": self.location})
                        self._drop_connection(conn)
                        self.reconnects += 1
                        conn, next_open = None, time.monotonic() + min(self.retry_s, 1.0)
            except Exception as exc:  # never let the writer die: count, reconnect, go on
                self.restarts += 1
                self._fail("writer", exc)
                frame = traceback.extract_tb(exc.__traceback__)[-1:] or [None]
                where = f"{frame[0].filename}:{frame[0].lineno}" if frame[0] is not None else None
                # the traceback only for a file store: a database driver's texts are not scrubbed in it
                log.error("shadow store writer failed; reconnecting",
                          exc_info=exc if self.backend.name == "sqlite" else None,
                          extra={"restarts": self.restarts, "error": self.last_error, "where": where})
                self._lose(batch, "writer_error")
                if conn is not None:
                    self._drop_connection(conn)
                conn, next_open = None, time.monotonic() + min(self.retry_s, 1.0)
            finally:
                self._busy_since = None
                for item in batch:
                    if isinstance(item, _Flush):
                        item.done.set()
        if conn is not None:
            self._drop_connection(conn)

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

    def _write(self, conn: BackendConnection, batch: list[Any]) -> None:
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
        self._busy_since = time.monotonic()
        try:
            conn.write(rows, drops, losses, time.time())
        except self.backend.errors as exc:
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
        finally:
            self._busy_since = None
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

    def _apply_retention(self, conn: BackendConnection) -> None:
        cutoff = None if self.retention_days is None else time.time() - self.retention_days * 86400.0
        if cutoff is None and self.retention_max_rows is None:
            return
        self._busy_since = time.monotonic()
        try:
            conn.apply_retention(cutoff, self.retention_max_rows)
        except self.backend.errors as exc:
            self._notify("shadow_store_error", "retention")
            log.error("shadow store retention failed", extra={"error": self._describe(exc)})
        finally:
            self._busy_since = None


# -- reading ---------------------------------------------------------------------------------------


@dataclass
class StoreContents:
    records: list[dict[str, Any]]
    drops: dict[str, int]


@contextmanager
def reading(url: str) -> Iterator[StoreReader | None]:
    """A reader of the store (None when there is none yet: no SQLite file, no tables). Every error of the
    backend, opening or reading, is raised as a :class:`StoreReadError` whose text holds no password."""
    target = parse_store_url(url)
    backend = backend_for(target)
    reader: StoreReader | None = None
    try:
        reader = backend.open_reader()
        yield reader
    except StoreReadError:
        raise
    except backend.errors as exc:
        raise StoreReadError(describe_error(exc, target)) from None
    finally:
        if reader is not None:
            try:
                reader.close()
            except Exception:
                log.debug("closing the shadow store reader failed", exc_info=True)


def iter_records(url: str, since: float | None = None) -> Iterator[dict[str, Any]]:
    """Records in insertion order, optionally only those at or after ``since`` (epoch seconds)."""
    with reading(url) as reader:
        if reader is None:
            return
        sql = "SELECT record FROM shadow_records"
        args: tuple[Any, ...] = ()
        if since is not None:
            sql += " WHERE ts >= ?"
            args = (since,)
        for (text,) in reader.iterate(sql + " ORDER BY id", args):
            try:
                yield json.loads(text)
            except ValueError:
                log.warning("unreadable shadow record skipped")


def read_drops(url: str, since: float | None = None) -> dict[str, int]:
    with reading(url) as reader:
        return {} if reader is None else reader.sum_by_pass("shadow_drops", since)


def read_losses(url: str, since: float | None = None) -> dict[str, int]:
    """Records lost by pass (write failures, an unusable store), as persisted in ``shadow_losses``."""
    with reading(url) as reader:
        return {} if reader is None else reader.sum_by_pass("shadow_losses", since)


def read_store(url: str, since: float | None = None) -> StoreContents:
    return StoreContents(records=list(iter_records(url, since)), drops=read_drops(url, since))
