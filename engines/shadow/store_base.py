"""What both shadow store backends share: store URLs, DSN redaction, the report columns, the backend interface.

A store URL names a backend:

- ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db`` or a bare path: one SQLite file per process
  (:mod:`engines.shadow.store_sqlite`, the default);
- ``postgresql://user:password@host:5432/db?sslmode=require`` (or ``postgres://``): one PostgreSQL database
  shared by every pod (:mod:`engines.shadow.store_postgres`, needs ``pip install 'travel-slm[postgres]'``).

A DSN's password never leaves this process: :func:`redact_dsn` is the only form of a URL that is logged,
shown in ``/healthz`` or a report, and :meth:`StoreTarget.scrub` removes it from error texts.

The writer (:class:`engines.shadow.store.ShadowStore`) talks to a backend through :class:`Backend` and
:class:`BackendConnection`; the report (:mod:`engines.shadow.report`) reads through :class:`StoreReader`,
whose SQL is the portable subset both databases run the same way.
"""

from __future__ import annotations

import importlib.util
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

from engines.agreement import FIELDS

BackendName = Literal["sqlite", "postgresql"]

#: the layout both backends create (``shadow_schema_version``); 1 was the SQLite file without report columns
SCHEMA_VERSION = 2

#: the report's figures, one column each (name -> SQL type), written beside the JSON record
AGREE_COLUMNS: dict[str, str] = {f: f"a_{f.removesuffix('_match')}" for f in FIELDS}
REPORT_COLUMNS: dict[str, str] = {
    "class": "TEXT", "fell_back": "INTEGER", "reason": "TEXT", "has_doc": "INTEGER", "schema_ok": "INTEGER",
    "live_ms": "REAL", "shadow_ms": "REAL", **dict.fromkeys(AGREE_COLUMNS.values(), "INTEGER"),
}

POSTGRES_INSTALL = "pip install 'travel-slm[postgres]'"
_SECRET_PARAMS = frozenset({"password", "sslpassword"})


class StoreURLError(ValueError):
    """A store URL this build cannot use (the message never holds a password)."""


class StoreReadError(sqlite3.OperationalError):
    """The store cannot be read (an unreachable server, a corrupt file); the message is redacted.

    It derives from :class:`sqlite3.OperationalError` so that a caller written for the SQLite store (the
    report route answers 503 on ``sqlite3.Error``) treats every backend's read failure the same way.
    """


def psycopg_installed() -> bool:
    return importlib.util.find_spec("psycopg") is not None


@dataclass(frozen=True)
class StoreTarget:
    """A parsed store URL."""

    backend: BackendName
    url: str
    path: Path | None = None
    #: secrets to scrub from any text that could leave the process (the password, raw and URL-encoded)
    secrets: tuple[str, ...] = field(default=(), repr=False)

    @property
    def display(self) -> str:
        """The URL with its password replaced by ``***``: the only form that is logged or shown."""
        return redact_dsn(self.url) if self.backend == "postgresql" else self.url

    def scrub(self, text: str) -> str:
        """``text`` without the URL (the redacted form instead) and without the password."""
        if self.backend != "postgresql":
            return text
        text = text.replace(self.url, self.display)
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text


def describe_error(exc: BaseException, target: StoreTarget, limit: int = 300) -> str:
    """``Type: message`` on one line (a driver's message may span several), without the password."""
    return " ".join(target.scrub(f"{type(exc).__name__}: {exc}").split())[:limit]


def redact_dsn(url: str) -> str:
    """``postgresql://user:secret@host/db?password=x`` -> ``postgresql://user:***@host/db?password=***``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "postgresql://***"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, hosts = netloc.rsplit("@", 1)
        if ":" in userinfo:
            netloc = f"{userinfo.split(':', 1)[0]}:***@{hosts}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(k.lower() in _SECRET_PARAMS for k, _ in pairs):
            query = urlencode([(k, "***" if k.lower() in _SECRET_PARAMS else v) for k, v in pairs], safe="*/:")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _secrets(url: str) -> tuple[str, ...]:
    found: list[str] = []
    try:
        parts = urlsplit(url)
    except ValueError:
        return ()
    userinfo = parts.netloc.rsplit("@", 1)[0] if "@" in parts.netloc else ""
    if ":" in userinfo:
        found.append(userinfo.split(":", 1)[1])
    found += [v for k, v in parse_qsl(parts.query, keep_blank_values=True) if k.lower() in _SECRET_PARAMS]
    out: set[str] = set()
    for secret in found:
        for form in (secret, unquote(secret), quote(unquote(secret), safe="")):
            if form:
                out.add(form)
    return tuple(sorted(out, key=len, reverse=True))  # longest first: a form inside another goes second


def parse_store_url(url: str) -> StoreTarget:
    """The backend and location of a store URL; :class:`StoreURLError` (without the password) when unusable."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme in ("postgresql", "postgres"):
        parts = urlsplit(url)
        if not parts.netloc and not parts.path.strip("/") and not parts.query:
            raise StoreURLError("the postgresql shadow store needs a server: postgresql://user@host:5432/dbname")
        return StoreTarget("postgresql", url, secrets=_secrets(url))
    if scheme == "sqlite":
        if not url.startswith("sqlite:///"):
            raise StoreURLError("a sqlite shadow store is sqlite:///relative/path.db or sqlite:////absolute/path.db")
        rest = url[len("sqlite:///"):]
    elif scheme:
        raise StoreURLError(f"unsupported shadow store {scheme!r}: sqlite:///path or postgresql://host/db")
    else:
        rest = url
    if not rest or rest == ":memory:":
        raise StoreURLError("the shadow store needs a file path (sqlite:///path/to/shadow.db)")
    return StoreTarget("sqlite", url, path=Path(rest))


def check_store_url(url: str) -> StoreTarget:
    """:func:`parse_store_url`, and the driver a PostgreSQL store needs is installed (settings validation)."""
    target = parse_store_url(url)
    if target.backend == "postgresql" and not psycopg_installed():
        raise StoreURLError(f"a postgresql shadow store needs psycopg, which is not installed: {POSTGRES_INSTALL}")
    return target


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
