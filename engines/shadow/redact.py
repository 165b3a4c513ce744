"""Redaction applied to every string of a shadow record before it is stored (docs/shadow.md).

- e-mail addresses, internationalised ones included (``josé@bücher.de``, ``用户@例子.广告``, punycode
  top-level domains) -> ``[REDACTED_EMAIL]``
- passport-like ids: a token after the word "passport" (``passport no. C01X00T47``), or one or two
  letters followed by 6 to 9 digits (``X1234567``) -> ``[REDACTED_PASSPORT]``
- card numbers: 13 to 19 digits, ungrouped or in the groupings cards are printed in (4-4-4-4,
  4-4-4-4-3, 4-6-5, 4-6-4) separated by spaces, dashes or slashes -> ``[REDACTED_CARD]``
- phone-like runs ``\\+?\\d[\\d\\s\\-().]{7,}\\d`` holding at least 9 digits -> ``[REDACTED_PHONE]``
- dates (``2026-07-10``, ``10/07/2026``, ``07.10.26``) are never part of a card or a phone number, so
  two dates side by side (``2026-07-10 2026-07-14``) stay as they are
- JSON numbers (integers, integral floats) of 9 digits or more are cards or phones sent as numbers:
  replaced by the same labels (a string), as their digits would be in text
- the configured secrets (the ``OPENAI_API_KEY`` and ``TRAVEL_SLM_API_KEY`` environment variables, and
  any passed in ``secrets``) -> ``[REDACTED]``, wholly: the key in any letter case, and any token that
  holds 8 or more consecutive characters of it, or its first and last 4 around a mask
  (``sk-p****wxyz``), so an upstream that echoes a key, or most of it, leaves none of it behind.

Passports before cards before phones: a card number also matches the phone pattern, and the more
specific label is the useful one. Dict keys are redacted like values.
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

EMAIL = "[REDACTED_EMAIL]"
PHONE = "[REDACTED_PHONE]"
CARD = "[REDACTED_CARD]"
PASSPORT = "[REDACTED_PASSPORT]"
SECRET = "[REDACTED]"

#: the environment variables that hold secrets an upstream or an error could echo
SECRET_ENV_VARS: tuple[str, ...] = ("OPENAI_API_KEY", "TRAVEL_SLM_API_KEY")

# local part and domain labels: Unicode word characters (IDN); the top-level domain: letters, or punycode
_EMAIL_RE = re.compile(r"[\w.%+\-]+@[\w\-]+(?:\.[\w\-]+)*\.(?:xn--[a-z0-9\-]+|[^\W\d_]{2,})", re.IGNORECASE)
_PASSPORT_AFTER_WORD_RE = re.compile(
    r"(passport(?:\s*(?:number|num|no\.?|nr\.?|id|#))?\s*(?:is|:|=|#)?\s*)((?=[a-z]*\d)[a-z0-9]{6,12})(?![a-z0-9])",
    re.IGNORECASE)
_PASSPORT_SHAPE_RE = re.compile(r"(?<![\w\-])[a-z]{1,2}\d{6,9}(?![\w\-])", re.IGNORECASE)
_SEP = r"[ \-/]"
_CARD_RE = re.compile(r"(?<!\d)(?:\d{13,19}"
                      rf"|\d{{4}}(?:{_SEP}\d{{4}}){{3}}(?:{_SEP}\d{{3}})?"
                      rf"|\d{{4}}{_SEP}\d{{6}}{_SEP}\d{{4,5}})(?!\d)")
_PHONE_RE = re.compile(r"\+?\d[\d\s\-().]{7,}\d")
_DATE_RE = re.compile(r"(?<!\d)(?:(\d{4})([\-/.])(\d{1,2})\2(\d{1,2})|(\d{1,2})([\-/.])(\d{1,2})\6(\d{4}|\d{2}))(?!\d)")
# anything that could hold a redactable number or id (C regex; most strings stop here)
_CANDIDATE_RE = re.compile(r"\d[\d\s\-/().]{4,}\d|[pP][aA][sS][sS][pP][oO][rR][tT]")
#: a run of characters that can make up one key, or a masked echo of it
_TOKEN_RE = re.compile(r"[^\s\"'`,;()<>\[\]{}|]+")


def _phone(match: re.Match[str]) -> str:
    text = match.group(0)
    return PHONE if sum(c.isdigit() for c in text) >= 9 else text


def _is_date(match: re.Match[str]) -> bool:
    if match.group(1) is not None:  # year first
        month, day = int(match.group(3)), int(match.group(4))
        return 1 <= month <= 12 and 1 <= day <= 31
    a, b = int(match.group(5)), int(match.group(7))  # day and month, either order
    return 1 <= a <= 31 and 1 <= b <= 31 and min(a, b) <= 12


def _cards_and_phones(text: str) -> str:
    return _PHONE_RE.sub(_phone, _CARD_RE.sub(CARD, text))


def _numbers(text: str) -> str:
    """Cards and phones outside the dates of ``text`` (a date's digits never join a number)."""
    out: list[str] = []
    last = 0
    for match in _DATE_RE.finditer(text):
        if _is_date(match):
            out.append(_cards_and_phones(text[last:match.start()]))
            out.append(match.group(0))
            last = match.end()
    if not out:
        return _cards_and_phones(text)
    out.append(_cards_and_phones(text[last:]))
    return "".join(out)


@dataclass(frozen=True)
class _SecretPatterns:
    anchors: tuple[str, ...]
    """Lower-cased 4-character blocks of the secrets at offsets 0, 4, 8 ... and their last 4: every echo
    this module redacts holds one (a run of 8 holds an aligned block), so text without any costs a few
    substring scans."""
    whole: re.Pattern[str]
    piece: re.Pattern[str] | None


@functools.lru_cache(maxsize=16)
def _secret_patterns(secrets: tuple[str, ...]) -> _SecretPatterns:
    """(any of the secrets, whole, in any case; a piece of one: 8 consecutive characters, or its first and
    last 4 around a mask of at most its own length)."""
    whole = re.compile("|".join(re.escape(s) for s in sorted(secrets, key=len, reverse=True)), re.IGNORECASE)
    pieces: set[str] = set()
    masked: list[str] = []
    anchors: set[str] = set()
    for secret in secrets:
        low = secret.lower()
        if len(secret) < 8:
            anchors.add(low)
            continue
        anchors.update(low[i:i + 4] for i in range(0, len(low) - 3, 4))
        anchors.add(low[-4:])
        pieces.update(secret[i:i + 8] for i in range(len(secret) - 7))
        masked.append(rf"{re.escape(secret[:4])}\S{{0,{len(secret)}}}?{re.escape(secret[-4:])}")
    piece = re.compile("|".join([re.escape(p) for p in sorted(pieces)] + masked), re.IGNORECASE) if pieces else None
    return _SecretPatterns(tuple(sorted(anchors)), whole, piece)


def configured_secrets(extra: Iterable[str | None] = ()) -> tuple[str, ...]:
    """The secrets to scrub: those of :data:`SECRET_ENV_VARS` that are set, and ``extra`` (4 characters or
    more; a shorter value would redact ordinary words)."""
    values = [os.environ.get(name) for name in SECRET_ENV_VARS] + list(extra)
    return tuple(sorted({v for v in values if v and len(v) >= 4}))


def scrub_secrets(text: str, secrets: tuple[str, ...]) -> str:
    """``text`` with every echo of ``secrets`` replaced by ``[REDACTED]``, wholly (see the module doc)."""
    if not secrets or not text:
        return text
    patterns = _secret_patterns(secrets)
    low = text.lower()
    if not any(a in low for a in patterns.anchors):
        return text
    text = patterns.whole.sub(SECRET, text)
    piece = patterns.piece
    if piece is not None and piece.search(text):
        text = _TOKEN_RE.sub(lambda m: SECRET if piece.search(m.group(0)) else m.group(0), text)
    return text


def redact_text(text: str, secrets: tuple[str, ...] | None = None) -> str:
    """Replace e-mails, passport-like ids, cards, phones and echoed secrets in ``text``. ``secrets``: those
    to scrub (default: :func:`configured_secrets`)."""
    if not text:
        return text
    if secrets is None:
        secrets = configured_secrets()
    if secrets:
        text = scrub_secrets(text, secrets)
    if "@" in text:
        text = _EMAIL_RE.sub(EMAIL, text)
    if _CANDIDATE_RE.search(text) is None:
        return text
    text = _PASSPORT_AFTER_WORD_RE.sub(lambda m: m.group(1) + PASSPORT, text)
    text = _PASSPORT_SHAPE_RE.sub(PASSPORT, text)
    return _numbers(text)


def redact_number(value: int | float) -> int | float | str:
    """A card or phone number sent as a JSON number (9 digits or more, integral) -> its label."""
    if isinstance(value, float):
        if not value.is_integer() or abs(value) >= 1e20:
            return value
        value = int(value)
    if -10**8 < value < 10**8:
        return value
    digits = len(str(abs(value))) if abs(value) < 10**40 else 41
    return CARD if 13 <= digits <= 19 else PHONE


def redact(value: Any, secrets: tuple[str, ...] | None = None) -> Any:
    """A deep copy of ``value`` with every string (keys included) and every card- or phone-like number
    redacted."""
    secrets = configured_secrets() if secrets is None else secrets
    return _redact(value, secrets)


def _redact(value: Any, secrets: tuple[str, ...]) -> Any:
    if isinstance(value, str):
        return redact_text(value, secrets)
    if isinstance(value, dict):
        return {(redact_text(k, secrets) if isinstance(k, str) else k): _redact(v, secrets) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact(v, secrets) for v in value]
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | float):
        return value if -1e8 < value < 1e8 else redact_number(value)
    return value


#: the record fields that can hold user text; ids, timestamps, labels and figures are left alone
#: (a request id or a timestamp can look like a phone number).
TEXT_FIELDS: tuple[str, ...] = ("turn", "live_extract", "live_render", "shadow_extract", "shadow_render", "error")
TOO_DEEP = "[REDACTED: nested too deeply]"


def redact_record(record: dict[str, Any], secrets: Iterable[str | None] = ()) -> dict[str, Any]:
    """A copy of a shadow record with every user-text field redacted; ``secrets``: more values to scrub
    besides the environment's (e.g. an API key from a config file)."""
    found = configured_secrets(secrets)
    anchors = _secret_patterns(found).anchors if found else ()
    out = {}
    for key, value in record.items():
        if key in TEXT_FIELDS:
            try:
                # one scan of the field's JSON text decides whether any string of it needs the secret pass
                mentions = bool(anchors) and _mentions(value, anchors)
                value = _redact(value, found if mentions else ())
            except RecursionError:  # nested deeper than the stack allows: nothing of it is stored
                value = TOO_DEEP
        out[key] = value
    return out


def _mentions(value: Any, anchors: tuple[str, ...]) -> bool:
    if isinstance(value, str):
        low = value.lower()
    elif value is None or isinstance(value, int | float):
        return False
    else:
        try:
            low = json.dumps(value).lower()  # the C encoder; a key is ASCII, so escapes do not hide it
        except (TypeError, ValueError):
            return True
    return any(a in low for a in anchors)


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
