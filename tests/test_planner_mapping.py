"""The mapping table of contracts.planner: one case per live planner shape (docs/planner-input.md), each checked
for its contract output and the rule it reports; every rule of the table is exercised."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from contracts.extract import ExtractOutput
from contracts.planner import (
    RULES,
    ExtractionShapeError,
    Notes,
    normalise_extraction,
    normalise_render_slot_state,
    normalise_tool_summary,
)
from contracts.widgets import PAYLOAD_MODELS

EXERCISED: set[str] = set()

from engines.deterministic.rules import TOOL_ACTIVITIES as ACTS  # noqa: E402
from engines.deterministic.rules import TOOL_BOOK_HOTEL as BOOK  # noqa: E402
from engines.deterministic.rules import TOOL_FLIGHTS as OFFERS  # noqa: E402
from engines.deterministic.rules import TOOL_HOTELS as HOTELS  # noqa: E402
from engines.deterministic.rules import TOOL_ORDER as ORDER  # noqa: E402
from engines.deterministic.rules import TOOL_PLACES as PLACES  # noqa: E402
from engines.deterministic.rules import TOOL_TRANSFERS as XFER  # noqa: E402

CONTRACT_EXTRACTION = {
    "slot_updates": {"region": {"label": "Paris", "city_code": "PAR", "country_code": "FR", "kind": "city"}},
    "tool_requests": [{"tool": PLACES, "arguments": {"query": "Paris", "max_results": 5}}],
    "render_intent": {"kind": "show_places"},
}


def _extraction(slot_updates: Any = None, tool_requests: Any = None, render_intent: Any = None,
                **extra: Any) -> dict[str, Any]:
    return {"slot_updates": {} if slot_updates is None else slot_updates,
            "tool_requests": [] if tool_requests is None else tool_requests,
            "render_intent": {"kind": "summarize"} if render_intent is None else render_intent, **extra}


def _run(raw: dict[str, Any]) -> tuple[dict[str, Any], list[str], list[dict[str, str]]]:
    notes = Notes()
    out, clears = normalise_extraction(copy.deepcopy(raw), notes)
    ExtractOutput.model_validate(out, strict=True)  # always the contract
    EXERCISED.update(n.rule for n in notes.items)
    return out, clears, notes.dump()


def _has(notes: list[dict[str, str]], path: str, rule: str) -> None:
    assert {"path": path, "action": RULES[rule].action, "rule": rule} in notes, notes


# --- extraction: one case per live shape ------------------------------------------------------------------


EXTRACTION_CASES: list[tuple[str, dict[str, Any], dict[str, Any], list[tuple[str, str]]]] = [
    ("slot alias", _extraction({"departure_date": "2026-10-10", "return_date": "2026-10-14",
                                "travelers": {"adults": 2}}),
     {"check_in_date": "2026-10-10", "check_out_date": "2026-10-14",
      "party": {"rooms": 1, "adults": 2, "children": []}},
     [("extraction.slot_updates.departure_date", "slot.alias"), ("extraction.slot_updates.travelers", "slot.alias"),
      ("extraction.slot_updates.party", "slot.value_coerced")]),
    ("alias shadowed by its target", _extraction({"check_in_date": "2026-10-10", "start_date": "2026-01-01"}),
     {"check_in_date": "2026-10-10"}, [("extraction.slot_updates.start_date", "slot.alias_shadowed")]),
    ("unknown slot keys", _extraction({"dates_explicit_range": False, "max_flight_hours": 4, "flight_origin": "SFO",
                                       "budget": {"cap": 300}, "region_center": {"lat": 1.0, "lng": 2.0},
                                       "places_seen": [], "total_results_seen": 0, "trip_confirmed": False}),
     {}, [("extraction.slot_updates.dates_explicit_range", "slot.not_in_contract"),
          ("extraction.slot_updates.region_center", "slot.not_in_contract")]),
    ("null clears", _extraction({"picked_flight_offer_id": None, "check_in_date": None}), {},
     [("extraction.slot_updates.picked_flight_offer_id", "slot.null_clear")]),
    ("region without kind or country_code", _extraction({"region": {"label": "Lisbon", "city_code": "LIS"}}),
     {"region": {"label": "Lisbon", "city_code": "LIS", "country_code": ""}},
     [("extraction.slot_updates.region", "slot.value_coerced")]),
    ("children as ages and a date-time", _extraction({"party": {"rooms": 1, "adults": 2, "children": [7, {"age": 4}]},
                                                      "check_in_date": "2026-10-10T10:00:00", "nights": "4"}),
     {"party": {"rooms": 1, "adults": 2, "children": [{"age": 7}, {"age": 4}]}, "check_in_date": "2026-10-10",
      "nights": 4},
     [("extraction.slot_updates.nights", "slot.value_coerced")]),
    ("unreadable slot value", _extraction({"check_out_date": "next week", "party": ["two"]}), {},
     [("extraction.slot_updates.check_out_date", "slot.value_invalid"),
      ("extraction.slot_updates.party", "slot.value_invalid")]),
]


@pytest.mark.parametrize(("raw", "slots", "expected"), [c[1:] for c in EXTRACTION_CASES],
                         ids=[c[0] for c in EXTRACTION_CASES])
def test_slot_update_shapes(raw: dict[str, Any], slots: dict[str, Any], expected: list[tuple[str, str]]) -> None:
    out, _clears, notes = _run(raw)
    assert out["slot_updates"] == slots
    for path, rule in expected:
        _has(notes, path, rule)


def test_null_clears_are_returned_and_removed_from_the_slot_state_the_render_reads() -> None:
    _out, clears, _notes = _run(_extraction({"picked_flight_offer_id": None, "check_in_date": None,
                                             "flight_offers": None}))
    assert clears == ["picked_flight_offer_id", "check_in_date"]
    slot = {"picked_flight_offer_id": "off_1", "check_in_date": "2026-10-10", "nights": 4}
    assert normalise_render_slot_state(slot, clears) == {"nights": 4}


TOOL_CASES: list[tuple[str, dict[str, Any], dict[str, Any], list[tuple[str, str]]]] = [
    ("duffel search_offers as the planner dispatches it",
     {"tool": OFFERS, "arguments": {"origin": "SFO", "destination": "LIS", "departure_date": "2026-10-10", "adults": 1,
                                    "passengers": [{"type": "adult"}], "cabin_class": "economy",
                                    "return_date": "2026-10-14", "max_connections": 0}},
     {"origin": "SFO", "destination": "LIS", "departure_date": "2026-10-10", "adults": 1, "cabin_class": "economy"},
     [("extraction.tool_requests.0.arguments.passengers", "arg.extra"),
      ("extraction.tool_requests.0.arguments.return_date", "arg.extra")]),
    ("duffel origin outside the contract",
     {"tool": OFFERS, "arguments": {"origin": "JFK", "destination": "CDG", "departure_date": None, "adults": "2",
                                    "cabin_class": "business"}},
     {"origin": "SFO", "destination": "CDG", "departure_date": None, "adults": 2, "cabin_class": "economy"},
     [("extraction.tool_requests.0.arguments.origin", "arg.outside_contract"),
      ("extraction.tool_requests.0.arguments.adults", "arg.coerced")]),
    ("transfers with to_type GPS",
     {"tool": XFER, "arguments": {"from_type": "IATA", "from_code": "CDG", "to_type": "GPS", "to_code": "48.8566,2.3522",
                                  "outbound": "2026-07-25T10:00:00", "adults": 1, "children": 0, "language": "en"}},
     {"from_type": "IATA", "from_code": "CDG", "to_type": "ATLAS", "outbound": "2026-07-25", "adults": 1},
     [("extraction.tool_requests.0.arguments.to_type", "arg.outside_contract"),
      ("extraction.tool_requests.0.arguments.to_code", "arg.extra"),
      ("extraction.tool_requests.0.arguments.outbound", "arg.coerced")]),
    ("hotels with a children list and missing arguments",
     {"tool": HOTELS, "arguments": {"city": "Paris", "city_code": "PAR", "children": [{"age": 5}]}},
     {"city": "Paris", "city_code": "PAR", "check_in": None, "check_out": None, "adults": 1, "rooms": 1,
      "children": 1, "radius": 20},
     [("extraction.tool_requests.0.arguments.radius", "arg.missing"),
      ("extraction.tool_requests.0.arguments.children", "arg.coerced")]),
    ("places synonym and max_results",
     {"tool": PLACES, "arguments": {"textQuery": "Lisbon", "max_results": 10}},
     {"query": "Lisbon", "max_results": 5},
     [("extraction.tool_requests.0.arguments.textQuery", "arg.alias"),
      ("extraction.tool_requests.0.arguments.max_results", "arg.outside_contract")]),
    ("create_order with the planner's passenger details",
     {"tool": ORDER, "arguments": {"offerId": "off_1", "passengers": [{"given_name": "Alex", "family_name": "Traveler",
                                                                        "email": "test@example.com"}],
                                   "duffel_env": "test"}},
     {"offer_id": "off_1", "passengers": [{"given_name": "Alex", "family_name": "Traveller"}], "duffel_env": "test"},
     [("extraction.tool_requests.0.arguments.passengers", "arg.outside_contract"),
      ("extraction.tool_requests.0.arguments.offerId", "arg.alias")]),
    ("book_hotel with rateKey and children",
     {"tool": BOOK, "arguments": {"rateKey": "rk", "holder_name": "Alex", "holder_surname": "Traveler", "rooms": 1,
                                  "adults": 2, "children": 0}},
     {"rate_key": "rk", "holder_name": "Alex", "holder_surname": "Traveller", "adults": 2},
     [("extraction.tool_requests.0.arguments.rooms", "arg.extra")]),
    ("activities as the planner dispatches them",
     {"tool": ACTS, "arguments": {"destination": "PAR", "from": "2026-07-25", "to": "2026-07-29", "adults": 1,
                                  "language": "en"}},
     {"destination": "PAR", "from": "2026-07-25", "to": "2026-07-29", "language": "en", "adults": 1}, []),
    ("legacy Amadeus hotel tool",
     {"tool": "mcp/amadeus.search_hotels", "arguments": {"cityCode": "PAR", "checkInDate": "2026-10-10",
                                                         "checkOutDate": "2026-10-14", "adults": 2,
                                                         "roomQuantity": 1}},
     {"city": "", "city_code": "PAR", "check_in": "2026-10-10", "check_out": "2026-10-14", "adults": 2, "rooms": 1,
      "children": 0, "radius": 20},
     [("extraction.tool_requests.0.tool", "tool.alias"), ("extraction.tool_requests.0.arguments.cityCode", "arg.alias")]),
    ("tool_id key and arguments that are not an object",
     {"tool_id": PLACES, "arguments": "Paris"}, {"query": "", "max_results": 5},
     [("extraction.tool_requests.0.tool", "tool.alias"),
      ("extraction.tool_requests.0.arguments", "tool.arguments_not_object")]),
]


@pytest.mark.parametrize(("request_", "arguments", "expected"), [c[1:] for c in TOOL_CASES],
                         ids=[c[0] for c in TOOL_CASES])
def test_tool_request_shapes(request_: dict[str, Any], arguments: dict[str, Any],
                             expected: list[tuple[str, str]]) -> None:
    out, _clears, notes = _run(_extraction(tool_requests=[request_], render_intent={"kind": "summarize"}))
    assert out["tool_requests"][0]["arguments"] == arguments
    for path, rule in expected:
        _has(notes, path, rule)


def test_unknown_and_extra_tool_requests_are_dropped() -> None:
    out, _c, notes = _run(_extraction(tool_requests=[{"tool": "mcp/adiona.search_cars", "arguments": {}}]))
    assert out["tool_requests"] == []
    _has(notes, "extraction.tool_requests.0.tool", "tool.unknown")
    first = {"tool": PLACES, "arguments": {"query": "Paris", "max_results": 5}}
    out, _c, notes = _run(_extraction(tool_requests=[first, first]))
    assert out["tool_requests"] == [first]
    _has(notes, "extraction.tool_requests.1", "tool.extra_request")
    out, _c, notes = _run(_extraction(tool_requests=first))  # one request object instead of a list
    assert out["tool_requests"] == [first]


INTENT_CASES: list[tuple[str, Any, dict[str, Any], list[tuple[str, str]]]] = [
    ("bare string", "show_hotels", {"kind": "show_hotels"}, [("extraction.render_intent", "intent.bare_string")]),
    ("error without reason", {"kind": "error"}, {"kind": "error", "reason": "provider_unavailable"},
     [("extraction.render_intent.reason", "intent.reason_defaulted")]),
    ("clarify without reason", "clarify", {"kind": "clarify", "reason": "confirmation_required"},
     [("extraction.render_intent.reason", "intent.reason_defaulted")]),
    ("hotel search blocked on dates", {"kind": "collect_missing", "missing": ["dates"], "blocking": "hotel_search"},
     {"kind": "collect_missing", "missing": ["dates"]}, [("extraction.render_intent.blocking",
                                                           "intent.blocking_dropped")]),
    ("flight search blocked on origin and dates",
     {"kind": "collect_missing", "missing": ["origin", "destination", "dates"], "blocking": "flight_search"},
     {"kind": "collect_missing", "missing": ["dates"]}, [("extraction.render_intent.missing",
                                                           "intent.missing_mapped")]),
    ("transfers blocked on pickup and drop-off",
     {"kind": "collect_missing", "missing": ["pickup_and_dropoff"], "blocking": "transfer_search"},
     {"kind": "collect_missing", "missing": ["region"]}, [("extraction.render_intent.missing",
                                                            "intent.missing_mapped")]),
    ("missing on another kind", {"kind": "show_hotels", "missing": ["dates"], "reason": "x", "note": 1},
     {"kind": "show_hotels"}, [("extraction.render_intent.missing", "intent.missing_dropped"),
                               ("extraction.render_intent.reason", "intent.reason_dropped"),
                               ("extraction.render_intent.note", "intent.extra_key")]),
    ("unknown kind", {"kind": "show_cars"}, {"kind": "summarize"}, [("extraction.render_intent.kind",
                                                                    "intent.unknown_kind")]),
]


@pytest.mark.parametrize(("intent", "expected_intent", "expected"), [c[1:] for c in INTENT_CASES],
                         ids=[c[0] for c in INTENT_CASES])
def test_render_intent_shapes(intent: Any, expected_intent: dict[str, Any], expected: list[tuple[str, str]]) -> None:
    out, _c, notes = _run(_extraction(render_intent=intent))
    assert out["render_intent"] == expected_intent
    for path, rule in expected:
        _has(notes, path, rule)


def test_the_whole_extract_turn_result_and_null_sections() -> None:
    raw = {"thread_path": "t", "slot_updates": None, "tool_requests": None, "render_intent": {"kind": "summary"},
           "first_tool": "", "llm_contract": {"provider": "vertex-ai"}}
    out, _c, notes = _run(raw)
    assert out == {"slot_updates": {}, "tool_requests": [], "render_intent": {"kind": "summary"}}
    _has(notes, "extraction.first_tool", "extraction.extra_key")
    _has(notes, "extraction.slot_updates", "extraction.null_section")


def test_a_contract_extraction_is_unchanged_without_notes() -> None:
    out, clears, notes = _run(CONTRACT_EXTRACTION)
    assert out == CONTRACT_EXTRACTION and clears == [] and notes == []


@pytest.mark.parametrize("raw", [[], "x", {"slot_updates": {}}, {"slot_updates": 3, "tool_requests": [],
                                                                  "render_intent": "summary"}])
def test_what_is_not_an_extraction_is_refused_by_field(raw: Any) -> None:
    with pytest.raises(ExtractionShapeError) as info:
        normalise_extraction(raw)
    assert info.value.errors and all("loc" in e and "msg" in e for e in info.value.errors)


# --- tool_result ------------------------------------------------------------------------------------------


def _summary(raw: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, str]]]:
    notes = Notes()
    out = normalise_tool_summary(copy.deepcopy(raw), notes)
    EXERCISED.update(n.rule for n in notes.items)
    return out, notes.dump()


PLACE = {"place_id": "ChIJ_example_Lisbon", "name": "Lisbon", "types": ["locality"], "address": "Lisbon, Portugal",
         "photos": ["https://places.googleapis.com/v1/places/ChIJ/photos/A/media?maxWidthPx=400"],
         "ctas": ["add_to_itinerary"], "rating": 4.7, "rating_count": 1532}


def test_planner_tool_result_cards_move_under_data() -> None:
    raw = {"call_id": "call_0123456789ab", "tool": PLACES, "ok": True, "isError": False,
           "response_summary": "x", "response_excerpt": "{}", "raw_response": {}, "places": [PLACE]}
    out, notes = _summary(raw)
    assert out["ok"] is True and out["tool"] == PLACES and out["data"] == {"places": [PLACE]}
    _has(notes, "tool_summary.places", "tool_result.cards_to_data")
    assert "places" not in out and out["call_id"] == "call_0123456789ab"


def test_is_error_is_a_provider_failure_and_ok_must_be_boolean() -> None:
    out, notes = _summary({"tool": HOTELS, "ok": True, "isError": True, "hotels": []})
    assert out["ok"] is False and out["data"] == {"hotels": []}
    _has(notes, "tool_summary.isError", "tool_result.is_error")
    out, notes = _summary({"tool": HOTELS, "ok": "yes", "hotels": []})
    assert out["ok"] is True
    _has(notes, "tool_summary.ok", "tool_result.ok_not_bool")


def test_order_card_is_flattened_with_its_real_fields() -> None:
    order = {"order_id": "ord_0000AbC", "booking_reference": "RZPNX8", "total_amount": "412.60",
             "total_currency": "USD", "passengers": [{"given_name": "Alex"}], "slices": [{"origin": "SFO"}],
             "documents": [{"unique_identifier": "1", "type": "electronic_ticket", "document_url": None}],
             "ctas": ["view_full", "new_search"], "live_mode": False}
    out, notes = _summary({"tool": ORDER, "ok": True, "isError": False, "order": order})
    data = out["data"]
    assert (data["order_id"], data["booking_reference"], data["total_amount"]) == ("ord_0000AbC", "RZPNX8", "412.60")
    assert data["passengers"] == order["passengers"] and data["ctas"] == order["ctas"]
    _has(notes, "tool_summary.data.order", "tool_result.order_fields")
    _has(notes, "tool_summary.data.order.live_mode", "card.field_not_in_contract")
    _has(notes, "tool_summary.data.order.documents.0.document_url", "card.field_invalid")  # null: not a string
    assert data["documents"] == [{"unique_identifier": "1", "type": "electronic_ticket"}]
    out, _notes = _summary({"tool": ORDER, "ok": True, "order": {"booking_reference": "RZPNX8", "total_amount": 412.6}})
    assert out["data"]["order_id"] == "RZPNX8" and out["data"]["total_amount"] == "412.6"


def test_cards_are_made_contract_valid_or_dropped() -> None:
    hotel = {"hotel_id": "123456", "name": "Hotel Example", "score": 4.3, "photos": ["not a url",
                                                                                  "https://photos.example/a.jpg"],
             "amenities": [], "currency": "EUR", "star_rating": "4", "location": {"lat": "48.87", "lng": 2.29},
             "score_count": None, "giata": 1}
    out, notes = _summary({"tool": HOTELS, "ok": True, "hotels": [hotel, {"name": "no id"}, "junk"]})
    (clean,) = out["data"]["hotels"]
    PAYLOAD_MODELS["hotel_card"].model_validate(clean, strict=True)
    assert clean["hotel_id"] == "123456" and clean["photos"] == ["https://photos.example/a.jpg"]
    assert clean["star_rating"] == 4.0 and clean["location"] == {"lat": 48.87, "lng": 2.29}
    assert "score_count" not in clean and "giata" not in clean
    _has(notes, "tool_summary.data.hotels.0.giata", "card.field_not_in_contract")
    _has(notes, "tool_summary.data.hotels.0.score_count", "card.field_invalid")
    _has(notes, "tool_summary.data.hotels.1", "card.invalid")
    _has(notes, "tool_summary.data.hotels.2", "card.not_an_object")
    out, notes = _summary({"tool": ACTS, "ok": True, "activities": [{"activity_code": "E-E10-X", "name": "Tour"}],
                           "transfers": "none"})
    assert out["data"]["activities"] == [{"activity_code": "E-E10-X", "name": "Tour", "currency": "EUR"}]
    _has(notes, "tool_summary.data.activities.0.currency", "card.field_defaulted")
    _has(notes, "tool_summary.data.transfers", "tool_result.not_a_list")


def test_nested_card_fields_are_converted_field_by_field() -> None:
    segment = {"departure": {"iata": "SFO", "at": "2026-10-10T08:15:00"}, "arrival": {"iata": "LIS", "at": "x"},
               "carrier": "ZZ", "duration": "PT11H25M", "stops": "0", "flight_number": 1234, "aircraft_seats": 180}
    offer = {"offer_id": "off_1", "price": {"total": 412.6, "currency": "EUR"},
             "itineraries": [{"duration": "PT11H25M", "segments": [segment, {"carrier": "no endpoints"}]}],
             "carriers": ["ZZ"], "duration": "PT11H25M", "stops": 0}
    out, notes = _summary({"tool": OFFERS, "ok": True, "offers": [offer]})
    (clean,) = out["data"]["offers"]
    PAYLOAD_MODELS["flight_card"].model_validate(clean, strict=True)
    assert clean["price"] == {"total": "412.6", "currency": "EUR"}
    (seg,) = clean["itineraries"][0]["segments"]
    assert (seg["stops"], seg["flight_number"]) == (0, "1234") and "aircraft_seats" not in seg
    prefix = "tool_summary.data.offers.0.itineraries.0.segments"
    _has(notes, f"{prefix}.0.aircraft_seats", "card.field_not_in_contract")
    _has(notes, f"{prefix}.1", "card.invalid")
    _has(notes, "tool_summary.data.offers.0.price.total", "card.field_coerced")


def test_ours_and_the_fixtures_are_unchanged() -> None:
    from engines.deterministic.fixtures import fixture

    slot = {"region": {"label": "Miami", "city_code": "MIA", "country_code": "US"}, "picked_flight_offer_id": "off_1"}
    for tool in (PLACES, OFFERS, HOTELS, ORDER, BOOK, ACTS, XFER):
        ts = fixture({"tool_requests": [{"tool": tool, "arguments": {}}]}, slot)
        out, notes = _summary(ts)
        assert out == ts and notes == []
        assert normalise_tool_summary(out) == out  # idempotent


def test_render_slot_state_keeps_what_it_can_read() -> None:
    notes = Notes()
    slot = {"region": "Paris", "check_in_date": "2026-10-10T00:00:00", "check_out_date": 20261014,
            "party": {"adults": 2}, "region_center": {"lat": "48.8", "lng": "2.3"}}
    out = normalise_render_slot_state(slot, (), notes)
    EXERCISED.update(n.rule for n in notes.items)
    assert out["region"] == {"label": "Paris", "city_code": "", "country_code": ""}
    assert out["check_in_date"] == "2026-10-10" and "check_out_date" not in out
    assert out["party"] == {"adults": 2} and out["region_center"] == slot["region_center"]
    rules = {(n.path, n.rule) for n in notes.items}
    assert ("turn.slot_state.check_out_date", "slot_state.value_invalid") in rules
    assert ("turn.slot_state.region", "slot_state.value_coerced") in rules


def test_every_rule_of_the_table_is_exercised() -> None:
    """Each row of RULES is produced by at least one case of this module (run here again, so the check
    does not depend on test order)."""
    for _id, raw, _slots, _expected in EXTRACTION_CASES:
        _run(raw)
    for _id, request_, _args, _expected in TOOL_CASES:
        _run(_extraction(tool_requests=[request_]))
    for _id, intent, _out, _expected in INTENT_CASES:
        _run(_extraction(render_intent=intent))
    for case in (test_null_clears_are_returned_and_removed_from_the_slot_state_the_render_reads,
                 test_unknown_and_extra_tool_requests_are_dropped, test_the_whole_extract_turn_result_and_null_sections,
                 test_planner_tool_result_cards_move_under_data,
                 test_is_error_is_a_provider_failure_and_ok_must_be_boolean,
                 test_order_card_is_flattened_with_its_real_fields, test_cards_are_made_contract_valid_or_dropped,
                 test_render_slot_state_keeps_what_it_can_read):
        case()
    assert set(RULES) - EXERCISED == set()


@pytest.mark.parametrize("value", ["2026-02-28", "2024-02-29", "2026-02-30", "2026-13-01", "2026-1-01", "2026-01-01 ",
                                   "\u0662\u0660\u0662\u0666-\u0660\u0661-\u0660\u0661", "２０２６-０１-０１", ""])
def test_a_real_slot_date_is_the_widget_contracts_format_date(value: str) -> None:
    """contracts.planner.is_real_date (the slot dates the passes read) is the widgets' ``format: date`` check:
    a date the oracle copies into a widget is one the widget contract accepts (ASCII digits, a real day)."""
    from contracts.planner import is_real_date
    from contracts.widgets import is_date

    assert is_real_date(value) == is_date(value) == (value in ("2026-02-28", "2024-02-29"))
