"""Issue 11, low findings "Redaction gaps": what the shadow store kept before, one test per gap.

Before: card and phone numbers sent as JSON numbers, passport-like ids, IDN e-mail addresses and cards
with ``/`` separators were stored as sent; an upstream that echoed most of the API key left most of it in
the record; and two dates separated by a space were redacted as a card.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest

from engines.shadow.redact import (
    CARD,
    EMAIL,
    PASSPORT,
    PHONE,
    SECRET,
    redact,
    redact_record,
    redact_text,
    scrub_secrets,
)
from engines.shadow.store import ShadowStore, read_store

KEY = "sk-proj-9f8E7d6C5b4A3z2Y1x0W"


def _record(turn: dict[str, Any], error: str | None = None) -> dict[str, Any]:
    return {"kind": "slm_shadow_comparison", "ts": "2099-01-01T00:00:00.000Z", "request_id": "req-1",
            "pass": "extract", "turn": turn, "live_extract": {"slot_updates": {}}, "error": error}


def _no_run_of(secret: str, text: str, size: int = 5) -> bool:
    """No ``size`` consecutive characters of ``secret`` (any letter case) are left in ``text``."""
    low = text.lower()
    return not any(secret[i:i + size].lower() in low for i in range(len(secret) - size + 1))


# --- one test per gap -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "label"), [
    (4111111111111111, CARD),          # a card as a JSON integer
    (378282246310005, CARD),
    (4111111111111111.0, CARD),        # ... as an integral float
    (14155550100, PHONE),              # a phone number as a JSON integer
    (447946095800, PHONE),
    (-4155550100, PHONE),
])
def test_card_and_phone_numbers_sent_as_json_numbers(value: int | float, label: str) -> None:
    doc = {"event_payload": {"submitted_value": {"card": value, "n": [value]}}}
    assert redact(doc, ()) == {"event_payload": {"submitted_value": {"card": label, "n": [label]}}}


def test_ordinary_numbers_stay_numbers() -> None:
    doc = {"adults": 2, "price": 512.4, "lat": 48.8738, "lng": -80.11999999999999, "count": 12345678, "ok": True,
           "total": 99999999.5, "none": None}
    assert redact(doc, ()) == doc


@pytest.mark.parametrize(("text", "expected"), [
    ("my passport number is C01X00T47, thanks", f"my passport number is {PASSPORT}, thanks"),
    ("Passport No. 533380006 expires soon", f"Passport No. {PASSPORT} expires soon"),
    ("passport: x1234567", f"passport: {PASSPORT}"),
    ("passport#AB1234567", f"passport#{PASSPORT}"),
    ("travelling on GB123456789 next week", f"travelling on {PASSPORT} next week"),
    ("id X12345678.", f"id {PASSPORT}."),
])
def test_passport_like_ids(text: str, expected: str) -> None:
    assert redact_text(text, ()) == expected


@pytest.mark.parametrize("text", ["my passport expires soon", "flight AA1234 at 08:00", "ref RZPNX8",
                                  "offer off_0000Aexample", "code E-E10-PARFOOD", "passport renewal in 2027"])
def test_passport_rule_leaves_other_ids_and_words(text: str) -> None:
    assert redact_text(text, ()) == text


@pytest.mark.parametrize("address", ["josé.álvarez@correo.es", "müller@bücher.de", "用户@例子.广告",
                                     "иван@пример.рф", "info@xn--e1afmkfd.xn--p1ai", "ΑΒΓ@παράδειγμα.ελ"])
def test_idn_email_addresses(address: str) -> None:
    assert redact_text(f"write to {address} please", ()) == f"write to {EMAIL} please"


@pytest.mark.parametrize("card", ["4111/1111/1111/1111", "5500/0000/0000/0004", "3782/822463/10005",
                                  "6011/0009/9013/9424/123"])
def test_cards_with_slash_separators(card: str) -> None:
    assert redact_text(f"pay with {card} now", ()) == f"pay with {CARD} now"


@pytest.mark.parametrize("text", ["2026-07-10 2026-07-14", "from 2026-07-10 2026-07-14 please",
                                  "10/07/2026 14/07/2026", "07.10.2026 07.14.2026", "2026/07/10 2026/07/14",
                                  "2026-07-10 08:00 to 2026-07-14 18:30"])
def test_two_dates_separated_by_a_space_are_not_a_card(text: str) -> None:
    assert redact_text(text, ()) == text


def test_a_card_or_phone_next_to_a_date_is_still_redacted() -> None:
    assert redact_text("2026-07-10 4111 1111 1111 1111", ()) == f"2026-07-10 {CARD}"
    assert redact_text("on 2026-07-10 call +1 415 555 0100", ()) == f"on 2026-07-10 call {PHONE}"


@pytest.mark.parametrize("echo", [
    KEY,                                                     # the key as is
    KEY.upper(),                                             # in another letter case
    f"Incorrect API key provided: {KEY[:12]}{'*' * 12}{KEY[-4:]}.",   # OpenAI's masked echo: most of it
    f"Incorrect API key provided: {KEY[:-3]}",               # cut short
    f"key={KEY[4:]}&retry=1",                                # without its prefix, inside a token
    f"{KEY[:4]}...{KEY[-4:]} was refused",                   # first and last 4 around a mask
    json.dumps({"error": {"message": f"bad key {KEY[2:20]}"}}),
])
def test_an_echoed_secret_is_redacted_wholly(echo: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    out = redact_text(f"upstream HTTP 401: {echo}")
    assert SECRET in out and _no_run_of(KEY[3:], out), out  # nothing past the generic "sk-" prefix is left
    record = redact_record(_record({"event_payload": {"text": "hi"}}, error=f"upstream HTTP 401: {echo}"))
    assert _no_run_of(KEY[3:], record["error"]), record["error"]


def test_secrets_from_a_config_file_are_scrubbed_when_passed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRAVEL_SLM_API_KEY", raising=False)
    api_key = "planner-shared-Key-7734-abcdef"
    record = redact_record(_record({"event_payload": {"text": f"token {api_key.lower()}"}}), secrets=[api_key])
    assert record["turn"]["event_payload"]["text"] == f"token {SECRET}"
    assert scrub_secrets("a planner turn about travel", (api_key,)) == "a planner turn about travel"


def test_a_record_nested_deeper_than_the_stack_is_not_stored() -> None:
    deep: Any = "4111111111111111"
    for _ in range(5000):
        deep = [deep]
    out = redact_record(_record({"thread_context": deep}))
    assert "4111" not in json.dumps(out["turn"])


# --- end to end: nothing of it reaches the store's file ---------------------------------------------------------


GAPS: list[tuple[dict[str, Any], list[bytes]]] = [
    ({"event_type": "user_widget_submit", "event_payload": {"submitted_value": {"card": 4111111111111111,
                                                                                 "phone": 14155550100}}},
     [b"4111111111111111", b"14155550100"]),
    ({"event_payload": {"text": "hotels in Paris, passport number C01X00T47"}}, [b"C01X00T47"]),
    ({"event_payload": {"text": "hotels in Paris, mail müller@bücher.de"}}, ["müller@bücher.de".encode()]),
    ({"event_payload": {"text": "hotels in Paris, card 4111/1111/1111/1111"}}, [b"4111/1111/1111/1111"]),
]


def test_the_gaps_never_reach_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    url = f"sqlite:///{tmp_path}/r.db"
    store = ShadowStore(url, redactor=redact_record)
    store.start()
    for turn, _secrets in GAPS:
        store.append(_record(turn, error=f"upstream HTTP 401: Incorrect API key provided: {KEY[:-4]}****"))
    dates = {"event_payload": {"text": "hotels in Paris 2026-07-10 2026-07-14"}}
    store.append(_record(dates))
    assert store.flush()
    store.close()
    blob = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    for _turn, secrets in GAPS:
        for secret in secrets:
            assert secret not in blob
    assert KEY[3:11].encode() not in blob
    records = read_store(url).records
    assert len(records) == len(GAPS) + 1
    assert records[-1]["turn"]["event_payload"]["text"] == "hotels in Paris 2026-07-10 2026-07-14"


def test_the_gaps_never_reach_the_store_of_a_live_server(live_server: Any, tmp_path: Path) -> None:
    """Through a real server with shadow mode on: the turns as sent, the store's rows as read back."""
    store = f"sqlite:///{tmp_path}/live.db"
    base = live_server({"shadow": {"enabled": True, "engine": "deterministic", "store": store,
                                   "timeout_ms": 60_000, "max_inflight": 100}})
    for turn, _secrets in GAPS:
        assert httpx.post(base + "/extract", json={"turn": turn}, timeout=30).status_code == 200
    live_server.stop(base)  # the lifespan flushes the store
    with sqlite3.connect(tmp_path / "live.db") as conn:
        assert conn.execute("SELECT COUNT(*) FROM shadow_records").fetchone()[0] == len(GAPS)
    blob = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    for _turn, secrets in GAPS:
        for secret in secrets:
            assert secret not in blob
    texts = [r["turn"] for r in read_store(store).records]
    assert any(t.get("event_payload", {}).get("submitted_value") == {"card": CARD, "phone": PHONE} for t in texts)
