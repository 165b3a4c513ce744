"""Issue 11, finding 6 (part): bad input is a 4xx naming the field, never a 5xx."""

from __future__ import annotations

import json
from typing import Any

import httpx

TURN = {"event_type": "user_message", "event_payload": {"text": "hotels in Paris"}, "slot_state": {}}


def test_report_since_out_of_the_date_range_is_422(default_server: str) -> None:
    for since in ("99999999d", "9999999999w"):
        r = httpx.get(default_server + "/v1/shadow/report", params={"since": since}, timeout=30)
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "since"], r.text


def test_openai_content_nested_5000_deep_is_400(default_server: str) -> None:
    deep = "[" * 5000 + "]" * 5000
    for content in (deep, '{"turn": ' + deep + "}"):
        body: dict[str, Any] = {"model": "travel-extract", "messages": [{"role": "user", "content": content}]}
        r = httpx.post(default_server + "/v1/chat/completions", content=json.dumps(body),
                       headers={"content-type": "application/json"}, timeout=30)
        assert r.status_code == 400, r.text
        assert r.json()["error"]["param"] == "messages.0.content"
