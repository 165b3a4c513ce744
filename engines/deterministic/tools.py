"""The oracle's tool requests as functions of the merged slot state (docs/oracle.md §6).

One place builds every tool request's arguments: the oracle's router (:mod:`.extract`) picks the
tool, and so does the slm engine's ``plan`` extract mode (:mod:`engines.slm.extract_plan`), where a
model picks the render intent and these functions derive the request from it and the slots.
"""

from __future__ import annotations

from typing import Any

from engines.deterministic import rules as R


def _get(obj: Any, key: str) -> Any:
    return obj.get(key) if isinstance(obj, dict) else None


def _party(merged: dict[str, Any]) -> dict[str, Any]:
    party = merged.get("party")
    return party if isinstance(party, dict) else {}


def _count(value: Any) -> int:
    """Children as the count the tools take: a list's length; a bare count as sent; anything else 0."""
    if isinstance(value, list):
        return len(value)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _adults(merged: dict[str, Any]) -> Any:
    party = merged.get("party")
    return party.get("adults", 1) if isinstance(party, dict) else 1


def places(query: str, n: int) -> tuple[str, dict[str, Any]]:
    return R.TOOL_PLACES, {"query": query, "max_results": n}


def flights(merged: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return R.TOOL_FLIGHTS, {"origin": R.FLIGHT_ORIGIN, "destination": _get(merged.get("region"), "city_code") or "",
                            "departure_date": merged.get("check_in_date"), "adults": _adults(merged),
                            "cabin_class": R.CABIN_CLASS}


def transfers(merged: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return R.TOOL_TRANSFERS, {"from_type": "IATA", "from_code": _get(merged.get("region"), "city_code") or "",
                              "to_type": "ATLAS", "outbound": merged.get("check_in_date"),
                              "adults": _adults(merged)}


def hotels(merged: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    region = merged.get("region")
    party = _party(merged)
    return R.TOOL_HOTELS, {"city": _get(region, "label") or "", "city_code": _get(region, "city_code") or "",
                           "check_in": merged.get("check_in_date"), "check_out": merged.get("check_out_date"),
                           "adults": _adults(merged), "rooms": party.get("rooms") or 1,
                           "children": _count(party.get("children")), "radius": R.HOTEL_RADIUS}


def activities(merged: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return R.TOOL_ACTIVITIES, {"destination": _get(merged.get("region"), "city_code") or "",
                               "from": merged.get("check_in_date"), "to": merged.get("check_out_date"),
                               "language": R.ACTIVITY_LANGUAGE, "adults": _adults(merged)}


def book_hotel(merged: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return R.TOOL_BOOK_HOTEL, {"rate_key": merged.get("picked_hotel_rate_key") or "",
                               "holder_name": R.HOLDER_NAME, "holder_surname": R.HOLDER_SURNAME,
                               "adults": _adults(merged)}


def create_order(turn: dict[str, Any], merged: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    env = turn.get("duffel_env")  # the turn's Duffel environment when it names one, else the default
    return R.TOOL_ORDER, {"offer_id": merged.get("picked_flight_offer_id"),
                          "passengers": [{"given_name": R.HOLDER_NAME, "family_name": R.HOLDER_SURNAME}],
                          "duffel_env": env if isinstance(env, str) and env else R.DEFAULT_DUFFEL_ENV}
