"""Shadow store URLs: which backend a URL names, whether this build can open it, and its redacted form.

A store URL names a backend:

- ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db`` or a bare path: one SQLite file per process;
- ``postgresql://user:password@host:5432/db?sslmode=require`` (or ``postgres://``): one PostgreSQL database
  shared by every pod (needs ``pip install 'travel-slm[postgres]'``).

A DSN's password never leaves this process: :func:`redact_dsn` is the only form of a URL that is logged or
shown, and :meth:`StoreTarget.scrub` removes it from error texts. Pure parsing, no I/O: the settings
(:mod:`core.settings`) validate ``shadow.store`` with :func:`check_store_url`, and the shadow store
(:mod:`engines.shadow.store_base`) opens the backend a :class:`StoreTarget` names.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

BackendName = Literal["sqlite", "postgresql"]

POSTGRES_INSTALL = "pip install 'travel-slm[postgres]'"
_SECRET_PARAMS = frozenset({"password", "sslpassword"})


class StoreURLError(ValueError):
    """A store URL this build cannot use (the message never holds a password)."""


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
