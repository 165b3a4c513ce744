"""The middleware stack (server/middleware/, issue 13 item 5) over a real server: the checks run in one
order (431, then 401, then 413), and every refusal still carries the request id and is counted."""

from __future__ import annotations

from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from server.middleware import (
    AuthMiddleware,
    BodyLimitMiddleware,
    HeaderLimitMiddleware,
    RequestContextMiddleware,
)

KEY = "s3cret-key-for-tests-only"
TURN = {"event_type": "user_message", "event_payload": {"text": "flights to Miami"}, "slot_state": {}}
BIG = {"turn": {**TURN, "event_payload": {"text": "x" * 5000}}}


def _requests_by_status(base: str) -> dict[str, float]:
    text = httpx.get(base + "/metrics", headers={"Authorization": f"Bearer {KEY}"}).text
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "travel_slm_requests_total" and sample.labels["pass"] == "extract":
                counts[sample.labels["status"]] = counts.get(sample.labels["status"], 0.0) + sample.value
    return counts


def test_the_checks_run_outermost_first_and_every_refusal_is_traced(live_server: Any) -> None:
    base = live_server({"api_key": KEY, "max_body_bytes": 4096, "max_header_count": 30})
    app = live_server.apps[base]
    assert [m.cls for m in app.user_middleware] == [
        RequestContextMiddleware, HeaderLimitMiddleware, AuthMiddleware, BodyLimitMiddleware]
    extra = {f"x-extra-{i}": "1" for i in range(40)}
    auth = {"Authorization": f"Bearer {KEY}"}
    cases = [
        # too many header fields, no key, body too large: the header count answers first
        ({**extra, "x-request-id": "rid-431"}, BIG, 431, "request header fields"),
        # no key, body too large: the key answers before the body limit
        ({"x-request-id": "rid-401"}, BIG, 401, "missing or invalid API key"),
        ({**auth, "x-request-id": "rid-413"}, BIG, 413, "exceeds the limit of 4096 bytes"),
    ]
    for headers, body, status, message in cases:
        r = httpx.post(base + "/extract/", json=body, headers=headers)  # the trailing slash is undone first
        assert r.status_code == status, r.text
        assert r.headers["x-request-id"] == headers["x-request-id"]
        assert message in r.json()["detail"]
    served = httpx.post(base + "/extract", json={"turn": TURN}, headers=auth)
    assert served.status_code == 200 and len(served.headers["x-request-id"]) == 32
    counts = _requests_by_status(base)
    assert {s: counts.get(s) for s in ("200", "401", "413", "431")} == {
        "200": 1.0, "401": 1.0, "413": 1.0, "431": 1.0}
