"""Calling an optional observer (the metrics of a shadow run, a store's listener) so that it cannot fail the caller."""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("travel_slm.shadow")


def notify(observer: object | None, method: str, *args: Any) -> None:
    """``observer.method(*args)`` when there is an observer. Its failure is logged at debug level and never reaches
    the caller: a broken metric or listener must not stop a shadow run or the store's writer thread."""
    if observer is None:
        return
    try:
        getattr(observer, method)(*args)
    except Exception:
        log.debug("shadow observer %s.%s failed", type(observer).__name__, method, exc_info=True)
