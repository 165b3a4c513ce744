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


# --- what the property tests (tests/test_hardening_property.py) found; each failed before its fix ----------------


def _post(base: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    r = httpx.post(base + path, json=body, timeout=30)
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    assert out["schema_valid"] is True, out
    return out


def test_widget_values_of_the_wrong_type_count_as_absent(default_server: str) -> None:
    """A submitted place label that is not a string: /render was a 500 (the oracle concatenated it), /extract
    served an invalid slot update; wrong-typed dates, party and children values were served as they came."""
    submits: list[tuple[dict[str, Any], set[str]]] = [
        ({"id": "LIS", "label": 5}, set()),
        ({"id": ["SPI"], "label": "Springfield"}, set()),
        ({"from": 20261010, "to": "2026-10-14", "nights": 4}, set()),
        ({"from": "2026-02-30", "to": "2026-03-04"}, set()),
        ({"from": "2026-10-10", "to": "2026-10-14", "nights": "4"}, {"check_in_date", "check_out_date", "nights"}),
        ({"adults": "2", "rooms": 1}, set()),
        ({"adults": 2, "rooms": {}, "children": [{"age": "x"}, 9, "y"]}, {"party"}),
    ]
    for value, kept in submits:
        turn = {"event_type": "user_widget_submit", "event_payload": {"submitted_value": value}, "slot_state": {}}
        updates = _post(default_server, "/extract", {"turn": turn})["extract"]["slot_updates"]
        assert set(updates) == kept, (value, updates)
        _post(default_server, "/render", {"turn": turn})
    turn = {"event_type": "user_widget_submit", "event_payload": {"submitted_value": submits[-1][0]}}
    party = _post(default_server, "/extract", {"turn": turn})["extract"]["slot_updates"]["party"]
    assert party == {"rooms": 1, "adults": 2, "children": [{}, {"age": 9}, {}]}
    turn = {"event_type": "user_widget_submit", "event_payload": {"submitted_value": submits[4][0]}}
    assert _post(default_server, "/extract", {"turn": turn})["extract"]["slot_updates"]["nights"] == 4


def test_slot_values_of_the_wrong_type_count_as_absent_in_the_tool_arguments(default_server: str) -> None:
    """``slot_state.region.label: 7`` (and the like) reached the tool arguments: schema_valid false."""
    slots: list[dict[str, Any]] = [
        {"region": {"label": 7, "city_code": "PAR", "country_code": "FR"}},
        {"region": {"label": "Paris", "city_code": {"iata": "PAR"}, "country_code": "FR"}},
        {"region": {"label": "Paris", "city_code": "PAR", "country_code": "FR"}, "check_in_date": {"d": 1},
         "party": {"adults": []}},
        {"region": {"label": "Paris", "city_code": "PAR", "country_code": "FR"}, "party": {"adults": 2, "rooms": "1"}},
    ]
    for slot in slots:
        for text in ("hotels please", "flights please", "activities please", "airport transfer please"):
            turn = {"event_type": "user_message", "event_payload": {"text": text}, "slot_state": slot}
            _post(default_server, "/extract", {"turn": turn})
            _post(default_server, "/render", {"turn": turn})
    book = {"event_type": "user_widget_cta_click", "event_payload": {"action_id": "book_offer:x"},
            "slot_state": {"picked_flight_offer_id": 123, "picked_hotel_rate_key": 5}, "duffel_env": "test"}
    _post(default_server, "/extract", {"turn": book})
    _post(default_server, "/render", {"turn": book})


def test_a_long_digit_run_is_not_a_500(default_server: str) -> None:
    """int() of more than 4,300 digits raises: a party count in the text, a numeric string in a slot update."""
    turn = {"event_type": "user_message", "event_payload": {"text": "1" * 5000 + " adults to Paris"}}
    out = _post(default_server, "/extract", {"turn": turn})
    assert "party" not in out["extract"]["slot_updates"]
    extraction = {"slot_updates": {"nights": "1" * 5000}, "tool_requests": [], "render_intent": "summary"}
    _post(default_server, "/render", {"turn": turn, "extraction": extraction})


def test_a_date_that_is_no_real_day_is_not_rendered(default_server: str) -> None:
    """"2026-02-30" in the text was rendered into itinerary_summary.dates (format: date): schema_valid false."""
    turn = {"event_type": "user_message", "event_payload": {"text": "summary of my trip 2026-02-30 to 2026-03-04"},
            "slot_state": {"region": {"label": "Paris", "city_code": "PAR", "country_code": "FR"}}}
    out = _post(default_server, "/render", {"turn": turn})
    dates = out["render"]["widgets"][0]["payload"]["dates"]
    assert dates["from"] != "2026-02-30"
    slot = {**turn["slot_state"], "check_in_date": "2026-13-01"}
    _post(default_server, "/render", {"turn": {**turn, "slot_state": slot}})


def test_a_children_count_is_bounded() -> None:
    """A children count became a list of that many entries: 10**12 would exhaust the memory."""
    from contracts.planner import party

    assert party({"adults": 2, "children": 3})["children"] == [{}, {}, {}]
    assert party({"adults": 2, "children": 1000})["children"] == []
    assert party({"adults": 2, "children": 10**12})["children"] == []


def test_the_extract_pass_reads_the_slot_state_as_the_render_does(default_server: str) -> None:
    """A date-time or a region label as slot values: converted for both passes, with input notes (before: the
    extract copied them into the tool arguments, schema_valid false)."""
    slot = {"region": "Paris", "check_in_date": "2026-10-10T00:00:00Z", "check_out_date": "2026-10-14",
            "party": {"adults": 2}, "picked_flight_offer_id": 77}
    turn = {"event_type": "user_message", "event_payload": {"text": "hotels please"}, "slot_state": slot}
    out = _post(default_server, "/extract", {"turn": turn})
    args = out["extract"]["tool_requests"][0]["arguments"]
    assert (args["city"], args["check_in"], args["adults"]) == ("Paris", "2026-10-10", 2)
    notes = {(n["path"], n["rule"]) for n in out["input_notes"]}
    assert notes >= {("turn.slot_state.region", "slot_state.value_coerced"),
                     ("turn.slot_state.check_in_date", "slot_state.value_coerced"),
                     ("turn.slot_state.picked_flight_offer_id", "slot_state.value_coerced")}
