"""The oracle's render pass (oracle.md section 9) and the payload assembler it is built from.

``build_envelope`` is also the assembler of the slm engine's ``plan`` render mode: a model picks
the bot message and the widget plan, and every payload is filled here from tool data and slots.
"""

from __future__ import annotations

from typing import Any

from engines.deterministic import rules as R
from engines.deterministic.extract import extract
from engines.deterministic.fixtures import fixture, offer

#: Widget types the assembler can fill (the oracle's output vocabulary).
PLAN_WIDGET_TYPES: tuple[str, ...] = (
    "place_autocomplete_input", "date_range_picker", "party_picker", "place_list", "flight_list", "flight_card",
    "hotel_list", "order_confirmation", "itinerary_summary", "calendar_view", "error_card",
)
VARIANTS: tuple[str, ...] = ("default", "compact", "full")
BOT_MESSAGES: tuple[str, ...] = (
    R.MSG_PROVIDER_ERROR, R.MSG_WHERE, R.MSG_WHEN, R.MSG_WHO, R.MSG_PLACES, R.MSG_FLIGHTS, R.MSG_FLIGHT_DETAIL,
    R.MSG_HOTELS, R.MSG_ORDER, R.MSG_SUMMARY, R.MSG_CALENDAR, R.MSG_STATE,
)


def _region(slot: dict[str, Any]) -> dict[str, Any]:
    region = slot.get("region")
    return region if isinstance(region, dict) else {}


def _data(tool_summary: dict[str, Any]) -> dict[str, Any]:
    data = tool_summary.get("data")
    return data if isinstance(data, dict) else {}


def _payload(widget_type: str, variant: str, slot: dict[str, Any], ts: dict[str, Any]) -> dict[str, Any]:
    region = _region(slot)
    label = region.get("label") or ""
    data = _data(ts)
    if widget_type == "itinerary_summary":
        return {"destination": label or "Destination",
                "dates": {"from": slot.get("check_in_date") or R.SUMMARY_DEFAULT_DATES[0],
                          "to": slot.get("check_out_date") or R.SUMMARY_DEFAULT_DATES[1]},
                "traveller_party": slot.get("party") or {"adults": 1, "rooms": 1, "children": []}}
    if widget_type == "calendar_view":
        return {"trip_id": "trip_" + (region.get("city_code") or "X"), "editable": variant == "full"}
    if widget_type == "place_list":
        return {"title": "Top places in " + label, "items": data.get("places") or []}
    if widget_type == "flight_list":
        offers = data.get("offers") or []
        return {"title": "Flights to " + label, "items": offers, "total_count": len(offers), "currency": "USD"}
    if widget_type == "flight_card":
        return (data.get("offers") or [offer(slot, 1)])[0]
    if widget_type == "hotel_list":
        hotels = data.get("hotels") or []
        return {"title": "Hotels in " + label, "items": hotels, "total_count": len(hotels)}
    if widget_type == "order_confirmation":
        return {"order_id": data.get("order_id") or "ord_x", "booking_reference": data.get("booking_reference") or "BR0000",
                "total_amount": data.get("total_amount") or R.ORDER_TOTAL,
                "total_currency": data.get("total_currency") or "USD"}
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
    """One envelope whose payload is filled from the tool data and the merged slot."""
    return {"schema_version": 1, "widget_type": widget_type, "variant": variant,
            "payload": _payload(widget_type, variant, slot, tool_summary)}


def render_plan(extraction: dict[str, Any], tool_summary: dict[str, Any]) -> tuple[str, list[tuple[str, str]]]:
    """The oracle's choice: ``(bot_message, [(widget_type, variant), ...])`` (first matching row)."""
    ri = extraction.get("render_intent") or {}
    kind = ri.get("kind") or "summarize"
    missing = ri.get("missing") or []
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
    return R.MSG_STATE, [("itinerary_summary", "default")]


def merged_slot(turn: dict[str, Any], extraction: dict[str, Any]) -> dict[str, Any]:
    updates = extraction.get("slot_updates")
    return {**(turn.get("slot_state") or {}), **(updates if isinstance(updates, dict) else {})}


def render(
    turn: dict[str, Any], extraction: dict[str, Any] | None = None, tool_summary: dict[str, Any] | None = None
) -> dict[str, Any]:
    """turn (+ extraction, + tool_summary) -> ``{bot_message, widgets}``. Never reads turn.tool_summary."""
    if extraction is None:
        extraction = extract(turn)
    slot = merged_slot(turn, extraction)
    if tool_summary is None:
        tool_summary = fixture(extraction, slot)
    message, plan = render_plan(extraction, tool_summary)
    return {"bot_message": message,
            "widgets": [build_envelope(t, v, slot, tool_summary) for t, v in plan]}


def run_turn(turn: dict[str, Any]) -> dict[str, Any]:
    """The labelling entry point: extract, fixture over the merged slot, render."""
    ex = extract(turn)
    ts = fixture(ex, merged_slot(turn, ex))
    return {"extract": ex, "render": render(turn, ex, ts), "tool_summary": ts}
