"""Hand-written cases for every rule of docs/oracle.md, including the ones no corpus label pins down."""

from __future__ import annotations

import pytest

from contracts.planner import payload_text
from engines.deterministic import extract, fixture, render, run_turn
from engines.deterministic.extract import city_hint, day_diff

PARIS = {"label": "Paris", "city_code": "PAR", "country_code": "FR", "kind": "city"}
LISBON = {"label": "Lisbon", "city_code": "LIS", "country_code": "PT", "kind": "city"}
PARTY2 = {"rooms": 1, "adults": 2, "children": []}
READY = {"region": PARIS, "check_in_date": "2026-07-10", "check_out_date": "2026-07-14", "party": PARTY2}


def msg(text: str, slot: dict | None = None, **extra) -> dict:
    return {"event_type": "user_message", "event_payload": {"text": text}, "slot_state": slot or {}, **extra}


def cta(aid: str, slot: dict | None = None, text: str | None = None) -> dict:
    payload = {"action_id": aid}
    if text is not None:
        payload["text"] = text
    return {"event_type": "user_widget_cta_click", "event_payload": payload, "slot_state": slot or {}}


def submit(submitted, slot: dict | None = None, key: str = "submitted_value", **payload) -> dict:
    return {"event_type": "user_widget_submit", "event_payload": {key: submitted, **payload},
            "slot_state": slot or {}}


def route(turn: dict) -> tuple[str, str]:
    ex = extract(turn)
    tool = ex["tool_requests"][0]["tool"] if ex["tool_requests"] else ""
    return tool, ex["render_intent"]["kind"]


# --- section 1: payload text ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({"text": "hi", "message": "m", "label": "l"}, "hi"),
        ({"text": "   ", "message": "from message"}, "from message"),
        ({"text": 5, "label": "from label"}, "from label"),
        ({"message": "  padded  "}, "  padded  "),
        ({}, ""),
        ({"text": ["not", "a", "str"]}, ""),
    ],
)
def test_payload_text(payload, expected):
    assert payload_text(payload) == expected


# --- section 2: gazetteer ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "label", "code"),
    [
        ("trip to southeast asia", "Southeast Asia", "SIN"),
        ("asian food", "Asia", "SIN"),
        ("chromed out", "Rome", "ROM"),
        ("parisian cafe", "Paris", "PAR"),
        ("new york then paris cdg", "New York", "NYC"),
        ("land at CDG", "Paris CDG", "PAR"),
        ("Oktoberfest!", "Munich", "MUC"),
        ("NYC in spring", "New York", "NYC"),
        ("europe by train through london", "Europe", "LON"),
    ],
)
def test_city_hint(text, label, code):
    hit = city_hint(text)
    assert hit is not None and (hit["label"], hit["city_code"]) == (label, code)


def test_city_hint_region_shape_and_fresh_dicts():
    a = city_hint("caribbean")
    assert a == {"label": "Caribbean", "city_code": "SJU", "country_code": "PR", "kind": "region", "scope": "region"}
    a["label"] = "mutated"
    assert city_hint("caribbean")["label"] == "Caribbean"
    assert city_hint("nowhere at all") is None


@pytest.mark.parametrize(
    ("a", "b", "days"),
    [("2026-07-10", "2026-07-14", 4), ("2026-07-14", "2026-07-10", 0), ("2026-02-30", "2026-03-01", 0),
     ("2026-7-10", "2026-07-14", 0), (None, "2026-07-14", 0), ("2026-12-30", "2027-01-02", 3)],
)
def test_day_diff(a, b, days):
    assert day_diff(a, b) == days


# --- section 3: slot updates ---------------------------------------------------------------------------------


def test_submit_dates_party_region_all_apply():
    ex = extract(submit({"from": "2026-07-10", "to": "2026-07-13", "adults": 3, "id": "LIS", "label": "Lisbon"}))
    assert ex["slot_updates"] == {
        "check_in_date": "2026-07-10", "check_out_date": "2026-07-13", "nights": 3,
        "party": {"rooms": 1, "adults": 3, "children": []},
        "region": {"label": "Lisbon", "city_code": "LIS", "country_code": "PT", "kind": "city"},
    }


def test_submit_nights_given_wins_and_value_key_and_unknown_place():
    ex = extract(submit({"from": "2026-07-10", "to": "2026-07-13", "nights": 9}, key="value"))
    assert ex["slot_updates"]["nights"] == 9
    ex = extract(submit({"id": "XYZ", "label": "Smallville", "kind": "airport"}))
    assert ex["slot_updates"]["region"] == {"label": "Smallville", "city_code": "XYZ", "country_code": "US",
                                            "kind": "airport"}


def test_submit_ignores_free_text_and_top_level_values():
    ex = extract({"event_type": "user_widget_submit",
                  "event_payload": {"text": "Paris for a couple 2026-07-10 2026-07-14", "adults": 2}})
    assert ex["slot_updates"] == {}


def test_submit_submitted_value_key_wins_even_when_not_a_dict():
    ex = extract(submit("nope", value={"adults": 2}))
    assert ex["slot_updates"] == {}


def test_cta_picks():
    assert extract(cta("pick_offer:off_1"))["slot_updates"] == {"picked_flight_offer_id": "off_1"}
    assert extract(cta("view_offer:a:b"))["slot_updates"] == {"picked_flight_offer_id": "a:b"}
    assert extract(cta("pick_hotel:h9"))["slot_updates"] == {"picked_hotel_id": "h9"}
    assert extract(cta("hotel:h7"))["slot_updates"] == {"picked_hotel_id": "h7"}
    assert extract(cta("book_hotel:h7", text="Paris for a couple"))["slot_updates"] == {}


def test_free_text_region_only_when_new():
    assert extract(msg("Paris please", {"region": PARIS}))["slot_updates"] == {}
    assert extract(msg("Lisbon please", {"region": PARIS}))["slot_updates"]["region"]["city_code"] == "LIS"


def test_free_text_dates_and_party_gates():
    ex = extract(msg("from 2026-07-10 to 2026-07-12 with 3 travelers"))
    assert ex["slot_updates"]["nights"] == 2 and ex["slot_updates"]["party"]["adults"] == 3
    ex = extract(msg("next month, just a couple"))
    assert ex["slot_updates"]["check_in_date"] == "2026-07-10" and ex["slot_updates"]["party"]["adults"] == 2
    ex = extract(msg("2026-08-01 and 2026-08-03 for 4 guests", {"check_in_date": "2026-07-10", "party": PARTY2}))
    assert ex["slot_updates"] == {}
    assert "check_in_date" not in extract(msg("only 2026-08-01"))["slot_updates"]


# --- section 5: refusals -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("turn", "kind", "reason"),
    [
        (msg("my card is 4111 1111 1111 1111"), "error", "pii_redacted"),
        (msg("Passport No. 1234"), "error", "pii_redacted"),
        (msg("dates 2026-07-10 2026-07-14"), "error", "pii_redacted"),
        (msg("paris", tool_error=True), "error", "provider_unavailable"),
        (msg("paris", tool_summary={"isError": True}), "error", "provider_unavailable"),
        (msg("paris", tool_summary={"ok": False}), "error", "provider_unavailable"),
        (msg("a trip to the moon"), "error", "out_of_domain"),
        (msg("can you do my taxes"), "error", "out_of_domain"),
        (msg("just book whatever is cheapest"), "clarify", "confirmation_required"),
        (msg("purchase anything"), "clarify", "confirmation_required"),
        (msg("I want to disconnect but need wifi"), "clarify", "contradictory_constraints"),
        (msg("new york but somewhere familiar"), "clarify", "contradictory_constraints"),
        (msg("cool but not cool"), "clarify", "contradictory_constraints"),
        (msg("do I need a visa?"), "clarify", "blocker_needs_verification"),
        (msg("my passport expires soon"), "clarify", "blocker_needs_verification"),
    ],
)
def test_refusals(turn, kind, reason):
    ex = extract(turn)
    assert ex["tool_requests"] == []
    assert ex["render_intent"] == {"kind": kind, "reason": reason}


def test_refusal_keeps_updates_and_pick_lifts_confirmation():
    ex = extract(msg("dates 2026-07-10 2026-07-14"))
    assert ex["slot_updates"]["check_in_date"] == "2026-07-10"
    assert route(msg("just book the cheapest", {"picked_flight_offer_id": "off_1", **READY})) == (
        "mcp/duffel.create_order", "order_confirmation")
    assert extract(msg("paris", tool_summary={"ok": None}))["render_intent"]["kind"] != "error"


# --- section 6: routing, one case per rule -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("turn", "tool", "kind"),
    [
        (msg("go with the first one", READY), "", "summarize"),  # 1
        (msg("hello", {"trip_confirmed": True}), "", "trip_map"),  # 2
        (msg("airport transfer from CDG"), "mcp/hotelbeds-transfers.search_transfers", "show_transfers"),  # 3
        (msg("a hotel in Paris"), "mcp/hotelbeds.search_hotels", "show_hotels"),  # 4
        (msg("things to do in Lisbon"), "mcp/google-places.search_text", "show_places"),  # 5
        (msg("book a food tour in Rome"), "mcp/hotelbeds-activities.search_activities", "show_activities"),  # 6
        (msg("museum and day trip", {"region": PARIS}), "mcp/hotelbeds-activities.search_activities",
         "show_activities"),  # 5 excluded by activities, 6
        (msg("reserve the flight", {"region": PARIS}), "mcp/hotelbeds-activities.search_activities",
         "show_activities"),  # 6 before 7
        (msg("flights to Paris"), "mcp/duffel.search_offers", "show_flights"),  # 7
        (msg("select this room", {"picked_hotel_id": "h1"}), "", "hotel_confirmation"),  # 8
        (msg("ok", {"picked_hotel_id": "h1", "picked_hotel_rate_key": "rk"}), "", "hotel_confirmation"),  # 8
        (msg("book it", {"picked_hotel_id": "h1"}), "mcp/hotelbeds.book_hotel", "hotel_confirmation"),  # 9
        (msg("book it", {"picked_flight_offer_id": "off_1"}), "mcp/duffel.create_order",
         "order_confirmation"),  # 10
        (cta("book_offer:off_1", {"picked_flight_offer_id": "off_1"}), "mcp/duffel.create_order",
         "order_confirmation"),  # 10 via CTA
        (msg("show my booking", {"order_id": "ord_1"}), "", "order_detail"),  # 11
        (msg("book again", {"picked_flight_offer_id": "off_1", "order_id": "ord_1"}), "", "collect_missing"),
        (msg("flight details", {"picked_flight_offer_id": "off_1"}), "", "flight_detail"),  # 12
        (cta("view_offer:off_2", {}), "", "flight_detail"),  # 12 via CTA
        (msg("show me the calendar"), "", "calendar_live"),  # 13
        (msg("open the map", {"places_seen": ["a"]}), "", "trip_map"),  # 14
        (cta("open_map", {"places_seen": ["a"]}), "", "trip_map"),  # 14 via CTA
        (msg("give me a recap", {"region": PARIS, "places_seen": ["a"]}), "", "summary"),  # 15
        (msg("which has a pool?", {"hotel_search_results": ["h1"]}), "", "show_hotels"),  # 16
        (msg("actually redo it", {**READY, "flight_search_results": ["o1"], "places_seen": ["a"]}),
         "mcp/duffel.search_offers", "show_flights"),  # 17
        (msg("any museums worth seeing?"), "mcp/google-places.search_text", "show_places"),  # 18
        (msg("Paris"), "mcp/google-places.search_text", "show_places"),  # 19 new region
        (msg("Lisbon instead", {**READY, "places_seen": ["a"], "flight_search_results": ["o1"]}),
         "mcp/google-places.search_text", "show_places"),  # 17 blocked by restated, 19 by restated
        (msg("ok", {**READY, "places_seen": ["a"]}), "mcp/duffel.search_offers", "show_flights"),  # 20
        (msg("hello"), "", "collect_missing"),  # 21
        (msg("ok", {**READY, "places_seen": ["a"], "flight_search_results": ["o1"], "picked_flight_offer_id": "o",
                    "picked_hotel_id": "h"}), "", "summary"),  # 22
        (msg("ok", {**READY, "places_seen": ["a"], "flight_search_results": ["o1"]}), "", "summarize"),  # 23
    ],
)
def test_routing(turn, tool, kind):
    assert route(turn) == (tool, kind)


def test_argument_builders():
    slot = {"region": PARIS, "check_in_date": "2026-07-10", "check_out_date": "2026-07-14",
            "party": {"rooms": 2, "adults": 3, "children": [{"age": 5}]}, "picked_hotel_rate_key": "RK1"}
    args = lambda t: extract(t)["tool_requests"][0]["arguments"]  # noqa: E731
    assert args(msg("hotel please", slot)) == {"city": "Paris", "city_code": "PAR", "check_in": "2026-07-10",
                                                "check_out": "2026-07-14", "adults": 3, "rooms": 2, "children": 1,
                                                "radius": 20}
    assert args(msg("flights", slot)) == {"origin": "SFO", "destination": "PAR", "departure_date": "2026-07-10",
                                          "adults": 3, "cabin_class": "economy"}
    assert args(msg("wine tasting", slot)) == {"destination": "PAR", "from": "2026-07-10", "to": "2026-07-14",
                                               "language": "en", "adults": 3}
    assert args(msg("shuttle", slot)) == {"from_type": "IATA", "from_code": "PAR", "to_type": "ATLAS",
                                          "outbound": "2026-07-10", "adults": 3}
    assert args(msg("book", {**slot, "picked_hotel_id": "h"})) == {"rate_key": "RK1", "holder_name": "Alex",
                                                                   "holder_surname": "Traveller", "adults": 3}
    assert args(msg("book", {"picked_flight_offer_id": "off_9"}, duffel_env="live")) == {
        "offer_id": "off_9", "passengers": [{"given_name": "Alex", "family_name": "Traveller"}], "duffel_env": "live"}
    for odd in ("", 7, None, ["live"]):  # no usable environment in the turn: the default one
        assert args(msg("book", {"picked_flight_offer_id": "off_9"}, duffel_env=odd))["duffel_env"] == "test"
    # provider intents need only a region: null dates and one adult by default
    assert args(msg("flights to Rome")) == {"origin": "SFO", "destination": "ROM", "departure_date": None,
                                            "adults": 1, "cabin_class": "economy"}
    # book_hotel CTA does not store its rate key
    assert args(cta("book_hotel:h1", {"picked_hotel_id": "h1"}))["rate_key"] == ""
    # places query: the text for points of interest, the label to resolve a region
    assert args(msg("Things to do in Lisbon")) == {"query": "Things to do in Lisbon", "max_results": 8}
    assert args(msg("Lisbon")) == {"query": "Lisbon", "max_results": 5}


def test_collect_missing_lists_in_order():
    assert extract(msg("hi"))["render_intent"] == {"kind": "collect_missing", "missing": ["region", "dates", "party"]}
    assert extract(msg("hi", {"region": PARIS, "places_seen": ["a"]}))["render_intent"]["missing"] == ["dates", "party"]
    assert extract(msg("hi", {"region": PARIS, "places_seen": ["a"], "check_in_date": "2026-07-10"}))[
        "render_intent"]["missing"] == ["party"]


def test_extra_turn_fields_are_ignored():
    base = msg("flights to Paris")
    noisy = {**base, "id": "x", "intent_label": "y", "split": "eval", "prod_extract": {}, "thread_context": [1]}
    assert extract(noisy) == extract(base)


# --- section 8: fixtures -------------------------------------------------------------------------------------------


def test_fixtures():
    none = fixture({"tool_requests": []}, {})
    assert none == {"ok": True, "tool": "", "data": {}}
    ex = {"tool_requests": [{"tool": "mcp/duffel.create_order", "arguments": {}}]}
    assert fixture(ex, {"picked_flight_offer_id": "off_par_1"})["data"] == {
        "order_id": "ord_off_par_1", "booking_reference": "BRAR_1", "total_amount": "510.00",
        "total_currency": "USD"}
    assert fixture(ex, {})["data"]["booking_reference"] == "BRX"
    legacy = {"tool_requests": [{"tool_id": "mcp/hotelbeds.search_hotels"}]}
    hotels = fixture(legacy, {})["data"]["hotels"]
    assert [h["hotel_id"] for h in hotels] == ["hotel_X_1", "hotel_X_2", "hotel_X_3"]
    assert hotels[1]["location"]["lng"] == -80.11999999999999 and hotels[0]["name"] == "Destination Grand Hotel 1"
    offers = fixture({"tool_requests": [{"tool_name": "mcp/duffel.search_offers"}]}, {})["data"]["offers"]
    assert offers[0]["offer_id"] == "off_MIA_1" and offers[2]["price"]["total"] == "540.00"
    assert fixture({"tool_requests": [{"tool": "mcp/hotelbeds.book_hotel"}]}, {})["data"] == {}


# --- section 9: render, one case per row ---------------------------------------------------------------------------


def rendered(kind: str, slot: dict | None = None, ts: dict | None = None, **intent) -> dict:
    ex = {"slot_updates": {}, "tool_requests": [], "render_intent": {"kind": kind, **intent}}
    return render({"event_type": "user_message", "event_payload": {}, "slot_state": slot or {}}, ex,
                  ts or {"ok": True, "tool": "", "data": {}})


def types(out: dict) -> list[tuple[str, str]]:
    return [(w["widget_type"], w["variant"]) for w in out["widgets"]]


def test_render_error_card_on_failing_provider():
    out = rendered("show_flights", ts={"ok": False, "tool": "mcp/duffel.search_offers", "data": {}})
    assert out["bot_message"].startswith("That provider hiccuped")
    assert out["widgets"][0]["payload"]["retry_action_id"] == "retry:mcp/duffel.search_offers"
    assert types(rendered("show_flights", ts={"ok": False, "tool": "", "data": {}})) == [("flight_list", "default")]


@pytest.mark.parametrize(
    ("missing", "expected"),
    [(["region", "dates"], ("place_autocomplete_input", "default")), ([], ("place_autocomplete_input", "default")),
     (["dates", "party"], ("date_range_picker", "compact")), (["party"], ("party_picker", "default"))],
)
def test_render_collect_missing(missing, expected):
    assert types(rendered("collect_missing", missing=missing)) == [expected]


def test_render_collect_missing_with_unknown_values_falls_to_state():
    assert rendered("collect_missing", missing=["budget"])["bot_message"] == "Here is the current itinerary state."


def test_render_rows():
    assert rendered("show_places")["widgets"][0]["payload"] == {"title": "Top places in ", "items": []}
    flights = rendered("show_flights", {"region": PARIS}, {"ok": True, "tool": "t", "data": {"offers": [{"a": 1}]}})
    assert flights["widgets"][0]["payload"] == {"title": "Flights to Paris", "items": [{"a": 1}], "total_count": 1,
                                                "currency": "USD"}
    detail = rendered("flight_detail", {"region": PARIS, "check_in_date": "2026-08-01"})
    assert detail["widgets"][0]["payload"]["offer_id"] == "off_PAR_1"
    assert detail["widgets"][0]["payload"]["itineraries"][0]["segments"][0]["departure"]["at"] == "2026-08-01T08:00:00"
    assert rendered("show_hotels", {"region": LISBON})["widgets"][0]["payload"]["title"] == "Hotels in Lisbon"
    for kind in ("order_confirmation", "order_detail"):
        assert rendered(kind)["widgets"][0]["payload"] == {"order_id": "ord_x", "booking_reference": "BR0000",
                                                           "total_amount": "510.00", "total_currency": "USD"}
    summary = rendered("summary", {"region": PARIS})
    assert types(summary) == [("itinerary_summary", "default"), ("calendar_view", "compact")]
    assert summary["widgets"][1]["payload"] == {"trip_id": "trip_PAR", "editable": False}
    assert summary["widgets"][0]["payload"] == {"destination": "Paris", "dates": {"from": "2026-07-10",
                                                "to": "2026-07-14"}, "traveller_party": {"adults": 1, "rooms": 1,
                                                                                         "children": []}}
    assert rendered("calendar_live")["widgets"][0]["payload"] == {"trip_id": "trip_X", "editable": True}
    for kind in ("summarize", "clarify", "error", "show_activities", "show_transfers", "hotel_confirmation",
                 "trip_map", "unknown_kind"):
        assert types(rendered(kind)) == [("itinerary_summary", "default")]


def test_render_without_extraction_or_summary_and_never_reads_turn_summary():
    turn = msg("flights to Paris", tool_summary={"ok": False, "tool": "x"})
    out = render({**turn, "tool_summary": None})
    assert types(out) == [("flight_list", "default")]
    # the turn's failing summary makes extract refuse, but render never reads it
    ex = {"slot_updates": {}, "tool_requests": [], "render_intent": {"kind": "show_flights"}}
    assert types(render(turn, ex)) == [("flight_list", "default")]


def test_run_turn_uses_fixture_over_merged_slot():
    out = run_turn(msg("hotels in Lisbon"))
    assert out["tool_summary"]["data"]["hotels"][0]["hotel_id"] == "hotel_LIS_1"
    assert out["render"]["widgets"][0]["payload"]["items"] == out["tool_summary"]["data"]["hotels"]
