"""What both shadow store backends share: the report columns, the backend interface, redacted errors.

A store URL (:mod:`core.store_url`: parsing, the driver check, DSN redaction) names a backend:
``sqlite:///path.db`` or a bare path (:mod:`engines.shadow.store_sqlite`, the default, one file per process)
or ``postgresql://user:password@host:5432/db`` (:mod:`engines.shadow.store_postgres`, one database for every
pod, needs ``pip install 'travel-slm[postgres]'``); :func:`backend_for` opens the one a
:class:`~core.store_url.StoreTarget` names. A DSN's password never leaves this process: errors are described
through :meth:`StoreTarget.scrub <core.store_url.StoreTarget.scrub>` (:func:`describe_error`).

The writer (:class:`engines.shadow.store.ShadowStore`) talks to a backend through :class:`Backend` and
:class:`BackendConnection`; the report (:mod:`engines.shadow.report`) reads through :class:`StoreReader`,
whose SQL is the portable subset both databases run the same way. The writes, the retention and the count
sums are the same SQL on both backends, written once here (:class:`WriterSQL`, :class:`SQLReader`).
"""

from __future__ import annotations

import sqlite3
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from typing import Any, Generic, Protocol, TypeVar

from core.store_url import POSTGRES_INSTALL, BackendName, StoreTarget, StoreURLError
from engines.agreement import FIELDS

#: the layout both backends create (``shadow_schema_version``); 1 was the SQLite file without report columns
SCHEMA_VERSION = 2

#: the report's figures, one column each (name -> SQL type), written beside the JSON record
AGREE_COLUMNS: dict[str, str] = {f: f"a_{f.removesuffix('_match')}" for f in FIELDS}
REPORT_COLUMNS: dict[str, str] = {
    "class": "TEXT", "fell_back": "INTEGER", "reason": "TEXT", "has_doc": "INTEGER", "schema_ok": "INTEGER",
    "live_ms": "REAL", "shadow_ms": "REAL", **dict.fromkeys(AGREE_COLUMNS.values(), "INTEGER"),
}


class StoreReadError(sqlite3.OperationalError):
    """The store cannot be read (an unreachable server, a corrupt file); the message is redacted.

    It derives from :class:`sqlite3.OperationalError` so that a caller written for the SQLite store (the
    report route answers 503 on ``sqlite3.Error``) treats every backend's read failure the same way.
    """


def describe_error(exc: BaseException, target: StoreTarget, limit: int = 300) -> str:
    """``Type: message`` on one line (a driver's message may span several), without the password."""
    return " ".join(target.scrub(f"{type(exc).__name__}: {exc}").split())[:limit]


# -- the report columns ----------------------------------------------------------------------------


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def report_values(record: dict[str, Any]) -> tuple[Any, ...]:
    """The report columns of one record, in :data:`REPORT_COLUMNS` order (the same rules as
    :func:`engines.shadow.report.build_report`)."""
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


#: one prepared record: (ts, pass, JSON text, *report values)
Row = tuple[Any, ...]


# -- the backend interface -------------------------------------------------------------------------


class BackendConnection(Protocol):
    """One open writer connection (used by the writer thread only)."""

    @property
    def broken(self) -> bool:
        """True when the connection is gone (a server that stopped): the writer reconnects."""
        ...

    def write(self, rows: Sequence[Row], drops: dict[str, int], losses: dict[tuple[str, str], int],
              now: float) -> None:
        """Records, drop counts and loss counts in one transaction; raises one of ``Backend.errors``."""
        ...

    def apply_retention(self, cutoff: float | None, max_rows: int | None) -> None: ...

    def close(self) -> None: ...


class StoreReader(Protocol):
    """A read-only view of the store. SQL uses ``?`` placeholders and the portable subset of SQLite and
    PostgreSQL (no boolean arithmetic, no output aliases in WHERE)."""

    #: report column -> the SQL expression that reads it
    columns: dict[str, str]

    def query(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...

    def iterate(self, sql: str, args: Sequence[Any] = ()) -> Iterator[tuple[Any, ...]]:
        """Rows one at a time (a server-side cursor where there is one): memory does not grow with the rows."""
        ...

    def sum_by_pass(self, table: str, since: float | None) -> dict[str, int]: ...

    def close(self) -> None: ...


class Backend(Protocol):
    name: BackendName
    target: StoreTarget
    #: exceptions of a failed write or read (the batch is counted as lost, the report answers 503)
    errors: tuple[type[BaseException], ...]

    def connect(self) -> BackendConnection:
        """Open (and create, or migrate, idempotently) the store; raises when it cannot be used."""
        ...

    def open_reader(self) -> StoreReader | None:
        """A reader, or None when there is no store yet (a SQLite file that does not exist)."""
        ...


# -- the SQL both writers run ------------------------------------------------------------------------

#: the tables of the store, each with a ``ts`` column (retention by age applies to all of them)
TABLES = ("shadow_records", "shadow_drops", "shadow_losses")


class _Executes(Protocol):
    """A DB-API connection or cursor (``sqlite3.Connection``, a psycopg cursor or connection)."""

    def execute(self, sql: Any, params: Any = ..., /) -> Any: ...


class _ExecutesMany(Protocol):
    def executemany(self, sql: Any, params_seq: Any, /) -> Any: ...


class WriterSQL:
    """The writer's statements (a batch's inserts, retention's deletes), written once for both backends with
    the driver's placeholder (``?`` for sqlite3, ``%s`` for psycopg)."""

    def __init__(self, placeholder: str) -> None:
        def marks(n: int) -> str:
            return ", ".join(placeholder for _ in range(n))

        self.insert_record = (f"INSERT INTO shadow_records (ts, pass, record, {', '.join(REPORT_COLUMNS)}) "
                              f"VALUES ({marks(3 + len(REPORT_COLUMNS))})")
        self.insert_drops = f"INSERT INTO shadow_drops (ts, pass, n) VALUES ({marks(3)})"
        self.insert_losses = f"INSERT INTO shadow_losses (ts, pass, n, cause) VALUES ({marks(4)})"
        self.delete_before = {table: f"DELETE FROM {table} WHERE ts < {placeholder}" for table in TABLES}
        self.keep_newest = ("DELETE FROM shadow_records WHERE id <= (SELECT id FROM shadow_records "
                            f"ORDER BY id DESC LIMIT 1 OFFSET {placeholder})")

    def write(self, db: _ExecutesMany, rows: Sequence[Row], drops: dict[str, int],
              losses: dict[tuple[str, str], int], now: float) -> None:
        """The inserts of one batch (the caller holds the transaction): records, drop and loss counts."""
        if rows:
            db.executemany(self.insert_record, rows)
        if drops:
            db.executemany(self.insert_drops, [(now, p, n) for p, n in sorted(drops.items())])
        if losses:
            db.executemany(self.insert_losses, [(now, p, n, c) for (p, c), n in sorted(losses.items())])

    def retain(self, db: _Executes, cutoff: float | None, max_rows: int | None) -> None:
        """Delete the rows older than ``cutoff``, then all but the newest ``max_rows`` records (the caller holds
        the transaction)."""
        if cutoff is not None:
            for sql in self.delete_before.values():
                db.execute(sql, (cutoff,))
        if max_rows is not None:
            db.execute(self.keep_newest, (max_rows,))


class _Closes(Protocol):
    def close(self) -> None: ...


DriverConnection = TypeVar("DriverConnection", bound=_Closes)


class OpenConnection(Generic[DriverConnection]):
    """One open driver connection (``sqlite3`` or ``psycopg``) that a writer or a reader wraps and closes."""

    def __init__(self, conn: DriverConnection) -> None:
        self.conn = conn

    def close(self) -> None:
        self.conn.close()


class SQLReader(OpenConnection[DriverConnection], ABC):
    """A :class:`StoreReader` over one connection: a backend runs the SQL, the sums are the same SQL on both."""

    columns: dict[str, str]

    @abstractmethod
    def query(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...

    def sum_by_pass(self, table: str, since: float | None) -> dict[str, int]:
        """``SUM(n)`` per pass of a count table (drops, losses), since ``since`` when given."""
        sql = f"SELECT pass, SUM(n) FROM {table}"
        args: tuple[Any, ...] = ()
        if since is not None:
            sql += " WHERE ts >= ?"
            args = (since,)
        return {p: int(n) for p, n in self.query(sql + " GROUP BY pass", args)}


def backend_for(target: StoreTarget) -> Backend:
    """The backend of a parsed URL; a PostgreSQL one needs psycopg (a one-line :class:`StoreURLError`)."""
    if target.backend == "sqlite":
        from engines.shadow.store_sqlite import SQLiteBackend

        return SQLiteBackend(target)
    try:
        from engines.shadow.store_postgres import PostgresBackend
    except ImportError as exc:
        raise StoreURLError(f"a postgresql shadow store needs psycopg ({exc.name or 'psycopg'} cannot be "
                            f"imported): {POSTGRES_INSTALL}") from None
    return PostgresBackend(target)
