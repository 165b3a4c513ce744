"""The ASGI middleware of ``travel-slm serve``, one concern each (issue 13, item 5), outermost first:

1. :class:`RequestContextMiddleware` (``request_context.py``): the tracing span, HEAD probes, the trailing
   slash on the pass paths, the JSON content type, the request id (``x-request-id`` on every answer), the
   per-request context in ``scope["travel_slm"]``, request metrics and the access-log line;
2. :class:`HeaderLimitMiddleware` (``limits.py``): more than ``max_header_count`` header fields is a 431;
3. :class:`AuthMiddleware` (``api_key.py``): the API key, 401 without it;
4. :class:`BodyLimitMiddleware` (``limits.py``): an invalid ``Content-Length`` is a 400, a body over
   ``max_body_bytes`` (declared or streamed) a 413, after draining it so that the client reads the answer.

All are pure ASGI (no ``BaseHTTPMiddleware``): the body limit acts on the raw request stream. Every answer
the inner three give passes through the first, so it carries the request id and is counted and logged.
:func:`server.app.create_app` adds them in this order.
"""

from server.middleware.api_key import AuthMiddleware
from server.middleware.limits import BodyLimitMiddleware, HeaderLimitMiddleware
from server.middleware.request_context import PASS_PATHS, PROBE_PATHS, SCOPE_KEY, RequestContextMiddleware

__all__ = [
    "PASS_PATHS",
    "PROBE_PATHS",
    "SCOPE_KEY",
    "AuthMiddleware",
    "BodyLimitMiddleware",
    "HeaderLimitMiddleware",
    "RequestContextMiddleware",
]
