"""The SQLite backend of the shadow store: one file per process (WAL mode), the default.

Each row holds the JSON record and the report columns (:data:`~engines.shadow.store_base.REPORT_COLUMNS`);
a file written before those columns existed is migrated when the writer opens it, and read through its
JSON until then (:func:`legacy_expr`). The schema is created idempotently (``CREATE TABLE IF NOT EXISTS``)
and its version kept in ``shadow_schema_version``.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from core.store_url import BackendName, StoreTarget
from engines.shadow.store_base import (
    AGREE_COLUMNS,
    REPORT_COLUMNS,
    SCHEMA_VERSION,
    OpenConnection,
    Row,
    SQLReader,
    WriterSQL,
)

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
CREATE TABLE IF NOT EXISTS shadow_losses (
    ts REAL NOT NULL,
    pass TEXT NOT NULL,
    n INTEGER NOT NULL,
    cause TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS shadow_schema_version (
    version INTEGER PRIMARY KEY,
    applied_at REAL NOT NULL
);
"""


def legacy_expr(column: str) -> str:
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


def _columns(conn: sqlite3.Connection) -> set[str]:
    return {row[1] for row in conn.execute("PRAGMA table_info(shadow_records)")}


def _migrate(conn: sqlite3.Connection) -> None:
    """Add the report columns to a file written by an older version and fill them from the JSON."""
    missing = [c for c in REPORT_COLUMNS if c not in _columns(conn)]
    if missing:
        with conn:
            for column in missing:
                conn.execute(f"ALTER TABLE shadow_records ADD COLUMN {column} {REPORT_COLUMNS[column]}")
            sets = ", ".join(f"{c} = {legacy_expr(c)}" for c in REPORT_COLUMNS)
            conn.execute(f"UPDATE shadow_records SET {sets}")
        log.info("shadow store migrated", extra={"columns": missing})
    with conn:
        conn.execute("INSERT OR IGNORE INTO shadow_schema_version (version, applied_at) "
                     "VALUES (?, strftime('%s', 'now'))", (SCHEMA_VERSION,))


def connect_file(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    """A connection to the store file: read-only (never creates it), or the writer's (creates, migrates,
    checks the file so that a corrupt one fails now rather than at the first write)."""
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
        row = conn.execute("PRAGMA quick_check(1)").fetchone()
        if row is None or row[0] != "ok":
            raise sqlite3.DatabaseError(f"quick_check: {row[0] if row else 'no answer'}")
    except BaseException:
        conn.close()
        raise
    return conn


_SQL = WriterSQL("?")


class SQLiteConnection(OpenConnection[sqlite3.Connection]):
    @property
    def broken(self) -> bool:
        return False  # a failed write (a full disk) leaves the file usable: the next batch tries again

    def write(self, rows: Sequence[Row], drops: dict[str, int], losses: dict[tuple[str, str], int],
              now: float) -> None:
        with self.conn:
            _SQL.write(self.conn, rows, drops, losses, now)

    def apply_retention(self, cutoff: float | None, max_rows: int | None) -> None:
        with self.conn:
            _SQL.retain(self.conn, cutoff, max_rows)


class SQLiteReader(SQLReader[sqlite3.Connection]):
    """A read-only connection; an unmigrated file is read through its JSON."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        super().__init__(conn)
        migrated = set(REPORT_COLUMNS) <= _columns(conn)
        self.columns = {c: (c if migrated else legacy_expr(c)) for c in REPORT_COLUMNS}

    def query(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self.conn.execute(sql, tuple(args)).fetchall()

    def iterate(self, sql: str, args: Sequence[Any] = ()) -> Iterator[tuple[Any, ...]]:
        yield from self.conn.execute(sql, tuple(args))

    def sum_by_pass(self, table: str, since: float | None) -> dict[str, int]:
        try:
            return super().sum_by_pass(table, since)
        except sqlite3.OperationalError:  # a file from before the table existed
            return {}


class SQLiteBackend:
    name: BackendName = "sqlite"
    errors: tuple[type[BaseException], ...] = (sqlite3.Error,)

    def __init__(self, target: StoreTarget) -> None:
        assert target.path is not None
        self.target = target
        self.path: Path = target.path

    def connect(self) -> SQLiteConnection:
        return SQLiteConnection(connect_file(self.path))

    def open_reader(self) -> SQLiteReader | None:
        if not self.path.exists():
            return None
        conn = connect_file(self.path, readonly=True)
        try:
            return SQLiteReader(conn)
        except BaseException:
            conn.close()
            raise
