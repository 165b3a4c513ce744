"""A harness that calls the server exactly as the live planner does (docs/planner-input.md): the Firestore load
envelope as slot_state, the planner's own ``tool_result`` (cards at the top level, no ``data``) for every
provider and its failure cases, the live ``extract_turn`` output shapes, and the shadow step's two calls.

What it checks: widget items ARE the sent cards (ids equal, cards unchanged), every answer is 200 and
valid against the exported JSON Schemas of contracts/schemas, failures render an error_card, and the same
requests work through /v1/chat/completions with the official client, ``travel-slm predict`` and
``travel-slm eval``.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest

from tests.conftest import CORPORA, REPO

SCHEMAS = REPO / "contracts" / "schemas"
PLACES = "mcp/google-places.search_text"
OFFERS = "mcp/duffel.search_offers"
ORDER = "mcp/duffel.create_order"
HOTELS = "mcp/hotelbeds.search_hotels"
BOOK = "mcp/hotelbeds.book_hotel"
ACTS = "mcp/hotelbeds-activities.search_activities"
XFER = "mcp/hotelbeds-transfers.search_transfers"


# --- what the planner sends ---------------------------------------------------------------------------------


def firestore(slots: dict[str, Any] | None) -> dict[str, Any]:
    """``load_slot_state.data``: the Firestore load envelope (planner_io 4 and 5)."""
    path = "chat_threads/th_harness/slot_state/current"
    if slots is None:
        return {"found": False, "path": path, "document": None}
    return {"found": True, "path": path,
            "document": {"name": f"projects/p/databases/(default)/documents/{path}", "path": path,
                         "createTime": "2026-09-01T10:00:00.000000Z", "updateTime": "2026-09-01T10:05:00.000000Z",
                         "data": slots}}


def tool_result(tool: str, key: str | None, cards: Any, *, ok: bool = True, summary: str | None = None,
                **extra: Any) -> dict[str, Any]:
    """``normalize_tool_response.tool_result`` (planner_io 1.2): cards at the top level beside the metadata."""
    out: dict[str, Any] = {"call_id": "call_0123456789ab", "tool": tool, "ok": ok, "isError": not ok,
                           "response_summary": summary or f"{tool} response",
                           "response_excerpt": json.dumps({key: cards} if key else {})[:1200],
                           "raw_response": {"isError": not ok, "status": "ok", "_meta": {"tool": tool}}}
    if key is not None:
        out[key] = cards
    out.update(extra)
    return out


PLACE_CARDS = [
    {"place_id": "ChIJ_example_Lisbon", "name": "Lisbon", "types": ["locality", "political"],
     "photos": ["https://places.googleapis.com/v1/places/ChIJ_example_Lisbon/photos/AbC123/media?maxWidthPx=400"],
     "address": "Lisbon, Portugal", "ctas": ["add_to_itinerary"], "rating": 4.7, "rating_count": 1532},
    {"place_id": "ChIJ_example_Belem", "name": "Belem Tower", "types": ["tourist_attraction"], "photos": [],
     "address": "Av. Brasilia, Lisbon", "ctas": ["add_to_itinerary"]},
]


def _offer(offer_id: str, total: str, carrier: str, duration: str) -> dict[str, Any]:
    return {"offer_id": offer_id, "price": {"total": total, "currency": "EUR"},
            "itineraries": [{"duration": duration, "segments": [
                {"departure": {"iata": "SFO", "at": "2026-10-10T08:15:00"},
                 "arrival": {"iata": "LIS", "at": "2026-10-11T04:40:00"}, "carrier": carrier,
                 "flight_number": "1234", "duration": duration, "stops": 0}]}],
            "carriers": [carrier], "duration": duration, "stops": 0, "validating_airline": carrier,
            "ctas": ["view_details", "book_this"]}


OFFER_CARDS = [_offer("off_0000Aexample", "412.60", "ZZ", "PT11H25M"), _offer("off_0000Bexample", "389.10", "YY",
                                                                             "PT14H05M")]
GROUPS = {"cheapest": {"offer_id": "off_0000Bexample", "price": "389.10", "currency": "EUR", "duration_minutes": 845,
                       "stops": 0},
          "fastest": {"offer_id": "off_0000Aexample", "price": "412.60", "currency": "EUR", "duration_minutes": 685,
                      "stops": 0},
          "best_value": {"offer_id": "off_0000Aexample", "price": "412.60", "currency": "EUR",
                         "duration_minutes": 685, "stops": 0},
          "radius_hint_hours": None, "considered": 2}
ORDER_CARD = {"order_id": "ord_0000AbCdEfGh", "booking_reference": "RZPNX8", "total_amount": "412.60",
              "total_currency": "EUR",
              "passengers": [{"id": "pas_1", "given_name": "Alex", "family_name": "Traveler", "born_on": "1990-01-01"}],
              "slices": [{"origin": {"iata_code": "SFO"}, "destination": {"iata_code": "LIS"}}],
              "documents": [{"unique_identifier": "1234567890123", "type": "electronic_ticket"}],
              "ctas": ["view_full", "new_search"]}
HOTEL_CARDS = [
    {"hotel_id": "123456", "name": "Hotel Example Paris", "score": 4.3,
     "photos": ["https://photos.hotelbeds.com/giata/bigger/12/123456/123456a_hb_a_001.jpg"], "amenities": [],
     "currency": "EUR", "ctas": ["watch_in_detail", "show_numbers", "book"],
     "rate_key": "20261010|20261014|W|1|123456|DBL.ST|ID_B2B_26|RO||1~2~0||N@06~~example", "score_count": 210,
     "star_rating": 4.0, "price_per_night": 512.4, "location": {"lat": 48.8738, "lng": 2.295, "city": "Paris"},
     "address": "1 Rue Exemple"},
    {"hotel_id": "654321", "name": "Hotel Second", "score": 0.0, "photos": [], "amenities": [], "currency": "EUR",
     "ctas": ["watch_in_detail", "show_numbers"]},
]
HOTEL_BOOKING = {"booking_reference": "102-4567890", "hotel_name": "Hotel Example Paris", "status": "CONFIRMED",
                 "check_in": "2026-10-10", "check_out": "2026-10-14", "total_amount": "2049.60",
                 "total_currency": "EUR", "destination": "PAR", "ctas": ["new_search"]}
ACTIVITY_CARDS = [
    {"activity_code": "E-E10-PARFOOD", "name": "Paris food tour", "currency": "EUR",
     "ctas": ["view_details", "add_to_itinerary"], "type": "SIMPLE", "country": "France", "amount_from": 89.0,
     "modalities_count": 2, "modalities": [{"name": "Morning", "duration": {"value": 3, "metric": "HOURS"}},
                                           {"name": "Evening", "duration": None}],
     "description": "Taste your way through Le Marais."},
    {"activity_code": "E-E10-LOUVRE", "name": "Louvre skip-the-line", "currency": "EUR",
     "ctas": ["view_details", "add_to_itinerary"]},
]
TRANSFER_CARDS = [
    {"transfer_id": "tr_1", "currency": "EUR", "ctas": ["view_details", "add_to_itinerary"], "transfer_type": "PRIVATE",
     "vehicle_name": "Car", "category_name": "Standard", "total_amount": 79.5, "direction": "ARRIVAL",
     "detail": "{\"pickup\": \"CDG\"}"},
    {"transfer_id": "tr_2", "currency": "EUR", "ctas": ["view_details", "add_to_itinerary"]},
]

PARIS = {"label": "Paris", "city_code": "PAR", "country_code": "FR", "kind": "city"}
LISBON = {"label": "Lisbon", "city_code": "LIS", "country_code": "PT"}
PARIS_SLOTS = {"region": PARIS, "region_label": "Paris", "region_city_code": "PAR", "region_country_code": "FR",
               "region_kind": "city", "check_in_date": "2026-10-10", "check_out_date": "2026-10-14",
               "dates_explicit_range": True, "nights": 4, "party": {"rooms": 1, "adults": 2, "children": []},
               "max_flight_hours": 4, "places_seen": [], "total_results_seen": 0, "trip_confirmed": False,
               "region_center": {"lat": "48.8738", "lng": "2.2950"}}

#: (provider, text, pre-turn slots, the live extraction (json_str, planner_io 2.4), tool_result key, cards,
#:  expected widget type, card id field)
PROVIDERS: list[dict[str, Any]] = [
    {"id": "places", "text": "trip to Lisbon", "slots": None, "tool": PLACES, "key": "places", "cards": PLACE_CARDS,
     "widget": "place_list", "id_field": "place_id",
     "extraction": {"slot_updates": {"region": {**LISBON, "kind": "city"}, "places_seen": [], "total_results_seen": 0,
                                     "trip_confirmed": False},
                    "tool_requests": [{"tool": PLACES, "arguments": {"query": "Lisbon", "max_results": 5}}],
                    "render_intent": {"kind": "show_places"}}},
    {"id": "flights", "text": "flights from SFO to Lisbon on 2026-10-10", "slots": None, "tool": OFFERS,
     "key": "offers", "cards": OFFER_CARDS, "widget": "flight_list", "id_field": "offer_id",
     "extra": {"groups": GROUPS, "over_budget_excluded": 0},
     "extraction": {"slot_updates": {"region": LISBON, "check_in_date": "2026-10-10", "check_out_date": "2026-10-14",
                                     "dates_explicit_range": False, "nights": 4, "flight_destination": "LIS",
                                     "flight_origin": "SFO", "places_seen": [], "total_results_seen": 0,
                                     "trip_confirmed": False, "max_flight_hours": 4},
                    "tool_requests": [{"tool": OFFERS, "arguments": {
                        "origin": "SFO", "destination": "LIS", "departure_date": "2026-10-10", "adults": 1,
                        "passengers": [{"type": "adult"}], "cabin_class": "economy"}}],
                    "render_intent": {"kind": "show_flights"}}},
    {"id": "order", "text": "book it", "slots": {**PARIS_SLOTS, "picked_flight_offer_id": "off_0000Aexample"},
     "tool": ORDER, "key": "order", "cards": ORDER_CARD, "widget": "order_confirmation", "id_field": None,
     "extraction": {"slot_updates": {},
                    "tool_requests": [{"tool": ORDER, "arguments": {
                        "offer_id": "off_0000Aexample", "duffel_env": "test",
                        "passengers": [{"given_name": "Alex", "family_name": "Traveler", "born_on": "1990-01-01",
                                        "gender": "m", "email": "test@example.com", "phone_number": "+15555550100"}]}}],
                    "render_intent": {"kind": "order_confirmation"}}},
    {"id": "hotels", "text": "hotels in Paris 2026-10-10 to 2026-10-14 for 2 adults", "slots": {}, "tool": HOTELS,
     "key": "hotels", "cards": HOTEL_CARDS, "widget": "hotel_list", "id_field": "hotel_id",
     "extraction": {"slot_updates": {"region": PARIS, "check_in_date": "2026-10-10", "check_out_date": "2026-10-14",
                                     "dates_explicit_range": True, "nights": 4,
                                     "party": {"rooms": 1, "adults": 2, "children": []}, "max_flight_hours": 4},
                    "tool_requests": [{"tool": HOTELS, "arguments": {
                        "city": "Paris", "city_code": "PAR", "check_in": "2026-10-10", "check_out": "2026-10-14",
                        "adults": 2, "rooms": 1, "children": 0, "radius": 20}}],
                    "render_intent": {"kind": "show_hotels"}}},
    {"id": "hotel_booking", "text": "book this room", "slots": {**PARIS_SLOTS, "picked_hotel_id": "123456",
                                                                "picked_hotel_rate_key": HOTEL_CARDS[0]["rate_key"]},
     "tool": BOOK, "key": "hotel_booking", "cards": HOTEL_BOOKING, "widget": "hotel_confirmation", "id_field": None,
     "extraction": {"slot_updates": {},
                    "tool_requests": [{"tool": BOOK, "arguments": {
                        "rate_key": HOTEL_CARDS[0]["rate_key"], "holder_name": "Alex", "holder_surname": "Traveler",
                        "rooms": 1, "adults": 2, "children": 0}}],
                    "render_intent": {"kind": "hotel_confirmation"}}},
    {"id": "activities", "text": "food tour in Paris", "slots": PARIS_SLOTS, "tool": ACTS, "key": "activities",
     "cards": ACTIVITY_CARDS, "widget": "activity_list", "id_field": "activity_code",
     "extraction": {"slot_updates": {"region": PARIS},
                    "tool_requests": [{"tool": ACTS, "arguments": {
                        "destination": "PAR", "from": "2026-10-10", "to": "2026-10-14", "adults": 2,
                        "language": "en"}}],
                    "render_intent": {"kind": "show_activities"}}},
    {"id": "transfers", "text": "airport transfer from CDG to Paris", "slots": PARIS_SLOTS, "tool": XFER,
     "key": "transfers", "cards": TRANSFER_CARDS, "widget": "transfer_list", "id_field": "transfer_id",
     "extraction": {"slot_updates": {"region": PARIS},
                    "tool_requests": [{"tool": XFER, "arguments": {
                        "from_type": "IATA", "from_code": "CDG", "to_type": "GPS", "to_code": "48.8566,2.3522",
                        "outbound": "2026-10-10T10:00:00", "adults": 2, "children": 0, "language": "en"}}],
                    "render_intent": {"kind": "show_transfers"}}},
]
IDS = [p["id"] for p in PROVIDERS]


def planner_turn(p: dict[str, Any], result: dict[str, Any] | None = None) -> dict[str, Any]:
    """``T = {event_type, event_payload, slot_state, tool_summary}`` as shadow_slm_compare builds it."""
    return {"event_type": "user_message", "event_payload": {"text": p["text"]}, "slot_state": firestore(p["slots"]),
            "tool_summary": result if result is not None else tool_result(p["tool"], p["key"], p["cards"],
                                                                           **p.get("extra", {}))}


def failure_result(p: dict[str, Any]) -> dict[str, Any]:
    """planner_io 1.10: ok false, isError true, the provider's summary, an empty list key."""
    empty: Any = {} if p["key"] in ("order", "hotel_booking") else []
    extra = {"groups": {"cheapest": None, "fastest": None, "best_value": None, "radius_hint_hours": None,
                        "considered": 0}} if p["key"] == "offers" else {}
    return tool_result(p["tool"], p["key"], empty, ok=False,
                       summary="Hotels are temporarily unavailable, please try again in a moment.", **extra)


# --- checking what comes back --------------------------------------------------------------------------------


@cache
def _validator(name: str) -> jsonschema.protocols.Validator:
    schema = json.loads((SCHEMAS / f"{name}.schema.json").read_text(encoding="utf-8"))
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def assert_contract_valid(render: dict[str, Any]) -> None:
    """Against the exported JSON Schemas (not the pydantic models the server validates with)."""
    _validator("render_output").validate(render)
    for envelope in render["widgets"]:
        _validator("_envelope").validate(envelope)
        _validator(envelope["widget_type"]).validate(envelope["payload"])


def assert_items_are_the_cards(p: dict[str, Any], render: dict[str, Any]) -> None:
    (widget,) = render["widgets"]
    assert widget["widget_type"] == p["widget"]
    payload = widget["payload"]
    if p["id_field"] is None:  # a receipt: its fields are the sent card's
        for key, value in p["cards"].items():
            assert payload[key] == value, key
        assert payload.get("order_id") != "ord_x" and payload.get("booking_reference") != "BR0000"
        return
    assert [i[p["id_field"]] for i in payload["items"]] == [c[p["id_field"]] for c in p["cards"]]
    assert payload["items"] == p["cards"]
    assert payload["total_count"] == len(p["cards"]) if "total_count" in payload else True


def render_ok(base: str, body: dict[str, Any], path: str = "/render") -> dict[str, Any]:
    r = httpx.post(base + path, json=body, timeout=10)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["schema_valid"] is True
    assert_contract_valid(out["render"])
    return out


# --- every provider's tool_result renders its own cards ------------------------------------------------------


@pytest.mark.parametrize("p", PROVIDERS, ids=IDS)
def test_live_extraction_and_tool_result_render_the_sent_cards(default_server: str, p: dict[str, Any]) -> None:
    out = render_ok(default_server, {"turn": planner_turn(p), "extraction": p["extraction"]})
    assert_items_are_the_cards(p, out["render"])
    assert out["tool_summary_source"] == "turn" and out["fixtures_used"] is False
    assert out["llm_contract"]["fallback_used"] is False
    # the live shapes were read, and what was dropped or mapped is said
    assert {"path": f"turn.tool_summary.{p['key']}", "action": "mapped", "rule": "tool_result.cards_to_data"} \
        in out["input_notes"]


@pytest.mark.parametrize("p", PROVIDERS, ids=IDS)
def test_the_tool_result_in_the_body_works_the_same(default_server: str, p: dict[str, Any]) -> None:
    turn = {k: v for k, v in planner_turn(p).items() if k != "tool_summary"}
    result = tool_result(p["tool"], p["key"], p["cards"], **p.get("extra", {}))
    out = render_ok(default_server, {"turn": turn, "extraction": p["extraction"], "tool_summary": result})
    assert_items_are_the_cards(p, out["render"])
    assert out["tool_summary_source"] == "body"


def test_flight_list_takes_the_planners_best_value_and_currency(default_server: str) -> None:
    p = PROVIDERS[IDS.index("flights")]
    payload = render_ok(default_server, {"turn": planner_turn(p), "extraction": p["extraction"]}
                        )["render"]["widgets"][0]["payload"]
    assert payload["emphasis_offer_id"] == GROUPS["best_value"]["offer_id"]
    assert payload["currency"] == "EUR"


@pytest.mark.parametrize("p", PROVIDERS, ids=IDS)
def test_provider_failure_renders_an_error_card(default_server: str, p: dict[str, Any]) -> None:
    out = render_ok(default_server, {"turn": planner_turn(p, failure_result(p)), "extraction": p["extraction"]})
    assert out["widget_types"] == ["error_card"]
    assert out["render"]["widgets"][0]["payload"]["retry_action_id"] == "retry:" + p["tool"]
    assert out["fixtures_used"] is False


def test_ok_true_with_is_error_true_is_a_failure(default_server: str) -> None:
    p = PROVIDERS[IDS.index("hotels")]
    result = tool_result(HOTELS, "hotels", HOTEL_CARDS)
    result["isError"] = True
    out = render_ok(default_server, {"turn": planner_turn(p, result), "extraction": p["extraction"]})
    assert out["widget_types"] == ["error_card"]


@pytest.mark.parametrize("p", [p for p in PROVIDERS if isinstance(p["cards"], list)],
                         ids=[p["id"] for p in PROVIDERS if isinstance(p["cards"], list)])
def test_an_empty_card_list_is_an_empty_result_not_fixtures(default_server: str, p: dict[str, Any]) -> None:
    out = render_ok(default_server, {"turn": planner_turn(p, tool_result(p["tool"], p["key"], [])),
                                     "extraction": p["extraction"]})
    (widget,) = out["render"]["widgets"]
    assert widget["widget_type"] == p["widget"] and widget["payload"]["items"] == []
    assert out["fixtures_used"] is False


def test_cards_outside_the_contract_are_mapped_and_reported(default_server: str) -> None:
    p = PROVIDERS[IDS.index("hotels")]
    odd = copy.deepcopy(HOTEL_CARDS)
    odd[0]["score_count"] = None  # the planner may send nulls the contract does not allow
    odd[0]["location"] = {"lat": "48.8738", "lng": "2.295", "city": "Paris"}  # coordinates as strings
    odd[1]["giata_code"] = "X1"
    out = render_ok(default_server, {"turn": planner_turn(p, tool_result(HOTELS, "hotels", odd)),
                                     "extraction": p["extraction"]})
    items = out["render"]["widgets"][0]["payload"]["items"]
    assert [i["hotel_id"] for i in items] == ["123456", "654321"]
    assert items[0]["location"] == {"lat": 48.8738, "lng": 2.295, "city": "Paris"} and "score_count" not in items[0]
    rules = {(n["path"], n["rule"]) for n in out["input_notes"]}
    assert ("turn.tool_summary.data.hotels.0.score_count", "card.field_invalid") in rules
    assert ("turn.tool_summary.data.hotels.0.location", "card.field_coerced") in rules
    assert ("turn.tool_summary.data.hotels.1.giata_code", "card.field_not_in_contract") in rules


def test_no_tool_turn(default_server: str) -> None:
    """planner_io 1.2: ``{call_id, tool: "", ok, isError, response_summary: " response", ...}``, no list key."""
    turn = {"event_type": "user_message", "event_payload": {"text": "show me the summary"},
            "slot_state": firestore(PARIS_SLOTS), "tool_summary": tool_result("", None, None, summary=" response")}
    out = render_ok(default_server, {"turn": turn, "extraction": {"slot_updates": {}, "tool_requests": [],
                                                                  "render_intent": {"kind": "summary"}}})
    assert out["widget_types"] == ["itinerary_summary", "calendar_view"]
    assert out["tool_summary_source"] == "turn" and out["fixtures_used"] is False


# --- the shadow step: POST /extract, then /render with the extract ------------------------------------------


@pytest.mark.parametrize("p", [p for p in PROVIDERS if p["id"] in ("places", "hotels", "activities", "transfers")],
                         ids=["places", "hotels", "activities", "transfers"])
def test_shadow_step_calls(default_server: str, p: dict[str, Any]) -> None:
    turn = planner_turn(p)
    with httpx.Client(base_url=default_server, timeout=10) as client:
        ex = client.post("/extract", json={"turn": turn})
        assert ex.status_code == 200, ex.text
        body = ex.json()
        assert {"extract", "latency_ms", "schema_valid"} <= set(body) and body["schema_valid"] is True
        rd = client.post("/render", json={"turn": turn, "extraction": body["extract"] or {}})
    assert rd.status_code == 200, rd.text
    out = rd.json()
    assert out["schema_valid"] is True
    assert_contract_valid(out["render"])
    assert out["widget_types"] == [p["widget"]]
    assert_items_are_the_cards(p, out["render"])


def test_trailing_slash_answers_like_the_path(default_server: str) -> None:
    p = PROVIDERS[0]
    for path in ("/extract/", "/extract_turn/"):
        r = httpx.post(default_server + path, json={"turn": planner_turn(p)}, timeout=10)
        assert r.status_code == 200, (path, r.status_code)
        assert r.json()["extract"] == httpx.post(default_server + path.rstrip("/"),
                                                 json={"turn": planner_turn(p)}).json()["extract"]
    for path in ("/render/", "/render_widget_chat/"):
        out = render_ok(default_server, {"turn": planner_turn(p), "extraction": p["extraction"]}, path)
        assert_items_are_the_cards(p, out["render"])


# --- live extraction shapes render 200 and contract-valid ---------------------------------------------------


def _prod_extractions() -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    out = []
    with (CORPORA / "replay_corpus.labeled.jsonl").open(encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            if "prod_extract" in record:
                out.append((record["id"], record["input"], record["prod_extract"]))
    return out


def test_the_replay_corpus_production_extractions_all_render(default_server: str) -> None:
    prod = _prod_extractions()
    assert len(prod) == 8
    by_tool = {p["tool"]: p for p in PROVIDERS}
    for record_id, turn, extraction in prod:
        # as the planner's render sees it: its slot state envelope and the tool_result of the tool it ran
        p = by_tool[extraction["tool_requests"][0]["tool"]]
        planner = {**turn, "slot_state": firestore(turn.get("slot_state") or {}),
                   "tool_summary": tool_result(p["tool"], p["key"], p["cards"])}
        out = render_ok(default_server, {"turn": planner, "extraction": extraction})
        assert out["widget_types"] == [p["widget"]], record_id
        assert_items_are_the_cards(p, out["render"])
        # and without any tool summary (fixtures, said so)
        out = render_ok(default_server, {"turn": turn, "extraction": extraction})
        assert out["fixtures_used"] is True and out["tool_summary_source"] == "fixture", record_id


LIVE_SHAPES: list[tuple[str, dict[str, Any], list[str]]] = [
    ("slot aliases and unknown keys", {"slot_updates": {"departure_date": "2026-10-10", "return_date": "2026-10-14",
                                                        "origin": "SFO", "budget": {"cap": 300, "currency": "USD"},
                                                        "region_center": {"lat": 38.7, "lng": -9.1},
                                                        "flight_filters": {"max_connections": 0}},
                                       "tool_requests": [], "render_intent": {"kind": "summary"}},
     ["itinerary_summary", "calendar_view"]),
    ("stale-clear nulls", {"slot_updates": {"flight_search_results": None, "flight_offers": None,
                                            "flight_groups": None, "picked_flight_offer_id": None, "order_id": None,
                                            "check_in_date": None},
                           "tool_requests": [], "render_intent": {"kind": "summarize"}}, ["itinerary_summary"]),
    ("bare string intent", {"slot_updates": {}, "tool_requests": [], "render_intent": "calendar_live"},
     ["calendar_view"]),
    ("clarify without reason", {"slot_updates": {}, "tool_requests": [], "render_intent": {"kind": "clarify"}},
     ["itinerary_summary"]),
    ("error without reason", {"slot_updates": {}, "tool_requests": [], "render_intent": "error"},
     ["itinerary_summary"]),
    ("hotel search blocked", {"slot_updates": {}, "tool_requests": [],
                              "render_intent": {"kind": "collect_missing", "missing": ["dates"],
                                                "blocking": "hotel_search"}}, ["date_range_picker"]),
    ("flight search blocked", {"slot_updates": {}, "tool_requests": [],
                               "render_intent": {"kind": "collect_missing", "missing": ["origin", "dates"],
                                                 "blocking": "flight_search"}}, ["date_range_picker"]),
    ("transfer search blocked", {"slot_updates": {}, "tool_requests": [],
                                 "render_intent": {"kind": "collect_missing", "missing": ["pickup_and_dropoff"],
                                                   "blocking": "transfer_search"}}, ["place_autocomplete_input"]),
    ("missing on another kind", {"slot_updates": {}, "tool_requests": [],
                                 "render_intent": {"kind": "trip_map", "missing": ["dates"]}}, ["itinerary_summary"]),
    ("legacy Amadeus hotel tool", {"slot_updates": {"region": {"label": "Paris", "city_code": "PAR"}},
                                   "tool_requests": [{"tool": "mcp/amadeus.search_hotels",
                                                      "arguments": {"cityCode": "PAR", "checkInDate": "2026-10-10",
                                                                    "checkOutDate": "2026-10-14", "adults": 2}}],
                                   "render_intent": {"kind": "show_hotels"}}, ["hotel_list"]),
    ("differently-typed tool arguments", {"slot_updates": {"party": {"adults": "2", "children": [3]}},
                                          "tool_requests": [{"tool": OFFERS, "arguments": {
                                              "origin": "JFK", "destination": "cdg", "adults": "2",
                                              "departure_date": "2026-10-10T00:00:00", "return_date": "2026-10-14"}}],
                                          "render_intent": {"kind": "show_flights"}}, ["flight_list"]),
]


@pytest.mark.parametrize(("extraction", "widgets"), [c[1:] for c in LIVE_SHAPES], ids=[c[0] for c in LIVE_SHAPES])
def test_live_extraction_shapes_render(default_server: str, extraction: dict[str, Any], widgets: list[str]) -> None:
    turn = {"event_type": "user_message", "event_payload": {"text": "go on"}, "slot_state": firestore(PARIS_SLOTS),
            "tool_summary": tool_result("", None, None, summary=" response")}
    out = render_ok(default_server, {"turn": turn, "extraction": extraction})
    assert out["widget_types"] == widgets
    assert out["input_notes"], "a live shape was read without saying what was mapped"


def test_null_clear_reaches_the_rendered_slot(default_server: str) -> None:
    turn = {"event_type": "user_message", "event_payload": {"text": "recap"}, "slot_state": firestore(PARIS_SLOTS)}
    base = {"tool_requests": [], "render_intent": {"kind": "summarize"}}
    kept = render_ok(default_server, {"turn": turn, "extraction": {**base, "slot_updates": {}}})
    cleared = render_ok(default_server, {"turn": turn, "extraction": {**base,
                                                                      "slot_updates": {"check_in_date": None}}})
    assert kept["render"]["widgets"][0]["payload"]["dates"]["from"] == "2026-10-10"
    assert cleared["render"]["widgets"][0]["payload"]["dates"]["from"] != "2026-10-10"


def test_input_notes_are_counted_in_metrics(default_server: str) -> None:
    p = PROVIDERS[IDS.index("transfers")]
    render_ok(default_server, {"turn": planner_turn(p), "extraction": p["extraction"]})
    text = httpx.get(default_server + "/metrics").text
    line = next(ln for ln in text.splitlines() if ln.startswith("travel_slm_input_notes_total{")
                and 'rule="arg.outside_contract"' in ln and 'pass="render"' in ln)
    assert float(line.rsplit(" ", 1)[1]) >= 1


# --- fixtures: said, and refusable ---------------------------------------------------------------------------


def test_render_without_a_tool_summary_says_it_used_fixtures(default_server: str) -> None:
    p = PROVIDERS[IDS.index("hotels")]
    turn = {k: v for k, v in planner_turn(p).items() if k != "tool_summary"}
    r = httpx.post(default_server + "/render", json={"turn": turn, "extraction": p["extraction"]})
    assert r.status_code == 200
    assert r.json()["fixtures_used"] is True and r.headers["X-Tool-Summary-Source"] == "fixture"
    no_tool = {"slot_updates": {}, "tool_requests": [], "render_intent": {"kind": "summary"}}
    r = httpx.post(default_server + "/render", json={"turn": turn, "extraction": no_tool})
    assert r.json()["fixtures_used"] is False and r.headers["X-Tool-Summary-Source"] == "none"


def test_render_fixtures_refuse(live_server: Any) -> None:
    base = live_server({"render": {"fixtures": "refuse"}})
    p = PROVIDERS[IDS.index("hotels")]
    turn = {k: v for k, v in planner_turn(p).items() if k != "tool_summary"}
    r = httpx.post(base + "/render", json={"turn": turn, "extraction": p["extraction"]})
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["body", "tool_summary"]
    r = httpx.post(base + "/render", json={"turn": turn})  # extracts first, then needs fixtures: refused too
    assert r.status_code == 422
    out = render_ok(base, {"turn": planner_turn(p), "extraction": p["extraction"]})  # real cards: served
    assert_items_are_the_cards(p, out["render"])
    r = httpx.post(base + "/v1/chat/completions", json={
        "model": "travel-render", "messages": [{"role": "user", "content": json.dumps({"turn": turn,
                                                                                     "extraction": p["extraction"]})}]})
    # a client error on the OpenAI API is a 400, as every other there
    assert r.status_code == 400 and r.json()["error"]["param"] == "tool_summary"
    assert r.json()["error"]["code"] == "missing_required_parameter"


# --- the same requests through the other entry points ---------------------------------------------------------


def test_openai_api_renders_the_planner_cards(default_server: str) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=default_server + "/v1", api_key="unused")
    for p in PROVIDERS:
        content = json.dumps({"turn": planner_turn(p), "extraction": p["extraction"]})
        completion = client.chat.completions.create(model="travel-render", messages=[{"role": "user",
                                                                                      "content": content}])
        render = json.loads(completion.choices[0].message.content or "")
        assert_contract_valid(render)
        assert_items_are_the_cards(p, render)


def _cli(args: list[str], stdin: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    child = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run([sys.executable, "-m", "server.cli", *args], input=stdin, capture_output=True, text=True,
                          cwd=REPO, env=child, timeout=120, check=False)


def test_predict_renders_the_planner_cards() -> None:
    p = PROVIDERS[IDS.index("transfers")]
    done = _cli(["predict", "--pass", "render"], json.dumps({"turn": planner_turn(p), "extraction": p["extraction"]}))
    assert done.returncode == 0, done.stderr
    render = json.loads(done.stdout)
    assert_contract_valid(render)
    assert_items_are_the_cards(p, render)
    assert "to_type (arg.outside_contract)" in done.stderr  # what was mapped is said on stderr


def test_eval_scores_renders_of_planner_tool_results(tmp_path: Path) -> None:
    lines = []
    for p in PROVIDERS:
        if p["id"] == "order":
            continue
        turn = {"event_type": "user_message", "event_payload": {"text": p["text"]}, "slot_state": p["slots"] or {}}
        from engines.deterministic.extract import extract

        ex = extract(turn)
        if ex["render_intent"]["kind"] != p["extraction"]["render_intent"]["kind"]:
            continue
        result = tool_result(p["tool"], p["key"], p["cards"], **p.get("extra", {}))
        expected_render = json.loads(_cli(["predict", "--pass", "render"],
                                          json.dumps({"turn": turn, "extraction": ex, "tool_summary": result})).stdout)
        assert_items_are_the_cards(p, expected_render)
        lines.append({"id": p["id"], "input": turn,
                      "expected": {"extract": ex, "render": expected_render, "tool_summary": result}})
    assert len(lines) >= 4
    corpus = tmp_path / "planner.labeled.jsonl"
    corpus.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    done = _cli(["eval", "--engine", "deterministic", "--corpus", str(corpus), "--json"], "")
    assert done.returncode == 0, done.stderr
    metrics = json.loads(done.stdout)["metrics"]
    assert metrics["widget_type_match"] == 1.0 and metrics["render_exact"] == 1.0
