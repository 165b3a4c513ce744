"""Redaction applied to every string of a shadow record before it is stored (service.md section 5).

- e-mail addresses -> ``[REDACTED_EMAIL]``
- card-like digit runs (13 to 19 digits, optionally grouped by single spaces or dashes)
  -> ``[REDACTED_CARD]``
- phone-like runs ``\\+?\\d[\\d\\s\\-().]{7,}\\d`` holding at least 9 digits -> ``[REDACTED_PHONE]``

Cards are replaced before phones: a card number also matches the phone pattern, and the more
specific label is the useful one. Numbers (JSON ints and floats) are not text and stay as they are;
dict keys are redacted like values.
"""

from __future__ import annotations

import json
import re
from typing import Any

EMAIL = "[REDACTED_EMAIL]"
PHONE = "[REDACTED_PHONE]"
CARD = "[REDACTED_CARD]"

_EMAIL_RE = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}")
# 13..19 digits, each digit optionally followed by one space or dash; not glued to other digits.
_CARD_RE = re.compile(r"(?<!\d)\d(?:[ \-]?\d){12,18}(?!\d)")
_PHONE_RE = re.compile(r"\+?\d[\d\s\-().]{7,}\d")


def _phone(match: re.Match[str]) -> str:
    text = match.group(0)
    return PHONE if sum(c.isdigit() for c in text) >= 9 else text


def redact_text(text: str) -> str:
    """Replace e-mails, card-like and phone-like runs in ``text``."""
    if not text:
        return text
    if "@" in text:
        text = _EMAIL_RE.sub(EMAIL, text)
    # fast path (C regex, no Python loop): every card-like run also matches the phone pattern
    if _PHONE_RE.search(text) is None:
        return text
    text = _CARD_RE.sub(CARD, text)
    return _PHONE_RE.sub(_phone, text)


def redact(value: Any) -> Any:
    """A deep copy of ``value`` with every string (keys included) redacted."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {(redact_text(k) if isinstance(k, str) else k): redact(v) for k, v in value.items()}
    if isinstance(value, int | float | bool) or value is None:
        return value
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    return value


#: the record fields that can hold user text; ids, timestamps, labels and figures are left alone
#: (a request id or a timestamp can look like a phone number).
TEXT_FIELDS: tuple[str, ...] = ("turn", "live_extract", "live_render", "shadow_extract", "shadow_render", "error")


def redact_record(record: dict[str, Any]) -> dict[str, Any]:
    """A copy of a shadow record with every user-text field redacted."""
    return {k: (redact(v) if k in TEXT_FIELDS else v) for k, v in record.items()}


# -- text that can always be written as UTF-8 ------------------------------------------------------

def json_line(value: Any) -> str:
    """``value`` as compact JSON text that always encodes to UTF-8.

    A lone surrogate (``"\\ud800"`` in the request JSON, half an emoji from a JavaScript client) is a
    valid Python ``str`` character that UTF-8 cannot encode: such text is written with ``\\uXXXX``
    escapes instead (still the same JSON value), so no writer (SQLite, a log stream, an HTTP body)
    ever fails on it. The common case costs one extra ``encode`` check.
    """
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(value, ensure_ascii=True, separators=(",", ":"), default=str)
    return text


def json_bytes(value: Any) -> bytes:
    """:func:`json_line` encoded as UTF-8 (an HTTP body, an upstream request)."""
    return json_line(value).encode("utf-8")


def utf8_safe(text: str) -> str:
    """``text`` with every lone surrogate replaced by U+FFFD (for plain text that is not JSON)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATE_RE.sub("\ufffd", text)
    return text


_SURROGATE_RE = re.compile("[\ud800-\udfff]")
