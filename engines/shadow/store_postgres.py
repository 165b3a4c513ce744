"""The PostgreSQL backend of the shadow store: one database shared by every pod (psycopg 3).

- **Schema.** Created at start-up by whichever pod connects first, idempotently: ``CREATE TABLE IF NOT
  EXISTS`` under a transaction-level advisory lock (two pods starting at once would otherwise race on the
  catalog), and the layout's version in ``shadow_schema_version``. Tables live in the connection's
  ``search_path`` (``?options=-csearch_path%3Dshadow`` in the DSN for a schema of their own).
- **Writes.** One transaction per batch (records, drop counts and loss counts together); ``record`` is the
  JSON text exactly as SQLite stores it, beside the report columns.
- **Retention** runs in the database, by one pod at a time (``pg_try_advisory_xact_lock``): rows older than
  ``retention_days``, then all but the newest ``retention_max_rows`` records.
- **Reads.** The report's SQL aggregates run in one read-only ``REPEATABLE READ`` transaction (every figure
  from the same snapshot); records are streamed through a server-side cursor.
- **Faults.** Connections carry a connect timeout, TCP keepalives, a TCP user timeout and a statement
  timeout, so a server that stops or vanishes fails a write within seconds instead of hanging the writer;
  the writer (:class:`engines.shadow.store.ShadowStore`) then counts the batch as lost and reconnects.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Iterator, Sequence
from typing import Any

import psycopg
from psycopg import conninfo

from core.store_url import BackendName, StoreTarget
from engines.shadow import store_base

log = logging.getLogger("travel_slm.shadow.store")

_TYPES = {"TEXT": "TEXT", "INTEGER": "INTEGER", "REAL": "DOUBLE PRECISION"}
_SCHEMA: tuple[str, ...] = (
    "CREATE TABLE IF NOT EXISTS shadow_records (id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
    "ts DOUBLE PRECISION NOT NULL, pass TEXT NOT NULL, record TEXT NOT NULL, "
    + ", ".join(f"{c} {_TYPES[t]}" for c, t in store_base.REPORT_COLUMNS.items()) + ")",
    "CREATE INDEX IF NOT EXISTS shadow_records_ts ON shadow_records (ts)",
    "CREATE TABLE IF NOT EXISTS shadow_drops (ts DOUBLE PRECISION NOT NULL, pass TEXT NOT NULL, n INTEGER NOT NULL)",
    "CREATE INDEX IF NOT EXISTS shadow_drops_ts ON shadow_drops (ts)",
    "CREATE TABLE IF NOT EXISTS shadow_losses (ts DOUBLE PRECISION NOT NULL, pass TEXT NOT NULL, "
    "n INTEGER NOT NULL, cause TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS shadow_losses_ts ON shadow_losses (ts)",
    "CREATE TABLE IF NOT EXISTS shadow_schema_version (version INTEGER PRIMARY KEY, "
    "applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
)
# advisory lock keys (any fixed 64-bit numbers; these are stable across versions)
_SCHEMA_LOCK = zlib.crc32(b"travel_slm.shadow.schema")
_RETENTION_LOCK = zlib.crc32(b"travel_slm.shadow.retention")

_SQL = store_base.WriterSQL("%s")

#: connection settings unless the DSN sets them: fail fast on an unreachable or silent server
WRITER_DEFAULTS: dict[str, Any] = {
    "connect_timeout": 5, "keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 3,
    "tcp_user_timeout": 15_000, "application_name": "travel-slm-shadow-writer",
}
READER_DEFAULTS: dict[str, Any] = {**WRITER_DEFAULTS, "application_name": "travel-slm-shadow-report"}
WRITE_STATEMENT_TIMEOUT_MS = 30_000
REPORT_STATEMENT_TIMEOUT_MS = 300_000


def _conninfo(dsn: str, defaults: dict[str, Any], statement_timeout_ms: int) -> str:
    given = conninfo.conninfo_to_dict(dsn)
    extra = {k: v for k, v in defaults.items() if k not in given}
    options = str(given.get("options") or "")
    if "statement_timeout" not in options:
        extra["options"] = f"{options} -c statement_timeout={statement_timeout_ms}".strip()
    return conninfo.make_conninfo(dsn, **extra)


def _bootstrap(conn: psycopg.Connection[Any]) -> None:
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
        for statement in _SCHEMA:
            conn.execute(statement)  # type: ignore[arg-type]  # constant SQL
        conn.execute("INSERT INTO shadow_schema_version (version) VALUES (%s) ON CONFLICT (version) DO NOTHING",
                     (store_base.SCHEMA_VERSION,))
        row = conn.execute("SELECT max(version) FROM shadow_schema_version").fetchone()
    newest = int(row[0]) if row and row[0] is not None else store_base.SCHEMA_VERSION
    if newest > store_base.SCHEMA_VERSION:
        log.warning("the shadow store was written by a newer version; its added columns are left alone",
                    extra={"store_schema_version": newest, "schema_version": store_base.SCHEMA_VERSION})


class PostgresConnection(store_base.OpenConnection[psycopg.Connection[Any]]):
    @property
    def broken(self) -> bool:
        return bool(self.conn.broken or self.conn.closed)

    def write(self, rows: Sequence[store_base.Row], drops: dict[str, int], losses: dict[tuple[str, str], int],
              now: float) -> None:
        with self.conn.transaction(), self.conn.cursor() as cur:
            _SQL.write(cur, rows, drops, losses, now)

    def apply_retention(self, cutoff: float | None, max_rows: int | None) -> None:
        if cutoff is None and max_rows is None:
            return
        with self.conn.transaction():
            row = self.conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (_RETENTION_LOCK,)).fetchone()
            if not (row and row[0]):
                return  # another pod is applying it now
            _SQL.retain(self.conn, cutoff, max_rows)


class PostgresReader(store_base.SQLReader[psycopg.Connection[Any]]):
    """One read-only REPEATABLE READ transaction: every query of a report sees the same snapshot."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        super().__init__(conn)
        self.columns = {c: c for c in store_base.REPORT_COLUMNS}
        self._cursors = 0

    @staticmethod
    def _sql(sql: str) -> str:
        assert "%" not in sql, "portable report SQL has no % (psycopg's placeholder character)"
        return sql.replace("?", "%s")

    def query(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self.conn.execute(self._sql(sql), tuple(args)).fetchall()  # type: ignore[arg-type]

    def iterate(self, sql: str, args: Sequence[Any] = ()) -> Iterator[tuple[Any, ...]]:
        self._cursors += 1
        with self.conn.cursor(name=f"shadow_iter_{self._cursors}") as cur:
            cur.itersize = 500
            cur.execute(self._sql(sql), tuple(args))  # type: ignore[arg-type]
            yield from cur


class PostgresBackend:
    name: BackendName = "postgresql"
    errors: tuple[type[BaseException], ...] = (psycopg.Error,)

    def __init__(self, target: StoreTarget) -> None:
        self.target = target

    def connect(self) -> PostgresConnection:
        conn = psycopg.connect(_conninfo(self.target.url, WRITER_DEFAULTS, WRITE_STATEMENT_TIMEOUT_MS),
                               autocommit=True)
        try:
            _bootstrap(conn)
        except BaseException:
            conn.close()
            raise
        return PostgresConnection(conn)

    def open_reader(self) -> PostgresReader | None:
        """A reader, or None while no pod has created the tables yet (a report never creates them)."""
        conn = psycopg.connect(_conninfo(self.target.url, READER_DEFAULTS, REPORT_STATEMENT_TIMEOUT_MS))
        try:
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            conn.read_only = True
            missing = conn.execute("SELECT to_regclass('shadow_records') IS NULL").fetchone()
        except BaseException:
            conn.close()
            raise
        if missing and missing[0]:
            conn.close()
            return None
        return PostgresReader(conn)
