"""The API key check as ASGI middleware: 401 (``WWW-Authenticate: Bearer``) without the key."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from server.auth import ApiKeyCheck
from server.errors import error_response
from server.middleware.headers import last_header


class AuthMiddleware:
    """Pure ASGI: answers 401 when ``auth`` requires the key on the path and the last ``Authorization``
    header does not carry it; otherwise passes the request on untouched."""

    def __init__(self, app: ASGIApp, *, auth: ApiKeyCheck) -> None:
        self.app = app
        self.auth = auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if scope["type"] != "http" or not self.auth.required(path):
            await self.app(scope, receive, send)
            return
        if not self.auth.allowed(last_header(scope, b"authorization")):
            response = error_response(path, 401, "missing or invalid API key", code="invalid_api_key",
                                      headers={"WWW-Authenticate": "Bearer"})
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)
