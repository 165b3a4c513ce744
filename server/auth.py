"""Optional API key (docs/api.md §6): ``Authorization: Bearer <key>``, compared in constant time.

When ``TRAVEL_SLM_API_KEY`` is set every endpoint requires it except ``/healthz`` and ``/readyz``,
``/metrics`` unless ``metrics_require_key``, and the ``/dashboard`` page itself: a browser cannot send the
header with a page load, so the page carries no data, asks for the key and sends it on its data calls
(``/v1/stats``, ``/v1/shadow/report``), which require it. The key is never logged nor echoed.
"""

from __future__ import annotations

import hmac

#: no key needed: the probes, and the dashboard's static page (no figures in it; its data calls need the key)
OPEN_PATHS: frozenset[str] = frozenset({"/healthz", "/readyz", "/dashboard"})


class ApiKeyCheck:
    def __init__(self, key: str | None, *, metrics_require_key: bool = False) -> None:
        self._key = key.encode("utf-8") if key else None
        self._open = OPEN_PATHS if metrics_require_key else OPEN_PATHS | {"/metrics"}

    @property
    def enabled(self) -> bool:
        return self._key is not None

    def required(self, path: str) -> bool:
        return self._key is not None and path not in self._open

    def allowed(self, authorization: bytes | None) -> bool:
        """Whether the raw ``Authorization`` header carries the key (constant-time comparison)."""
        if self._key is None:
            return True
        if not authorization:
            # compare anyway so that a missing header costs the same as a wrong one
            hmac.compare_digest(b"", self._key)
            return False
        scheme, _, token = authorization.strip().partition(b" ")
        if scheme.lower() != b"bearer":
            hmac.compare_digest(b"", self._key)
            return False
        return hmac.compare_digest(token.strip(), self._key)
