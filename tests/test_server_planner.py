"""The planner endpoints over a real uvicorn server and a real HTTP client (docs/api.md §2)."""

from __future__ import annotations

import copy
from typing import Any

import httpx
import pytest

from contracts.vocab import CONTRACT_VERSION


def _post(base: str, path: str, body: Any, **kw: Any) -> httpx.Response:
    return httpx.post(base + path, json=body, timeout=10, **kw)


def _check_contract(contract: dict[str, Any], engine: str = "deterministic") -> None:
    assert contract["engine"] == engine
    assert contract["contract_version"] == CONTRACT_VERSION
    assert set(contract) == {"engine", "adapter", "model", "fallback_used", "fallback_reason", "fallback_detail",
                             "contract_version"}
    assert (contract["fallback_detail"] is None) == (not contract["fallback_used"])


def test_reference_turns_extract_and_render_equal_the_labels(default_server: str, reference_records: list) -> None:
    with httpx.Client(base_url=default_server, timeout=10) as client:
        for record in reference_records:
            turn = record["input"]
            r = client.post("/extract", json={"turn": turn})
            assert r.status_code == 200, r.text
            body = r.json()
            assert set(body) == {"extract", "latency_ms", "schema_valid", "llm_contract", "input_notes"}
            assert body["input_notes"] == []  # a contract-shaped turn needs no mapping
            assert body["extract"] == record["expected"]["extract"], record["id"]
            assert body["schema_valid"] is True
            assert isinstance(body["latency_ms"], float) and round(body["latency_ms"], 1) == body["latency_ms"]
            _check_contract(body["llm_contract"])
            assert body["llm_contract"]["fallback_used"] is False

            # render with the labelled extraction and tool_summary
            r = client.post("/render", json={"turn": turn, "extraction": record["expected"]["extract"],
                                             "tool_summary": record["expected"]["tool_summary"]})
            assert r.status_code == 200, r.text
            body = r.json()
            assert set(body) == {"render", "latency_ms", "schema_valid", "widget_types", "llm_contract", "input_notes",
                                 "tool_summary_source", "fixtures_used"}
            assert body["input_notes"] == [], record["id"]  # the oracle's own shapes are taken as they are
            assert body["tool_summary_source"] == "body" and body["fixtures_used"] is False
            assert r.headers["X-Tool-Summary-Source"] == "body"
            assert body["render"] == record["expected"]["render"], record["id"]
            assert body["widget_types"] == [w["widget_type"] for w in record["expected"]["render"]["widgets"]]
            assert body["schema_valid"] is True


def test_render_without_extraction_extracts_first_and_uses_the_fixture(default_server: str,
                                                                       reference_records: list) -> None:
    # Reference turns carry no tool_summary, so the render falls back to the oracle fixture: the label.
    for record in reference_records[::7]:
        turn = {k: v for k, v in record["input"].items() if k != "tool_summary"}
        r = _post(default_server, "/render", {"turn": turn})
        assert r.status_code == 200, r.text
        assert r.json()["render"] == record["expected"]["render"], record["id"]


def test_rfc_method_names_answer_like_the_short_ones(default_server: str, reference_records: list) -> None:
    record = reference_records[3]
    a = _post(default_server, "/extract", {"turn": record["input"]}).json()
    b = _post(default_server, "/extract_turn", {"turn": record["input"]}).json()
    assert a["extract"] == b["extract"] and a["llm_contract"] == b["llm_contract"]
    c = _post(default_server, "/render", {"turn": record["input"]}).json()
    d = _post(default_server, "/render_widget_chat", {"turn": record["input"]}).json()
    assert c["render"] == d["render"] and c["widget_types"] == d["widget_types"]


HOTEL_TURN = {"event_type": "user_message", "event_payload": {"text": "find me hotels"},
              "slot_state": {"region": {"label": "Paris", "city_code": "PAR", "country_code": "FR", "kind": "city"},
                             "check_in_date": "2026-05-01", "check_out_date": "2026-05-04", "nights": 3,
                             "party": {"rooms": 1, "adults": 2, "children": []}}}


def test_planner_shadow_step_client_with_firestore_envelope(default_server: str) -> None:
    """POST {turn: {..., slot_state: <Firestore envelope>}} to /extract, then {turn, extraction} to /render."""
    flat = HOTEL_TURN["slot_state"]
    envelope = {"found": True, "path": "trips/t1/slots/current",
                "document": {"name": "projects/p/databases/(default)/documents/trips/t1", "data": flat,
                             "createTime": "2026-01-01T00:00:00Z"}}
    planner_turn = {**HOTEL_TURN, "slot_state": envelope, "tool_summary": None}
    with httpx.Client(base_url=default_server, timeout=10) as client:
        ex = client.post("/extract", json={"turn": planner_turn})
        assert ex.status_code == 200, ex.text
        ex_body = ex.json()
        flat_ex = client.post("/extract", json={"turn": HOTEL_TURN}).json()
        assert ex_body["extract"] == flat_ex["extract"]
        assert ex_body["extract"]["tool_requests"][0]["tool"] == "mcp/hotelbeds.search_hotels"
        assert ex_body["extract"]["tool_requests"][0]["arguments"]["adults"] == 2
        assert ex_body["schema_valid"] is True and isinstance(ex_body["latency_ms"], float)

        rd = client.post("/render", json={"turn": planner_turn, "extraction": ex_body["extract"]})
        assert rd.status_code == 200, rd.text
        rd_body = rd.json()
        assert rd_body["widget_types"] == ["hotel_list"]
        assert rd_body["schema_valid"] is True and isinstance(rd_body["latency_ms"], float)

        # found: false means an empty slot state
        missing = {"found": False, "path": "trips/t2/slots/current"}
        r = client.post("/extract", json={"turn": {**HOTEL_TURN, "slot_state": missing}})
        empty = client.post("/extract", json={"turn": {**HOTEL_TURN, "slot_state": {}}})
        assert r.status_code == 200 and r.json()["extract"] == empty.json()["extract"]


def test_tool_summary_from_body_then_turn_then_fixture(default_server: str) -> None:
    ex = _post(default_server, "/extract", {"turn": HOTEL_TURN}).json()["extract"]
    failing = {"ok": False, "tool": "mcp/hotelbeds.search_hotels", "data": {}}
    fixture = _post(default_server, "/render", {"turn": HOTEL_TURN, "extraction": ex}).json()
    assert fixture["widget_types"] == ["hotel_list"]

    in_turn = _post(default_server, "/render", {"turn": {**HOTEL_TURN, "tool_summary": failing},
                                                "extraction": ex}).json()
    assert in_turn["widget_types"] == ["error_card"]

    ok_summary = {"ok": True, "tool": "mcp/hotelbeds.search_hotels",
                  "data": {"hotels": [{"hotel_id": "h1", "name": "Body Hotel", "score": 8.5, "photos": [],
                                       "amenities": [], "currency": "EUR"}]}}
    in_body = _post(default_server, "/render", {"turn": {**HOTEL_TURN, "tool_summary": failing}, "extraction": ex,
                                                "tool_summary": ok_summary}).json()
    assert in_body["widget_types"] == ["hotel_list"]
    assert in_body["render"]["widgets"][0]["payload"]["items"][0]["name"] == "Body Hotel"


def test_x_engine_override(live_server: Any) -> None:
    base = live_server()
    ok = _post(base, "/extract", {"turn": HOTEL_TURN}, headers={"X-Engine": "deterministic"})
    assert ok.status_code == 200

    # an engine that is not configured on this server: served by the oracle, reason unavailable
    slm = _post(base, "/extract", {"turn": HOTEL_TURN}, headers={"X-Engine": "slm"})
    assert slm.status_code == 200
    body = slm.json()
    assert body["extract"] == ok.json()["extract"]
    assert body["llm_contract"]["engine"] == "slm"
    assert body["llm_contract"]["fallback_used"] is True
    assert body["llm_contract"]["fallback_reason"] == "unavailable"

    bad = _post(base, "/extract", {"turn": HOTEL_TURN}, headers={"X-Engine": "gpt5"})
    assert bad.status_code == 400
    assert "X-Engine" in bad.json()["detail"]
    assert _post(base, "/render", {"turn": HOTEL_TURN}, headers={"X-Engine": "nope"}).status_code == 400


@pytest.mark.parametrize("path", ["/extract", "/render"])
def test_the_body_is_checked_before_the_pass_headers(default_server: str, path: str) -> None:
    """server.passes: the endpoint reads X-Engine and X-Request-Timeout-Ms once its body is valid (not as FastAPI
    dependencies, which would run first): a bad body with bad headers is the body's 422, and the 422 counts no
    engine; with a good body each header is its own 400."""
    bad_headers = {"X-Engine": "gpt5", "X-Request-Timeout-Ms": "soon"}
    r = _post(default_server, path, {"turn": "not an object"}, headers=bad_headers)
    assert r.status_code == 422, r.text
    assert any(err["loc"][:2] == ["body", "turn"] for err in r.json()["detail"])
    metrics = httpx.get(default_server + "/metrics").text
    label = f'pass="{path[1:]}",status="422"'
    assert any(label in line and 'engine="none"' in line for line in metrics.splitlines()
               if line.startswith("travel_slm_requests_total")), label
    r = _post(default_server, path, {"turn": HOTEL_TURN}, headers=bad_headers)
    assert r.status_code == 400 and "X-Engine" in r.json()["detail"]
    r = _post(default_server, path, {"turn": HOTEL_TURN}, headers={"X-Request-Timeout-Ms": "soon"})
    assert r.status_code == 400 and "X-Request-Timeout-Ms" in r.json()["detail"]


def test_extraction_outside_the_contract_renders_and_says_what_was_mapped(default_server: str) -> None:
    ex = _post(default_server, "/extract", {"turn": HOTEL_TURN}).json()["extract"]
    odd = copy.deepcopy(ex)
    odd["tool_requests"][0]["arguments"]["radius"] = 99  # liberal in: the render needs only the tool id
    r = _post(default_server, "/render", {"turn": HOTEL_TURN, "extraction": odd})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["schema_valid"] is True and body["widget_types"] == ["hotel_list"]
    assert {"path": "extraction.tool_requests.0.arguments.radius", "action": "defaulted",
            "rule": "arg.outside_contract"} in body["input_notes"]


def test_extraction_that_is_not_an_extraction_is_422_with_field_messages(default_server: str) -> None:
    r = _post(default_server, "/render", {"turn": HOTEL_TURN, "extraction": ["not", "an", "object"]})
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"][:2] == ["body", "extraction"]
    r = _post(default_server, "/render", {"turn": HOTEL_TURN,
                                          "extraction": {"slot_updates": "x", "tool_requests": [], "render_intent": {}}})
    assert r.status_code == 422
    assert ["body", "extraction", "slot_updates"] in [d["loc"] for d in r.json()["detail"]]

    r = _post(default_server, "/render", {"turn": HOTEL_TURN, "extraction": {"slot_updates": {}}})
    assert r.status_code == 422
    locs = [d["loc"] for d in r.json()["detail"]]
    assert ["body", "extraction", "tool_requests"] in locs and ["body", "extraction", "render_intent"] in locs


def test_unknown_event_type_is_free_text(default_server: str) -> None:
    turn = {"event_type": "user_message or user_widget_submit", "event_payload": {"text": "hotels in Paris"}}
    r = _post(default_server, "/extract", {"turn": turn})
    assert r.status_code == 200
    same = _post(default_server, "/extract", {"turn": {**turn, "event_type": "user_message"}})
    assert r.json()["extract"] == same.json()["extract"]


def test_healthz_and_readyz(default_server: str) -> None:
    h = httpx.get(default_server + "/healthz")
    assert h.status_code == 200
    body = h.json()
    assert body["ok"] is True and body["domain"] == "travel" and body["backend"] == "deterministic"
    assert isinstance(body["model"], str) and isinstance(body["constrained"], bool)
    assert body["engines"]["deterministic"]["ready"] is True
    r = httpx.get(default_server + "/readyz")
    assert r.status_code == 200 and r.json()["ready"] is True


def test_request_id_is_echoed(default_server: str) -> None:
    r = _post(default_server, "/extract", {"turn": HOTEL_TURN}, headers={"X-Request-ID": "planner-42"})
    assert r.headers["x-request-id"] == "planner-42"
    r = _post(default_server, "/extract", {"turn": HOTEL_TURN}, headers={"X-Request-ID": "bad id\twith spaces"})
    assert r.headers["x-request-id"] != "bad id\twith spaces" and len(r.headers["x-request-id"]) == 32


@pytest.mark.parametrize("path", ["/extract", "/render"])
def test_any_content_type_is_read_as_json(default_server: str, path: str) -> None:
    content = b'{"turn": {"event_payload": {"text": "hotels in Paris"}}}'
    r = httpx.post(default_server + path, content=content, headers={"Content-Type": "text/plain"})
    assert r.status_code == 200, r.text
