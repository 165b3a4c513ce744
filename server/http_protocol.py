"""The HTTP/1.1 protocol of ``travel-slm serve``: uvicorn's h11 implementation with request-header limits.

uvicorn's default (httptools) protocol accepts any header size and count and waits for slow headers for
ever (issue 11, finding 5: an 8 MiB header and 100,000 headers answered 200; four 64 MiB headers took
RSS to 386 MB; 1,000 half-sent requests were held 30 s or more). This is uvicorn's own h11 protocol with
three bounds, all from settings:

- ``max_header_bytes``: the request line and header block together (h11's
  ``max_incomplete_event_size``, which stops buffering there): beyond it the answer is
  ``431 Request Header Fields Too Large`` and the connection closes (uvicorn would say 400);
- ``max_header_count``: more header fields than this is a 431 too (checked by the header-limit middleware,
  :class:`server.middleware.HeaderLimitMiddleware`, on the parsed request);
- ``header_timeout_s``: a connection whose request line and headers have not all arrived this long after
  they started (or after the connection opened) gets ``408 Request Timeout`` and is closed; the timer
  is not reset by each byte, so a client trickling headers cannot hold a connection.

Between requests uvicorn's keep-alive timeout applies as before.
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

_408 = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
        b"connection: close\r\ncontent-length: 36\r\n\r\nrequest headers not received in time")


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a 431 for oversized headers and a header timeout (see the module)."""

    header_timeout_s: float = 10.0
    max_header_bytes: int = 64 * 1024

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None
        self._error_hint: int | None = None
        next_event = self.conn.next_event

        def next_event_noting_the_status() -> Any:
            try:
                event = next_event()
                # h11 bounds a header block that arrives in pieces; one that arrives whole is measured here
                if isinstance(event, h11.Request) and _head_size(event) > self.max_header_bytes:
                    raise h11.RemoteProtocolError("request header fields too large", error_status_hint=431)
                return event
            except h11.RemoteProtocolError as exc:
                self._error_hint = exc.error_status_hint
                raise

        self.conn.next_event = next_event_noting_the_status  # type: ignore[method-assign]

    # -- header timeout --------------------------------------------------------------------------

    def _arm(self) -> None:
        if self._header_timer is None and self.header_timeout_s > 0:
            self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_too_slow)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        self.logger.warning("Request headers not received in time: connection closed.")
        self.transport.write(_408)
        self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()  # a connection that opens and sends nothing is a request whose headers are late

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self._arm()  # part of a request line or header block: it must complete in time
        else:
            self._disarm()

    def on_response_complete(self) -> None:
        self._disarm()  # between requests the keep-alive timeout applies
        super().on_response_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    # -- 431 ---------------------------------------------------------------------------------------

    def send_400_response(self, msg: str) -> None:
        if self._error_hint != 431:
            super().send_400_response(msg)
            return
        self._disarm()
        body = b"request header fields too large"
        headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"connection", b"close"),
                   (b"content-length", str(len(body)).encode())]
        try:
            self.transport.write(self.conn.send(h11.Response(status_code=431, headers=headers,
                                                            reason=b"Request Header Fields Too Large")) or b"")
            self.transport.write(self.conn.send(h11.Data(data=body)) or b"")
            self.transport.write(self.conn.send(h11.EndOfMessage()) or b"")
        except h11.LocalProtocolError:
            pass
        self.transport.close()


def _head_size(event: h11.Request) -> int:
    """The request line and header block as sent (each line with its CRLF)."""
    size = len(event.method) + len(event.target) + 12
    for name, value in event.headers.raw_items():
        size += len(name) + len(value) + 4
    return size + 2


def guarded_protocol(header_timeout_s: float, max_header_bytes: int = 64 * 1024) -> type[GuardedH11Protocol]:
    """The protocol class with the configured limits (uvicorn instantiates it per connection)."""
    return type("GuardedH11Protocol", (GuardedH11Protocol,),
                {"header_timeout_s": float(header_timeout_s), "max_header_bytes": int(max_header_bytes)})
