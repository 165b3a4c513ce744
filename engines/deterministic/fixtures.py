"""The deterministic tool_summary fixtures (docs/oracle.md §8)."""

from __future__ import annotations

from typing import Any

from contracts.planner import usable_slot_state
from engines.deterministic import rules as R


def _region(slot: dict[str, Any]) -> dict[str, Any]:
    region = slot.get("region")
    return region if isinstance(region, dict) else {}


def first_tool(extraction: dict[str, Any]) -> str:
    requests = extraction.get("tool_requests")
    if not isinstance(requests, list) or not requests or not isinstance(requests[0], dict):
        return ""
    first = requests[0]
    tool = first.get("tool") or first.get("tool_id") or first.get("tool_name") or ""
    return tool if isinstance(tool, str) else ""


def places(slot: dict[str, Any]) -> list[dict[str, Any]]:
    region = _region(slot)
    label = region.get("label") or "Destination"
    code = region.get("city_code") or "X"
    cc = region.get("country_code") or ""
    return [
        {"place_id": f"place_{code}_{i}", "name": f"{label} Landmark {i}", "types": ["tourist_attraction"],
         "photos": [f"https://example.com/p{i}.jpg"], "rating": 4.5, "rating_count": 1200 + i,
         "address": f"{label}, {cc}"}
        for i in (1, 2, 3)
    ]


def offer(slot: dict[str, Any], i: int) -> dict[str, Any]:
    code = _region(slot).get("city_code") or "MIA"
    ci = slot.get("check_in_date") or R.FIXTURE_DEFAULT_CHECK_IN
    return {
        "offer_id": f"off_{code}_{i}",
        "price": {"total": R.OFFER_PRICES[i - 1], "currency": "USD"},
        "itineraries": [{"duration": "PT6H30M", "segments": [{
            "departure": {"iata": "SFO", "at": f"{ci}T08:00:00"},
            "arrival": {"iata": code, "at": f"{ci}T14:30:00"},
            "carrier": "AA", "flight_number": f"AA10{i}", "duration": "PT6H30M", "stops": 0,
        }]}],
        "carriers": ["AA"], "duration": "PT6H30M", "stops": 0, "validating_airline": "AA",
    }


def hotels(slot: dict[str, Any]) -> list[dict[str, Any]]:
    region = _region(slot)
    label = region.get("label") or "Destination"
    code = region.get("city_code") or "X"
    return [
        {"hotel_id": f"hotel_{code}_{i}", "name": f"{label} Grand Hotel {i}",
         "location": {"lat": R.HOTEL_LAT[i - 1], "lng": R.HOTEL_LNG[i - 1], "city": label},
         "star_rating": 4.0, "score": 8.5, "score_count": 300 + i, "photos": [f"https://example.com/h{i}.jpg"],
         "amenities": ["wifi", "breakfast", "pool"], "price_per_night": R.HOTEL_PRICE[i - 1], "currency": "USD",
         "address": f"{label} Beach Rd {i}"}
        for i in (1, 2, 3)
    ]


def order(slot: dict[str, Any]) -> dict[str, Any]:
    pf = slot.get("picked_flight_offer_id")
    return {"order_id": "ord_" + (pf or "x"), "booking_reference": "BR" + (pf[-4:].upper() if pf else "X"),
            "total_amount": R.ORDER_TOTAL, "total_currency": "USD"}


def fixture(extraction: dict[str, Any], slot: dict[str, Any]) -> dict[str, Any]:
    """The tool_summary for the first tool request, built from the merged slot (a slot value of a type
    the oracle cannot use counts as absent)."""
    return fixture_from_usable(extraction, usable_slot_state(slot))


def fixture_from_usable(extraction: dict[str, Any], slot: dict[str, Any]) -> dict[str, Any]:
    """:func:`fixture` for a slot already read with :func:`contracts.planner.usable_slot_state`."""
    if not extraction.get("tool_requests"):
        return {"ok": True, "tool": "", "data": {}}
    tool = first_tool(extraction)
    if tool == R.TOOL_PLACES:
        data: dict[str, Any] = {"places": places(slot)}
    elif tool == R.TOOL_FLIGHTS:
        data = {"offers": [offer(slot, 1), offer(slot, 2), offer(slot, 3)]}
    elif tool == R.TOOL_HOTELS:
        data = {"hotels": hotels(slot)}
    elif tool == R.TOOL_ORDER:
        data = order(slot)
    else:
        data = {}
    return {"ok": True, "tool": tool, "data": data}
