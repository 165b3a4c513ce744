"""Issue 11, finding 6: property-based tests (Hypothesis) that bad input is never a 5xx.

Every example starts from a realistic request (reference turns, widget submits and CTA clicks, the live
planner's Firestore envelope, its ``tool_result`` for every provider and its live ``extract_turn`` shapes of
``docs/planner-input.md``) and puts an arbitrary or wrong-typed JSON value at one to three of its nested positions:
``event_payload`` and the widget values in it, ``slot_state`` and its nested objects (region, dates, party,
picked ids ...), ``tool_summary`` (``data.offers``, every card and card field), the render request's
``extraction`` and ``tool_summary``. The properties:

* over HTTP, on ``/extract``, ``/render`` and ``/v1/chat/completions`` (the content as the JSON string) of
  one real server: never a 5xx; a 4xx names the field path (``detail[0].loc`` on the planner routes,
  ``error.param`` on the OpenAI API); a 200 is contract-valid (the repository's validators);
* called directly, the deterministic engine answers every value that passes the boundary models with a
  contract-valid document, and never raises on any JSON.

Stable in CI: ``derandomize=True``, no example database, a bounded number of examples. For a deeper local
search set ``TRAVEL_SLM_PROPERTY_SCALE`` (a multiplier of the example counts) and
``TRAVEL_SLM_PROPERTY_SEED`` (any integer: random instead of derandomized).
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, example, given, seed, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from contracts.planner import (
    ExtractionShapeError,
    normalise_extraction,
    normalise_render_slot_state,
    normalise_tool_summary,
)
from contracts.turn import RenderRequest, Turn
from contracts.validation import extract_problem, render_problem
from engines.deterministic import extract as oracle_extract
from engines.deterministic import fixture as oracle_fixture
from engines.deterministic import render as oracle_render
from engines.deterministic.render import merged_slot
from tests.conftest import load_reference

SCALE = float(os.environ.get("TRAVEL_SLM_PROPERTY_SCALE", "1"))
SEED = os.environ.get("TRAVEL_SLM_PROPERTY_SEED")


def examples(n: int) -> Callable[[Any], Any]:
    """Bounded, reproducible Hypothesis settings (``n`` examples, scaled by TRAVEL_SLM_PROPERTY_SCALE)."""

    def wrap(test: Any) -> Any:
        test = settings(max_examples=max(1, int(n * SCALE)), deadline=None, derandomize=SEED is None,
                        database=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                              HealthCheck.function_scoped_fixture])(test)
        return seed(int(SEED))(test) if SEED is not None else test

    return wrap


# --- realistic requests to start from ----------------------------------------------------------------------

PLACES = "mcp/google-places.search_text"
OFFERS = "mcp/duffel.search_offers"
ORDER = "mcp/duffel.create_order"
HOTELS = "mcp/hotelbeds.search_hotels"
BOOK = "mcp/hotelbeds.book_hotel"
ACTS = "mcp/hotelbeds-activities.search_activities"
XFER = "mcp/hotelbeds-transfers.search_transfers"

PARIS = {"label": "Paris", "city_code": "PAR", "country_code": "FR", "kind": "city"}
#: every slot the oracle reads, in the contract's types (docs/contract.md §7) and the planner's extras
SLOTS: dict[str, Any] = {
    "region": PARIS, "region_label": "Paris", "check_in_date": "2026-10-10", "check_out_date": "2026-10-14",
    "nights": 4, "party": {"rooms": 1, "adults": 2, "children": [{"age": 7}]}, "places_seen": ["ChIJ_1"],
    "flight_search_results": ["off_1"], "picked_flight_offer_id": "off_1", "hotel_search_results": ["h_1"],
    "picked_hotel_id": "h_1", "picked_hotel_rate_key": "20261010|20261014|W|1|h_1", "order_id": "",
    "trip_confirmed": False, "region_center": {"lat": 48.87, "lng": 2.29}, "budget": {"cap": 300, "currency": "EUR"},
}


def firestore(slots: dict[str, Any]) -> dict[str, Any]:
    path = "chat_threads/th_p/slot_state/current"
    return {"found": True, "path": path, "document": {"name": path, "path": path, "data": slots}}


def offer_card(offer_id: str) -> dict[str, Any]:
    return {"offer_id": offer_id, "price": {"total": "412.60", "currency": "EUR"},
            "itineraries": [{"duration": "PT11H25M", "segments": [
                {"departure": {"iata": "SFO", "at": "2026-10-10T08:15:00"},
                 "arrival": {"iata": "LIS", "at": "2026-10-11T04:40:00"}, "carrier": "ZZ", "flight_number": "1234",
                 "duration": "PT11H25M", "stops": 0}]}],
            "carriers": ["ZZ"], "duration": "PT11H25M", "stops": 0, "validating_airline": "ZZ",
            "ctas": ["view_details", "book_this"]}


PLACE_CARD = {"place_id": "ChIJ_1", "name": "Lisbon", "types": ["locality"], "address": "Lisbon, Portugal",
              "photos": ["https://places.example.com/p/1.jpg"], "ctas": ["add_to_itinerary"], "rating": 4.7,
              "rating_count": 1532}
HOTEL_CARD = {"hotel_id": "h_1", "name": "Hotel Example", "score": 4.3, "photos": ["https://photos.example.com/h.jpg"],
              "amenities": ["wifi"], "currency": "EUR", "ctas": ["watch_in_detail", "book"], "rate_key": "rk_1",
              "score_count": 210, "star_rating": 4.0, "price_per_night": 512.4,
              "location": {"lat": 48.87, "lng": 2.29, "city": "Paris"}, "address": "1 Rue Exemple"}
ORDER_CARD = {"order_id": "ord_1", "booking_reference": "RZPNX8", "total_amount": "412.60", "total_currency": "EUR",
              "passengers": [{"id": "pas_1", "given_name": "Alex", "family_name": "Traveler"}],
              "slices": [{"origin": {"iata_code": "SFO"}}], "documents": [{"unique_identifier": "1", "type": "e"}],
              "ctas": ["view_full", "new_search"]}
BOOKING_CARD = {"booking_reference": "102-4567890", "hotel_name": "Hotel Example", "status": "CONFIRMED",
                "check_in": "2026-10-10", "check_out": "2026-10-14", "total_amount": "2049.60",
                "total_currency": "EUR", "destination": "PAR", "ctas": ["new_search"]}
ACTIVITY_CARD = {"activity_code": "E-1", "name": "Food tour", "currency": "EUR", "type": "SIMPLE", "country": "France",
                 "amount_from": 89.0, "modalities_count": 1, "modalities": [{"name": "Morning", "duration": None}],
                 "description": "Taste it.", "ctas": ["view_details"]}
TRANSFER_CARD = {"transfer_id": "tr_1", "currency": "EUR", "transfer_type": "PRIVATE", "vehicle_name": "Car",
                 "category_name": "Standard", "total_amount": 79.5, "direction": "ARRIVAL", "detail": "{}",
                 "ctas": ["view_details"]}
GROUPS = {"cheapest": {"offer_id": "off_1", "price": "412.60", "currency": "EUR", "duration_minutes": 685, "stops": 0},
          "best_value": {"offer_id": "off_1", "price": "412.60", "currency": "EUR", "duration_minutes": 685,
                         "stops": 0}, "fastest": None, "radius_hint_hours": None, "considered": 1}


def tool_result(tool: str, key: str, cards: Any, **extra: Any) -> dict[str, Any]:
    """The live planner's ``tool_result`` (docs/planner-input.md §2): cards at the top level, no ``data``."""
    return {"call_id": "call_0123456789ab", "tool": tool, "ok": True, "isError": False,
            "response_summary": f"{tool} response", "response_excerpt": "{}", "raw_response": {"status": "ok"},
            key: cards, **extra}


#: our {ok, tool, data} and the planner's tool_result for every provider
TOOL_SUMMARIES: list[dict[str, Any]] = [
    {"ok": True, "tool": OFFERS, "data": {"offers": [offer_card("off_1"), offer_card("off_2")]}},
    {"ok": True, "tool": PLACES, "data": {"places": [PLACE_CARD]}},
    {"ok": True, "tool": HOTELS, "data": {"hotels": [HOTEL_CARD]}},
    {"ok": True, "tool": ORDER, "data": {k: ORDER_CARD[k] for k in ("order_id", "booking_reference", "total_amount",
                                                                      "total_currency")}},
    tool_result(OFFERS, "offers", [offer_card("off_1")], groups=GROUPS, over_budget_excluded=0),
    tool_result(PLACES, "places", [PLACE_CARD]),
    tool_result(HOTELS, "hotels", [HOTEL_CARD]),
    tool_result(ORDER, "order", ORDER_CARD),
    tool_result(BOOK, "hotel_booking", BOOKING_CARD),
    tool_result(ACTS, "activities", [ACTIVITY_CARD]),
    tool_result(XFER, "transfers", [TRANSFER_CARD]),
    {**tool_result(HOTELS, "hotels", []), "ok": False, "isError": True},
]

#: live extract_turn outputs (docs/planner-input.md §3): aliases, extra keys, null clears, bare intents ...
EXTRACTIONS: list[dict[str, Any]] = [
    {"slot_updates": {"region": PARIS, "check_in_date": "2026-10-10", "party": {"rooms": 1, "adults": 2,
                                                                                 "children": []}},
     "tool_requests": [{"tool": HOTELS, "arguments": {"city": "Paris", "city_code": "PAR", "check_in": "2026-10-10",
                                                      "check_out": "2026-10-14", "adults": 2, "rooms": 1,
                                                      "children": 0, "radius": 20}}],
     "render_intent": {"kind": "show_hotels"}},
    {"slot_updates": {"departure_date": "2026-10-10T00:00:00", "travelers": {"adults": 2}, "picked_flight_offer_id": None,
                      "flight_destination": "LIS"},
     "tool_requests": [{"tool": OFFERS, "arguments": {"origin": "SFO", "dest": "LIS", "date": "2026-10-10",
                                                      "adults": "2", "passengers": [{"type": "adult"}]}}],
     "render_intent": "show_flights", "first_tool": OFFERS},
    {"slot_updates": {}, "tool_requests": [{"tool_id": ORDER, "args": {"offerId": "off_1", "duffel_env": "test"}}],
     "render_intent": {"kind": "order_confirmation", "blocking": True}},
    {"slot_updates": {"region": {"label": "Lisbon", "city_code": "LIS"}}, "tool_requests": None,
     "render_intent": {"kind": "collect_missing", "missing": ["party", "dates", "pickup_and_dropoff"]}},
    {"slot_updates": {}, "tool_requests": [], "render_intent": {"kind": "clarify"}},
    {"slot_updates": {}, "tool_requests": [{"tool": "mcp/amadeus.search_hotels", "arguments": {"cityCode": "PAR"}}],
     "render_intent": {"kind": "summary", "reason": "x"}},
    {"slot_updates": {}, "tool_requests": [{"tool": ACTS, "arguments": {"destination": "PAR", "from": "2026-10-10"}}],
     "render_intent": {"kind": "show_activities"}},
    {"slot_updates": {}, "tool_requests": [{"tool": XFER, "arguments": {"fromCode": "CDG", "outbound": "2026-10-10"}}],
     "render_intent": {"kind": "show_transfers"}},
    {"slot_updates": {"picked_hotel_rate_key": "rk_1"}, "tool_requests": [{"tool": BOOK, "arguments": {"rateKey": "rk"}}],
     "render_intent": {"kind": "hotel_confirmation"}},
    {"slot_updates": {}, "tool_requests": [], "render_intent": {"kind": "summary"}},
]

TEXTS = ("hotels in Paris 2026-10-10 to 2026-10-14 for 2 adults", "flights to Miami", "book it", "things to do in Rome",
         "airport transfer from the airport", "food tour in Lisbon", "show my booking", "summary of the trip",
         "show the calendar schedule", "show me the map", "flight details", "select this room", "cheapest, just book",
         "my card is 4111 1111 1111 1111", "trip 2026-02-30 to 2026-13-45 in Paris", "europe for a couple",
         "redo the flights instead", "hotels with breakfast")


def reference_turns() -> list[dict[str, Any]]:
    """A spread of labelled turns (every corpus, every event type)."""
    records = load_reference(limit_per_file=400)
    picked: list[dict[str, Any]] = []
    seen: dict[tuple[str, str], int] = {}
    for record in records:
        turn = record["input"]
        key = (record.get("source_file", ""), str(turn.get("event_type")))
        if seen.get(key, 0) < 4:
            seen[key] = seen.get(key, 0) + 1
            picked.append(turn)
    return picked


def base_turns() -> list[dict[str, Any]]:
    message = {"event_type": "user_message", "event_payload": {"text": TEXTS[0], "message": "m", "label": "l",
                                                                "action_id": "a"}, "slot_state": SLOTS}
    turns = [
        message,
        {"event_type": "user_widget_submit", "event_payload": {"action_id": "date:range", "submitted_value": {
            "from": "2026-10-10", "to": "2026-10-14", "nights": 4}}, "slot_state": {"region": PARIS}},
        {"event_type": "user_widget_submit", "event_payload": {"action_id": "party:set", "value": {
            "rooms": 1, "adults": 2, "children": [{"age": 5}, 9]}}, "slot_state": {"region": PARIS}},
        {"event_type": "user_widget_submit", "event_payload": {"action_id": "place:select", "submitted_value": {
            "id": "LIS", "label": "Lisbon", "kind": "city"}}, "slot_state": {}},
        {"event_type": "user_widget_cta_click", "event_payload": {"action_id": "pick_offer:off_1"}, "slot_state": SLOTS},
        {"event_type": "user_widget_cta_click", "event_payload": {"action_id": "book_hotel:h_1", "text": "book"},
         "slot_state": SLOTS},
        {"event_type": "user_message", "event_payload": {"text": "book it"}, "slot_state": firestore(SLOTS),
         "tool_summary": TOOL_SUMMARIES[7], "tool_error": False, "thread_context": [{"role": "user"}],
         "duffel_env": "test"},
    ]
    for i, summary in enumerate(TOOL_SUMMARIES):
        turns.append({"event_type": "user_message", "event_payload": {"text": TEXTS[i % len(TEXTS)]},
                      "slot_state": firestore(SLOTS) if i % 2 else SLOTS, "tool_summary": summary})
    return turns + reference_turns()


BASE_TURNS = base_turns()
BASE_RENDERS: list[dict[str, Any]] = [
    {"turn": BASE_TURNS[i % len(BASE_TURNS)],
     **({"extraction": EXTRACTIONS[i % len(EXTRACTIONS)]} if i % 3 else {}),
     **({"tool_summary": TOOL_SUMMARIES[i % len(TOOL_SUMMARIES)]} if i % 4 else {})}
    for i in range(max(len(BASE_TURNS), 3 * len(EXTRACTIONS)))
]


# --- the values put at nested positions ------------------------------------------------------------------------

KEYS = st.sampled_from(["label", "city_code", "adults", "children", "age", "from", "to", "offers", "data", "ok",
                        "tool", "kind", "price", "total", "items", "text", "0", ""]) | st.text(max_size=6)
SCALARS = (st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.integers(-3, 40)
           | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12)
           | st.sampled_from(["", " ", "2026-10-10", "2026-02-30", "2026-10-10T08:00:00Z", "PAR", "paris", "4.5",
                              "-1", "1e400", "pick_offer:", "book_offer:x", "hotel:", "map", *TEXTS]))
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=3),
                    max_leaves=8)


def positions(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every nested position of ``doc`` (dict keys and list indexes), outermost first."""
    out: list[tuple[Any, ...]] = []
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else ()
    for key, value in items:
        out.append((*prefix, key))
        out.extend(positions(value, (*prefix, key)))
    return out


def put(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return doc


@st.composite
def mutated(draw: st.DrawFn, bases: list[dict[str, Any]], depth: int) -> dict[str, Any]:
    """A base request with one to three positions set to arbitrary JSON: nine times in ten a nested one
    (``depth`` keys deep or more, inside event_payload, slot_state, tool_summary ...), else any."""
    doc = copy.deepcopy(draw(st.sampled_from(bases)))
    for _ in range(draw(st.integers(1, 3))):
        spots = positions(doc)
        nested = [p for p in spots if len(p) >= depth]
        if nested and draw(st.integers(0, 9)):
            spots = nested
        if not spots:
            break
        doc = put(doc, draw(st.sampled_from(spots)), draw(JSON))
    return doc


TURNS = mutated(BASE_TURNS, depth=2)
RENDERS = mutated(BASE_RENDERS, depth=3)


# --- checks ----------------------------------------------------------------------------------------------------


def _named(loc: Any, root: str) -> None:
    assert isinstance(loc, list) and len(loc) >= 2 and loc[0] == "body" and loc[1] == root, loc


def check_planner(r: httpx.Response, pass_: str) -> None:
    assert r.status_code < 500, r.text[:2000]
    body = r.json()
    if r.status_code == 200:
        assert body["schema_valid"] is True, body
        problem = extract_problem(body["extract"]) if pass_ == "extract" else render_problem(body["render"])
        assert problem is None, problem
        return
    assert r.status_code == 422, r.text[:2000]
    _named(body["detail"][0]["loc"], "turn" if pass_ == "extract" else body["detail"][0]["loc"][1])
    assert all(len(d["loc"]) >= 2 for d in body["detail"]), body


def check_openai(r: httpx.Response, pass_: str) -> None:
    assert r.status_code < 500, r.text[:2000]
    body = r.json()
    if r.status_code == 200:
        document = json.loads(body["choices"][0]["message"]["content"])
        problem = extract_problem(document) if pass_ == "extract" else render_problem(document)
        assert problem is None, problem
        return
    assert r.status_code == 400, r.text[:2000]
    param = body["error"]["param"]
    assert isinstance(param, str) and param.startswith("messages.0.content."), body


# --- over HTTP --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client(default_server: str) -> Any:
    with httpx.Client(base_url=default_server, timeout=30) as c:
        yield c


#: the issue's own examples (issue 11, finding 6), always run
_HOTELS = {"event_type": "user_message", "event_payload": {"text": "hotels in Paris"}}
ISSUE_TURNS: list[dict[str, Any]] = [
    {**_HOTELS, "slot_state": {"region": {"label": 7, "city_code": "PAR", "country_code": "FR"}}},
    {**_HOTELS, "slot_state": {"party": {"adults": 2, "children": 2}}},
    {"event_type": "user_message", "event_payload": {"text": "book it"}, "slot_state": {"picked_flight_offer_id": 123}},
    {**_HOTELS, "tool_summary": {"ok": True, "tool": OFFERS, "data": {"offers": 5}}},
    {"event_type": "user_widget_submit", "event_payload": {"submitted_value": {"id": "LIS", "label": 5}}},
]


def with_examples(name: str, docs: list[Any]) -> Callable[[Any], Any]:
    def wrap(test: Any) -> Any:
        for doc in docs:
            test = example(**{name: doc})(test)
        return test

    return wrap


@examples(200)
@given(turn=TURNS)
@with_examples("turn", ISSUE_TURNS)
def test_extract_never_5xx(client: httpx.Client, turn: dict[str, Any]) -> None:
    check_planner(client.post("/extract", json={"turn": turn}), "extract")


@examples(200)
@given(body=RENDERS)
@with_examples("body", [{"turn": t} for t in ISSUE_TURNS])
def test_render_never_5xx(client: httpx.Client, body: dict[str, Any]) -> None:
    check_planner(client.post("/render", json=body), "render")


@examples(150)
@given(turn=TURNS)
def test_openai_extract_never_5xx(client: httpx.Client, turn: dict[str, Any]) -> None:
    r = client.post("/v1/chat/completions", json={"model": "travel-extract",
                                                  "messages": [{"role": "user", "content": json.dumps(turn)}]})
    check_openai(r, "extract")


@examples(150)
@given(body=RENDERS)
def test_openai_render_never_5xx(client: httpx.Client, body: dict[str, Any]) -> None:
    r = client.post("/v1/chat/completions", json={"model": "travel-render",
                                                  "messages": [{"role": "user", "content": json.dumps(body)}]})
    check_openai(r, "render")


OPENAI_BASE: dict[str, Any] = {
    "model": "travel-extract",
    "messages": [{"role": "system", "content": "ignored"},
                 {"role": "user", "content": [{"type": "text", "text": json.dumps(BASE_TURNS[0])}]}],
    "response_format": {"type": "json_object"}, "stream": False, "stream_options": {"include_usage": True},
    "n": 1, "max_tokens": 64, "max_completion_tokens": 64, "temperature": 0, "top_p": 1, "presence_penalty": 0,
    "frequency_penalty": 0, "seed": 7, "stop": ["\n"], "user": "u-1", "logprobs": False, "top_logprobs": 0,
    "tools": [], "tool_choice": "none", "parallel_tool_calls": False,
}


def _sse_content(text: str) -> str:
    pieces = []
    for line in text.splitlines():
        if line.startswith("data: ") and line != "data: [DONE]":
            for choice in json.loads(line[len("data: "):])["choices"]:
                pieces.append(choice["delta"].get("content") or "")
    return "".join(pieces)


@examples(150)
@given(body=mutated([OPENAI_BASE], depth=1))
def test_openai_request_parameters_never_5xx(client: httpx.Client, body: dict[str, Any]) -> None:
    """Any JSON at any parameter of a chat request (stream, max_tokens, tools, messages ...): a 200 with a
    contract-valid answer (streamed or not), or a 4xx whose error.param names a parameter of the body."""
    r = client.post("/v1/chat/completions", json=body)
    assert r.status_code < 500, r.text[:2000]
    if r.status_code == 200:
        streamed = r.headers["content-type"].startswith("text/event-stream")
        content = _sse_content(r.text) if streamed else r.json()["choices"][0]["message"]["content"]
        assert extract_problem(json.loads(content)) is None
        return
    param = r.json()["error"]["param"]
    assert r.status_code in (400, 404) and isinstance(param, str), r.text
    assert param.split(".")[0] in body, (param, body)


# --- the deterministic engine, called directly -------------------------------------------------------------------


@examples(300)
@given(turn=TURNS)
def test_oracle_extract_is_valid_on_every_validated_turn(turn: dict[str, Any]) -> None:
    try:
        validated = Turn.model_validate(turn).engine_input()
    except ValidationError:
        return
    document = oracle_extract(validated)
    assert extract_problem(document) is None, (extract_problem(document), document)


@examples(300)
@given(body=RENDERS)
def test_oracle_render_is_valid_on_every_validated_request(body: dict[str, Any]) -> None:
    """What the server hands the oracle: a validated turn, the extraction and tool_summary normalised."""
    try:
        request = RenderRequest.model_validate(body)
    except ValidationError:
        return
    turn = request.turn.engine_input()
    if request.extraction is not None:
        try:
            extraction, clears = normalise_extraction(request.extraction)
        except ExtractionShapeError:
            return
    else:
        extraction, clears = oracle_extract(turn), []
    summary = request.tool_summary.model_dump() if request.tool_summary is not None else turn.get("tool_summary")
    summary = normalise_tool_summary(summary) if isinstance(summary, dict) else None
    render_turn = {**turn, "slot_state": normalise_render_slot_state(turn.get("slot_state") or {}, clears)}
    document = oracle_render(render_turn, extraction, summary)
    assert render_problem(document) is None, (render_problem(document), document)
    # the raw slot state too: the oracle reads it defensively, whatever the server did before
    document = oracle_render(turn, extraction, summary)
    assert render_problem(document) is None, (render_problem(document), document)


@examples(300)
@given(turn=JSON | TURNS, extraction=JSON | st.sampled_from(EXTRACTIONS), summary=JSON | st.sampled_from(TOOL_SUMMARIES))
def test_oracle_never_raises_on_any_json(turn: Any, extraction: Any, summary: Any) -> None:
    """Any JSON at all, unvalidated, in every argument: the oracle answers a document, it never raises."""
    turn = turn if isinstance(turn, dict) else {"event_payload": turn}
    extraction = extraction if isinstance(extraction, dict) else {"tool_requests": extraction}
    summary = summary if isinstance(summary, dict) else {"data": summary}
    assert isinstance(oracle_extract(turn), dict)
    slot = merged_slot(turn, extraction)
    assert isinstance(oracle_fixture(extraction, slot), dict)
    assert isinstance(oracle_render(turn, extraction, summary), dict)
    assert isinstance(oracle_render(turn, extraction, None), dict)
