"""Request-size limits as ASGI middleware: the header-field count (431) and the body (400, 413).

The body limit acts on the raw request stream: a declared ``Content-Length`` over the limit is refused
before the app runs, and a body that streams past it (chunked, or longer than declared) stops the app's
read with :class:`~server.errors.BodyTooLargeError`. The 413 is sent after reading and dropping the body up
to :data:`DRAIN_LIMIT_BYTES`, so that every client reads it.
"""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.errors import BodyTooLargeError, error_response
from server.middleware.headers import last_header

#: how much of an over-limit body is read and thrown away so that the client sees the 413 (a client such
#: as urllib or http.client writes its whole body before reading: closing on it unread resets the
#: connection instead); beyond this the connection is closed after the 413.
DRAIN_LIMIT_BYTES = 16 * 1024 * 1024
DRAIN_TIMEOUT_S = 10.0


class HeaderLimitMiddleware:
    """Pure ASGI: 431 when the request has more than ``max_header_count`` header fields (the protocol,
    :mod:`server.http_protocol`, bounds their total size)."""

    def __init__(self, app: ASGIApp, *, max_header_count: int = 100) -> None:
        self.app = app
        self.max_header_count = max_header_count

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and len(scope.get("headers", ())) > self.max_header_count:
            await error_response(scope.get("path", ""), 431, f"more than {self.max_header_count} request header fields",
                                 code="request_header_fields_too_large")(scope, receive, send)
            return
        await self.app(scope, receive, send)


class BodyLimitMiddleware:
    """Pure ASGI: 400 for an invalid ``Content-Length``, 413 for a body over ``max_body_bytes`` (declared or
    streamed; after draining it)."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body = max_body_bytes

    async def _too_large(self, scope: Scope, receive: Receive, send: Send, declared: int | None) -> None:
        """413, after reading (and dropping) the body up to a bound so that every client reads the answer."""
        drained = await _discard_body(receive, declared, 0 if declared is not None else self.max_body)
        headers = None if drained else {"Connection": "close"}
        await error_response(scope.get("path", ""), 413, f"request body exceeds the limit of {self.max_body} bytes",
                             code="request_too_large", headers=headers)(scope, receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        content_length = last_header(scope, b"content-length")
        if content_length is not None:
            try:
                declared = int(content_length)
            except ValueError:
                declared = -1
            if declared < 0:
                await error_response(scope.get("path", ""), 400, "invalid Content-Length")(scope, receive, send)
                return
            if declared > self.max_body:
                await self._too_large(scope, receive, send, declared)
                return
        received = 0
        limit = self.max_body
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLargeError(limit)
            return message

        async def send_started(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, send_started)
        except BodyTooLargeError:
            if not started:
                await self._too_large(scope, receive, send, None)


async def _discard_body(receive: Receive, declared: int | None, already: int) -> bool:
    """Read and drop the rest of the request body up to :data:`DRAIN_LIMIT_BYTES`; True when it all came."""
    if declared is not None and declared > DRAIN_LIMIT_BYTES:
        return False
    seen = already

    async def drain() -> bool:
        nonlocal seen
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return False
            seen += len(message.get("body", b""))
            if not message.get("more_body"):
                return True
            if seen > DRAIN_LIMIT_BYTES:
                return False

    try:
        return await asyncio.wait_for(drain(), DRAIN_TIMEOUT_S)
    except TimeoutError:
        return False
