"""What both shadow store backends share: the report columns, the backend interface, redacted errors.

A store URL (:mod:`core.store_url`: parsing, the driver check, DSN redaction) names a backend:
``sqlite:///path.db`` or a bare path (:mod:`engines.shadow.store_sqlite`, the default, one file per process)
or ``postgresql://user:password@host:5432/db`` (:mod:`engines.shadow.store_postgres`, one database for every
pod, needs ``pip install 'travel-slm[postgres]'``); :func:`backend_for` opens the one a
:class:`~core.store_url.StoreTarget` names. A DSN's password never leaves this process: errors are described
through :meth:`StoreTarget.scrub <core.store_url.StoreTarget.scrub>` (:func:`describe_error`).

The writer (:class:`engines.shadow.store.ShadowStore`) talks to a backend through :class:`Backend` and
:class:`BackendConnection`; the report (:mod:`engines.shadow.report`) reads through :class:`StoreReader`,
whose SQL is the portable subset both databases run the same way.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

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
