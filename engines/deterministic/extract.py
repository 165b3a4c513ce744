"""The oracle's extract pass (docs/oracle.md §0-§6): pure function, no I/O, no clock."""

from __future__ import annotations

import re
from datetime import date
from typing import Any

from contracts.planner import MAX_CHILDREN, is_count, is_real_date, payload_text, usable_slot_state
from engines.deterministic import rules as R
from engines.deterministic import tools as T

_ISO_DATES = re.compile(R.ISO_DATE_PATTERN)
_STRICT_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_PARTY = re.compile(R.PARTY_PATTERN)
_CARD = re.compile(R.CARD_PATTERN)
_PASSPORT = re.compile(R.PASSPORT_PATTERN, re.IGNORECASE)


def place_slot(label: str, code: str, cc: str, kind: str) -> dict[str, Any]:
    """The region slot of one gazetteer entry (a region's also has ``scope: "region"``)."""
    slot = {"label": label, "city_code": code, "country_code": cc, "kind": kind}
    if kind == "region":
        slot["scope"] = "region"
    return slot


def city_hint(s: str) -> dict[str, Any] | None:
    """A new region dict for the first gazetteer needle contained in ``s`` (regions first)."""
    low = s.lower()
    for needle, label, code, cc, kind in R.GAZETTEER:
        if needle in low:
            return place_slot(label, code, cc, kind)
    return None


def day_diff(a: Any, b: Any) -> int:
    """``max(0, b - a)`` in days for two well-formed ISO dates; 0 for anything else."""
    if not (isinstance(a, str) and isinstance(b, str) and _STRICT_DATE.fullmatch(a) and _STRICT_DATE.fullmatch(b)):
        return 0
    try:
        return max(0, (date.fromisoformat(b) - date.fromisoformat(a)).days)
    except ValueError:
        return 0


def _get(obj: Any, key: str) -> Any:
    return obj.get(key) if isinstance(obj, dict) else None


def _any(words: tuple[str, ...], low: str) -> bool:
    # A plain loop: about twice as fast as any() over a generator on this hot path.
    for w in words:  # noqa: SIM110
        if w in low:
            return True
    return False


def _children(value: Any) -> list[Any]:
    """Submitted children as the contract's ``[{age?}]``: a valid list as sent; otherwise ages (ints or
    ``{age}``) kept where valid, other entries a child of unknown age ``{}``, a count as that many."""
    if isinstance(value, list):
        if all(isinstance(c, dict) and _valid_child(c) for c in value):
            return value
        return [c if isinstance(c, dict) and _valid_child(c) else
                {"age": c} if is_count(c) and c <= 17 else {} for c in value]
    return [{} for _ in range(value)] if is_count(value) and value <= MAX_CHILDREN else []


def _valid_child(child: dict[str, Any]) -> bool:
    age = child.get("age")
    return age is None or (is_count(age) and age <= 17)


def _submitted_updates(val: dict[str, Any]) -> dict[str, Any]:
    """The slot updates of a widget's submitted value. A value of the wrong type counts as absent: its
    update is left out (the contract types of slot_updates, docs/contract.md §2.2 and §7)."""
    updates: dict[str, Any] = {}
    if "from" in val and "to" in val and is_real_date(val["from"]) and is_real_date(val["to"]):
        updates["check_in_date"] = val["from"]
        updates["check_out_date"] = val["to"]
        nights = val.get("nights")
        updates["nights"] = nights if "nights" in val and is_count(nights) else day_diff(val["from"], val["to"])
    if "adults" in val and is_count(val["adults"]):
        rooms = val.get("rooms", 1)
        updates["party"] = {"rooms": rooms if is_count(rooms) else 1, "adults": val["adults"],
                            "children": _children(val.get("children", []))}
    if "id" in val and "label" in val:
        label, code, kind = val["label"], val["id"], val.get("kind", "city")
        hit = city_hint(label) if isinstance(label, str) else None
        if hit:
            updates["region"] = hit
        elif isinstance(label, str) and isinstance(code, str):
            updates["region"] = {"label": label, "city_code": code, "country_code": "US",
                                 "kind": kind if isinstance(kind, str) or kind is None else "city"}
    return updates


def _slot_updates(event_type: str, payload: dict[str, Any], action_id: str, text: str, lower_text: str,
                  slot: dict[str, Any]) -> dict[str, Any]:
    updates: dict[str, Any] = {}
    if event_type == "user_widget_submit":
        val = payload["submitted_value"] if "submitted_value" in payload else payload.get("value")
        return _submitted_updates(val) if isinstance(val, dict) else updates
    if event_type == "user_widget_cta_click":
        if action_id.startswith(R.PICK_FLIGHT_PREFIXES):
            updates["picked_flight_offer_id"] = action_id.split(":", 1)[1]
        elif action_id.startswith(R.PICK_HOTEL_PREFIXES):
            updates["picked_hotel_id"] = action_id.split(":", 1)[1]
        return updates
    # free text
    hit = city_hint(text)
    if hit:
        old = slot.get("region")
        if not old or hit["city_code"] != _get(old, "city_code"):
            updates["region"] = hit
    if not slot.get("check_in_date"):
        found = _ISO_DATES.findall(text)
        hint: tuple[str, str] | None = None
        if len(found) >= 2:
            hint = (found[0], found[1])
        elif R.NEXT_MONTH_PHRASE in lower_text:
            hint = R.NEXT_MONTH_DATES
        if hint:
            updates["check_in_date"], updates["check_out_date"] = hint
            updates["nights"] = day_diff(*hint)
    if not slot.get("party"):
        if R.COUPLE_WORD in lower_text:
            updates["party"] = {"rooms": 1, "adults": 2, "children": []}
        else:
            m = _PARTY.search(lower_text)
            if m and len(m.group(1)) <= 9:  # a longer digit run is no party (and int() of it is unbounded)
                updates["party"] = {"rooms": 1, "adults": int(m.group(1)), "children": []}
    return updates


def _payload(turn: dict[str, Any]) -> dict[str, Any]:
    payload = turn.get("event_payload")
    return payload if isinstance(payload, dict) else {}


def event_slot_updates(turn: dict[str, Any]) -> dict[str, Any]:
    """The slot updates of a turn as the oracle reads them (free text, widget value or CTA id)."""
    payload = _payload(turn)
    action_id = payload.get("action_id")
    text = payload_text(payload)
    return _slot_updates(turn.get("event_type") or "user_message", payload,
                         action_id if isinstance(action_id, str) else "", text, text.lower(),
                         usable_slot_state(turn.get("slot_state")))


def _refusal(turn: dict[str, Any], text: str, lower_text: str, merged: dict[str, Any]) -> tuple[str, str] | None:
    if _CARD.search(text) or _PASSPORT.search(text):
        return "error", "pii_redacted"
    summary = turn.get("tool_summary")
    if turn.get("tool_error") or (
        isinstance(summary, dict) and (summary.get("isError") or ("ok" in summary and summary["ok"] is False))
    ):
        return "error", "provider_unavailable"
    if _any(R.OUT_OF_DOMAIN_WORDS, lower_text):
        return "error", "out_of_domain"
    if (
        _any(R.BUY_WORDS, lower_text)
        and _any(R.VAGUE_WORDS, lower_text)
        and not (merged.get("picked_flight_offer_id") or merged.get("picked_hotel_id"))
    ):
        return "clarify", "confirmation_required"
    for a, b in R.CONTRADICTION_PAIRS:
        if a in lower_text and b in lower_text:
            return "clarify", "contradictory_constraints"
    if _any(R.CONTRADICTION_SINGLES, lower_text):
        return "clarify", "contradictory_constraints"
    if _any(R.BLOCKER_WORDS, lower_text):
        return "clarify", "blocker_needs_verification"
    return None


def extract(turn: dict[str, Any]) -> dict[str, Any]:
    """turn -> ``{slot_updates, tool_requests, render_intent}``.

    Robust to any JSON in the turn: a slot or widget value of a type the oracle cannot use counts as
    absent (:func:`contracts.planner.usable_slot_state`), so the output is always contract-valid.
    """
    payload = _payload(turn)
    slot = usable_slot_state(turn.get("slot_state"))
    event_type = turn.get("event_type") or "user_message"
    action_id = payload.get("action_id")
    if not isinstance(action_id, str):
        action_id = ""
    text = payload_text(payload)
    lower_text = text.lower()

    updates = _slot_updates(event_type, payload, action_id, text, lower_text, slot)
    merged = {**slot, **updates}

    refusal = _refusal(turn, text, lower_text, merged)
    if refusal:
        return {"slot_updates": updates, "tool_requests": [],
                "render_intent": {"kind": refusal[0], "reason": refusal[1]}}

    tool, args, kind = _route(turn, text, lower_text, event_type, action_id, slot, updates, merged)
    intent: dict[str, Any] = {"kind": kind}
    if kind == "collect_missing":
        region = merged.get("region")
        intent["missing"] = [name for name, have in (("region", region), ("dates", merged.get("check_in_date")),
                                                     ("party", merged.get("party"))) if not have]
    return {"slot_updates": updates, "tool_requests": [{"tool": tool, "arguments": args}] if tool else [],
            "render_intent": intent}


def _route(
    turn: dict[str, Any], text: str, lower_text: str, event_type: str, action_id: str,
    slot: dict[str, Any], updates: dict[str, Any], merged: dict[str, Any],
) -> tuple[str | None, dict[str, Any] | None, str]:
    """The tool request and render intent of a turn that was not refused: the first rule of the routing table
    that matches, in its order (docs/oracle.md section 6, whose ``pf``, ``ph``, ``fsr``, ``hsr``, ``seen``,
    ``restated`` and ``ready`` are ``picked_flight``, ``picked_hotel``, ``flights_searched``,
    ``hotels_searched``, ``places_seen``, ``region_changed`` and ``trip_known`` here). ``merged`` is the slot
    state with this turn's ``updates`` applied; a tool request comes with the intent that shows its result."""
    is_cta_click = event_type == "user_widget_cta_click"
    region = merged.get("region") or {}
    region_label = _get(region, "label") or ""
    picked_flight = merged.get("picked_flight_offer_id")
    picked_hotel = merged.get("picked_hotel_id")
    flights_searched = merged.get("flight_search_results")
    hotels_searched = merged.get("hotel_search_results")
    places_seen = merged.get("places_seen")

    wants_order = _any(R.ORDER_WORDS, lower_text) or (is_cta_click and action_id.startswith(R.ORDER_CTA_PREFIXES))
    asks_activities = _any(R.ACTIVITY_WORDS, lower_text)
    asks_places = _any(R.POI_WORDS, lower_text)
    new_region = updates.get("region")
    old_region = slot.get("region")
    region_changed = bool(new_region and old_region
                          and _get(new_region, "city_code") != _get(old_region, "city_code"))

    if _any(R.REFERENCE_WORDS, lower_text):
        return None, None, "summarize"
    if merged.get("trip_confirmed"):
        return None, None, "trip_map"
    if region:
        if _any(R.TRANSFER_WORDS, lower_text):
            return (*T.transfers(merged), "show_transfers")
        if _any(R.HOTEL_WORDS, lower_text):
            return (*T.hotels(merged), "show_hotels")
        if asks_places and not asks_activities:
            return (*T.places(text or region_label, R.PLACES_POINTS_OF_INTEREST), "show_places")
        if asks_activities:
            return (*T.activities(merged), "show_activities")
        if _any(R.FLIGHT_WORDS, lower_text):
            return (*T.flights(merged), "show_flights")
    if picked_hotel and not wants_order and (
        merged.get("picked_hotel_rate_key") or _any(R.ROOM_SELECTION_WORDS, lower_text)  # a room is picked
    ):
        return None, None, "hotel_confirmation"
    if picked_hotel and wants_order:
        return (*T.book_hotel(merged), "hotel_confirmation")
    if picked_flight and wants_order and not merged.get("order_id"):
        return (*T.create_order(turn, merged), "order_confirmation")
    if merged.get("order_id") and _any(R.VIEW_ORDER_WORDS, lower_text):
        return None, None, "order_detail"
    if picked_flight and (R.DETAIL_WORD in lower_text or action_id.startswith(R.VIEW_OFFER_PREFIX)):
        return None, None, "flight_detail"
    if _any(R.CALENDAR_VIEW_WORDS, lower_text) and _any(R.CALENDAR_WHAT_WORDS, lower_text):
        return None, None, "calendar_live"
    if places_seen and (R.MAP_WORD in lower_text or (is_cta_click and R.MAP_WORD in action_id)):
        return None, None, "trip_map"
    has_trip_context = region or picked_flight or picked_hotel or flights_searched or hotels_searched
    if has_trip_context and _any(R.SUMMARY_WORDS, lower_text):
        return None, None, "summary"
    if hotels_searched and _any(R.HOTEL_FILTER_WORDS, lower_text):
        return None, None, "show_hotels"
    if flights_searched and not region_changed and _any(R.RESEARCH_WORDS, lower_text):
        return (*T.flights(merged), "show_flights")
    if asks_places and not region:
        return (*T.places(text, R.PLACES_POINTS_OF_INTEREST), "show_places")
    if region and (not places_seen or region_changed):
        return (*T.places(region_label, R.PLACES_RESOLVE_REGION), "show_places")
    trip_known = bool(region and merged.get("check_in_date") and merged.get("party"))
    if trip_known and not flights_searched:
        return (*T.flights(merged), "show_flights")
    if not trip_known:
        return None, None, "collect_missing"
    if picked_flight and picked_hotel:
        return None, None, "summary"
    return None, None, "summarize"
