"""The oracle's render pass (docs/oracle.md §9) and the payload assembler it is built from.

``build_envelope`` is also the assembler of the slm engine's ``plan`` render mode: a model picks
the bot message and the widget plan, and every payload is filled here from tool data and slots.
"""

from __future__ import annotations

from typing import Any

from contracts.planner import is_real_date, usable_slot_state
from engines.deterministic import rules as R
from engines.deterministic.extract import extract
from engines.deterministic.fixtures import fixture, fixture_from_usable, offer

#: Bot messages of the rows for data the fixtures never produce (the planner's activities, transfers and
#: hotel booking cards); docs/oracle.md §9 has no row for them.
MSG_ACTIVITIES = "Here are activities you can add to the trip."
MSG_TRANSFERS = "Here are transfer options for the trip."
MSG_HOTEL_BOOKING = "Your hotel booking is confirmed."

#: Widget types the assembler can fill (the oracle's output vocabulary).
PLAN_WIDGET_TYPES: tuple[str, ...] = (
    "place_autocomplete_input", "date_range_picker", "party_picker", "place_list", "flight_list", "flight_card",
    "hotel_list", "order_confirmation", "itinerary_summary", "calendar_view", "error_card",
    "activity_list", "transfer_list", "hotel_confirmation",
)
VARIANTS: tuple[str, ...] = ("default", "compact", "full")
BOT_MESSAGES: tuple[str, ...] = (
    R.MSG_PROVIDER_ERROR, R.MSG_WHERE, R.MSG_WHEN, R.MSG_WHO, R.MSG_PLACES, R.MSG_FLIGHTS, R.MSG_FLIGHT_DETAIL,
    R.MSG_HOTELS, R.MSG_ORDER, R.MSG_SUMMARY, R.MSG_CALENDAR, R.MSG_STATE,
    MSG_ACTIVITIES, MSG_TRANSFERS, MSG_HOTEL_BOOKING,
)
#: optional order_confirmation fields copied from a real (planner) order card when present
_ORDER_EXTRAS: tuple[str, ...] = ("passengers", "slices", "documents", "ctas")
_BOOKING_EXTRAS: tuple[str, ...] = ("status", "check_in", "check_out", "destination", "ctas")


def _region(slot: dict[str, Any]) -> dict[str, Any]:
    region = slot.get("region")
    return region if isinstance(region, dict) else {}


def _data(tool_summary: dict[str, Any]) -> dict[str, Any]:
    data = tool_summary.get("data")
    return data if isinstance(data, dict) else {}


def _list(data: dict[str, Any], key: str) -> list[Any]:
    value = data.get(key)
    return value if isinstance(value, list) else []


def _emphasis(data: dict[str, Any], offers: list[Any]) -> str | None:
    """The planner's best-value offer id (``groups.best_value``) when it is one of the items."""
    groups = data.get("groups")
    best = groups.get("best_value") if isinstance(groups, dict) else None
    offer_id = best.get("offer_id") if isinstance(best, dict) else None
    ids = {o.get("offer_id") for o in offers if isinstance(o, dict)}
    return offer_id if isinstance(offer_id, str) and offer_id in ids else None


def _currency(offers: list[Any]) -> str:
    price = offers[0].get("price") if offers and isinstance(offers[0], dict) else None
    currency = price.get("currency") if isinstance(price, dict) else None
    return currency if isinstance(currency, str) and currency else "USD"


def _order(data: dict[str, Any]) -> dict[str, Any]:
    """The order fields of ``data``; the oracle's placeholders only where a field is absent (no order sent;
    the normalised planner order card always carries order_id and booking_reference)."""
    def field(key: str, default: str) -> str:
        value = data.get(key)
        return value if isinstance(value, str) else default

    payload: dict[str, Any] = {"order_id": field("order_id", "ord_x"),
                               "booking_reference": field("booking_reference", "BR0000"),
                               "total_amount": field("total_amount", R.ORDER_TOTAL),
                               "total_currency": field("total_currency", "USD")}
    for key in _ORDER_EXTRAS:
        if isinstance(data.get(key), list):
            payload[key] = data[key]
    return payload


def _hotel_booking(data: dict[str, Any]) -> dict[str, Any]:
    booking = data.get("hotel_booking")
    booking = booking if isinstance(booking, dict) else {}

    def field(key: str, default: str) -> str:
        value = booking.get(key)
        return value if isinstance(value, str) else default

    payload: dict[str, Any] = {"booking_reference": field("booking_reference", ""),
                               "hotel_name": field("hotel_name", "Hotel"),
                               "total_amount": field("total_amount", "0.00"),
                               "total_currency": field("total_currency", "EUR")}
    for key in _BOOKING_EXTRAS:
        if key in booking and booking[key] is not None:
            payload[key] = booking[key]
    return payload


def _date(slot: dict[str, Any], key: str, default: str) -> str:
    value = slot.get(key)
    return value if is_real_date(value) else default


def _payload(widget_type: str, variant: str, slot: dict[str, Any], ts: dict[str, Any]) -> dict[str, Any]:
    """The payload from tool data and a slot already read with ``usable_slot_state``."""
    region = _region(slot)
    label = region.get("label") or ""
    data = _data(ts)
    if widget_type == "itinerary_summary":
        return {"destination": label or "Destination",
                "dates": {"from": _date(slot, "check_in_date", R.SUMMARY_DEFAULT_DATES[0]),
                          "to": _date(slot, "check_out_date", R.SUMMARY_DEFAULT_DATES[1])},
                "traveller_party": slot.get("party") or {"adults": 1, "rooms": 1, "children": []}}
    if widget_type == "calendar_view":
        return {"trip_id": "trip_" + (region.get("city_code") or "X"), "editable": variant == "full"}
    if widget_type == "place_list":
        return {"title": "Top places in " + label, "items": _list(data, "places")}
    if widget_type == "flight_list":
        offers = _list(data, "offers")
        flights = {"title": "Flights to " + label, "items": offers, "total_count": len(offers),
                   "currency": _currency(offers)}
        emphasis = _emphasis(data, offers)
        if emphasis is not None:
            flights["emphasis_offer_id"] = emphasis
        return flights
    if widget_type == "flight_card":
        return (_list(data, "offers") or [offer(slot, 1)])[0]
    if widget_type == "hotel_list":
        hotels = _list(data, "hotels")
        return {"title": "Hotels in " + label, "items": hotels, "total_count": len(hotels)}
    if widget_type == "activity_list":
        activities = _list(data, "activities")
        return {"title": "Activities in " + label, "items": activities, "total_count": len(activities)}
    if widget_type == "transfer_list":
        transfers = _list(data, "transfers")
        return {"title": "Transfers in " + label, "items": transfers, "total_count": len(transfers)}
    if widget_type == "order_confirmation":
        return _order(data)
    if widget_type == "hotel_confirmation":
        return _hotel_booking(data)
    if widget_type == "place_autocomplete_input":
        return {"placeholder": "Search a destination", "suggestions": [dict(s) for s in R.DESTINATION_SUGGESTIONS],
                "submit_on_select": True}
    if widget_type == "date_range_picker":
        return {"min_date": R.DATE_PICKER_RANGE[0], "max_date": R.DATE_PICKER_RANGE[1],
                "default_from": R.NEXT_MONTH_DATES[0], "default_to": R.NEXT_MONTH_DATES[1], "locale": "en",
                "submit": "submit"}
    if widget_type == "party_picker":
        return {"rooms_max": 4, "adults_max": 8, "children_max": 6, "allow_child_ages": True}
    if widget_type == "error_card":
        return {"title": "Provider error", "description": "The travel provider did not respond. Try again.",
                "retry_action_id": "retry:" + str(ts.get("tool") or "")}
    raise ValueError(f"the assembler cannot fill widget type {widget_type!r}")


def build_envelope(widget_type: str, variant: str, slot: dict[str, Any], tool_summary: dict[str, Any]) -> dict:
    """One envelope whose payload is filled from the tool data and the merged slot (a slot value of a type
    the oracle cannot use counts as absent)."""
    return _envelope(widget_type, variant, usable_slot_state(slot), tool_summary)


def _envelope(widget_type: str, variant: str, slot: dict[str, Any], tool_summary: dict[str, Any]) -> dict:
    return {"schema_version": 1, "widget_type": widget_type, "variant": variant,
            "payload": _payload(widget_type, variant, slot, tool_summary)}


def render_plan(extraction: dict[str, Any], tool_summary: dict[str, Any]) -> tuple[str, list[tuple[str, str]]]:
    """The oracle's choice: ``(bot_message, [(widget_type, variant), ...])`` (first matching row)."""
    ri = extraction.get("render_intent")
    ri = ri if isinstance(ri, dict) else {}
    kind = ri.get("kind") or "summarize"
    missing = ri.get("missing")
    missing = missing if isinstance(missing, list) else []
    data = _data(tool_summary)
    if not tool_summary.get("ok", True) and tool_summary.get("tool"):
        return R.MSG_PROVIDER_ERROR, [("error_card", "default")]
    if kind == "collect_missing":
        if "region" in missing or not missing:
            return R.MSG_WHERE, [("place_autocomplete_input", "default")]
        if "dates" in missing:
            return R.MSG_WHEN, [("date_range_picker", "compact")]
        if "party" in missing:
            return R.MSG_WHO, [("party_picker", "default")]
    elif kind == "show_places":
        return R.MSG_PLACES, [("place_list", "default")]
    elif kind == "show_flights":
        return R.MSG_FLIGHTS, [("flight_list", "default")]
    elif kind == "flight_detail":
        return R.MSG_FLIGHT_DETAIL, [("flight_card", "default")]
    elif kind == "show_hotels":
        return R.MSG_HOTELS, [("hotel_list", "default")]
    elif kind in ("order_confirmation", "order_detail"):
        return R.MSG_ORDER, [("order_confirmation", "default")]
    elif kind == "summary":
        return R.MSG_SUMMARY, [("itinerary_summary", "default"), ("calendar_view", "compact")]
    elif kind == "calendar_live":
        return R.MSG_CALENDAR, [("calendar_view", "full")]
    # rows for the planner's cards, which the fixtures never produce (their data is {} for these tools)
    elif kind == "show_activities" and isinstance(data.get("activities"), list):
        return MSG_ACTIVITIES, [("activity_list", "default")]
    elif kind == "show_transfers" and isinstance(data.get("transfers"), list):
        return MSG_TRANSFERS, [("transfer_list", "default")]
    elif kind == "hotel_confirmation" and isinstance(data.get("hotel_booking"), dict):
        return MSG_HOTEL_BOOKING, [("hotel_confirmation", "default")]
    return R.MSG_STATE, [("itinerary_summary", "default")]


def merged_slot(turn: dict[str, Any], extraction: dict[str, Any]) -> dict[str, Any]:
    slot = turn.get("slot_state")
    updates = extraction.get("slot_updates")
    return {**(slot if isinstance(slot, dict) else {}), **(updates if isinstance(updates, dict) else {})}


def render(
    turn: dict[str, Any], extraction: dict[str, Any] | None = None, tool_summary: dict[str, Any] | None = None
) -> dict[str, Any]:
    """turn (+ extraction, + tool_summary) -> ``{bot_message, widgets}``. Never reads turn.tool_summary."""
    if extraction is None:
        extraction = extract(turn)
    slot = usable_slot_state(merged_slot(turn, extraction))
    if tool_summary is None:
        tool_summary = fixture_from_usable(extraction, slot)
    message, plan = render_plan(extraction, tool_summary)
    return {"bot_message": message,
            "widgets": [_envelope(t, v, slot, tool_summary) for t, v in plan]}


def run_turn(turn: dict[str, Any]) -> dict[str, Any]:
    """The labelling entry point: extract, fixture over the merged slot, render."""
    ex = extract(turn)
    ts = fixture(ex, merged_slot(turn, ex))
    return {"extract": ex, "render": render(turn, ex, ts), "tool_summary": ts}
