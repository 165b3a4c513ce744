"""Reading one request header from an ASGI scope (header names there are raw, lower-case bytes)."""

from __future__ import annotations

from starlette.types import Scope


def last_header(scope: Scope, name: bytes) -> bytes | None:
    """The value of the last ``name`` field of the request, ``None`` without one. A repeated single-value field
    (``Authorization``, ``Content-Length``) is read the same way by every middleware: its last value counts."""
    found: bytes | None = None
    for key, value in scope.get("headers", ()):
        if key == name:
            found = value
    return found
