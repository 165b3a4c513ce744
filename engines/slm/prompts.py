"""Prompts of the slm engine: a short system prompt per pass, then the pass input as compact JSON.

The pass input keeps only the fields that matter (no ids, labels or provenance, no whole tool
payloads). The few-shot examples of the system prompts are small hand-written turns whose
answers are computed by the deterministic oracle when the prompt is built, so they always agree
with the contract; the render prompt also lists, per render intent, the oracle's choice of bot
message and widget plan. System prompts are constant per pass, so their KV cache is reused.
"""

from __future__ import annotations

import functools
import json
from typing import Any

from contracts.extract import ExtractOutput
from contracts.planner import payload_text

SLOT_KEYS_EXTRACT: tuple[str, ...] = (
    "region", "check_in_date", "check_out_date", "nights", "party", "picked_flight_offer_id", "picked_hotel_id",
    "picked_hotel_rate_key", "order_id", "trip_confirmed",
)
SEEN_KEYS: dict[str, str] = {
    "places_seen": "places", "flight_search_results": "flights", "hotel_search_results": "hotels",
}
REGION_KEYS: tuple[str, ...] = ("label", "city_code", "country_code", "kind", "scope")
DATA_LISTS: tuple[str, ...] = ("places", "offers", "hotels", "activities", "transfers")
DATA_OBJECTS: tuple[str, ...] = ("order", "hotel_booking")
PROMPT_STYLES: tuple[str, ...] = ("fewshot", "compact")


def compact(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def _truthy(value: Any) -> bool:
    return bool(value)


def _slots(slot_state: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in SLOT_KEYS_EXTRACT:
        value = slot_state.get(key)
        if not _truthy(value):
            continue
        if key == "region" and isinstance(value, dict):
            value = {k: value[k] for k in REGION_KEYS if value.get(k)}
        out[key] = value
    seen = [name for key, name in SEEN_KEYS.items() if _truthy(slot_state.get(key))]
    if seen:
        out["seen"] = seen
    return out


def extract_input(turn: dict[str, Any]) -> dict[str, Any]:
    """The extract pass input: event, text, widget value, CTA id, relevant slots, error flags."""
    payload = turn.get("event_payload") if isinstance(turn.get("event_payload"), dict) else {}
    doc: dict[str, Any] = {"event": turn.get("event_type") or "user_message"}
    text = payload_text(payload)
    if text:
        doc["text"] = text
    value = payload.get("submitted_value", payload.get("value"))
    if value not in (None, "", {}, []):
        doc["value"] = value
    action = payload.get("action_id")
    if isinstance(action, str) and action:
        doc["action"] = action
    slots = _slots(turn.get("slot_state") if isinstance(turn.get("slot_state"), dict) else {})
    if slots:
        doc["slots"] = slots
    summary = turn.get("tool_summary")
    if turn.get("tool_error") or (isinstance(summary, dict) and (summary.get("isError") or summary.get("ok") is False)):
        doc["provider_error"] = True
    if turn.get("duffel_env"):
        doc["duffel_env"] = turn["duffel_env"]
    return doc


def render_input(turn: dict[str, Any], extraction: dict[str, Any], tool_summary: dict[str, Any]) -> dict[str, Any]:
    """The render pass input: the render intent and first tool, the tool result's status and card counts."""
    doc: dict[str, Any] = {"event": turn.get("event_type") or "user_message"}
    intent = extraction.get("render_intent") if isinstance(extraction, dict) else None
    doc["intent"] = intent if isinstance(intent, dict) else {"kind": "summarize"}
    requests = extraction.get("tool_requests") if isinstance(extraction, dict) else None
    if isinstance(requests, list) and requests and isinstance(requests[0], dict) and requests[0].get("tool"):
        doc["request"] = requests[0]["tool"]
    ts = tool_summary if isinstance(tool_summary, dict) else {}
    result: dict[str, Any] = {"tool": ts.get("tool") or "", "ok": ts.get("ok", True)}
    data = ts.get("data") if isinstance(ts.get("data"), dict) else {}
    for key in DATA_LISTS:
        if isinstance(data.get(key), list):
            result[key] = len(data[key])
    for key in DATA_OBJECTS:
        if isinstance(data.get(key), dict):
            result[key] = True
    if data.get("order_id"):
        result["order"] = True
    doc["result"] = result
    return doc


# --- compact inputs (prompt_style=compact): what the trained model reads, in the fewest tokens ------------

#: slot -> how a compact prompt names its presence (the region also carries its city code).
COMPACT_SLOTS: tuple[tuple[str, str], ...] = (
    ("check_in_date", "dates"), ("party", "party"), ("places_seen", "places_seen"),
    ("flight_search_results", "flights_seen"), ("picked_flight_offer_id", "flight_picked"), ("order_id", "ordered"),
    ("hotel_search_results", "hotels_seen"), ("picked_hotel_id", "hotel_picked"),
    ("picked_hotel_rate_key", "rate_key"), ("trip_confirmed", "confirmed"),
)


def extract_input_compact(turn: dict[str, Any]) -> dict[str, Any]:
    """The extract input of a trained model: the event, its text/value/action, and which slots are set."""
    doc = extract_input(turn)
    slot = turn.get("slot_state") if isinstance(turn.get("slot_state"), dict) else {}
    have: list[str] = []
    region = slot.get("region")
    if region:
        code = region.get("city_code") if isinstance(region, dict) else None
        have.append(f"region:{code}" if isinstance(code, str) and code else "region")
    have.extend(name for key, name in COMPACT_SLOTS if _truthy(slot.get(key)))
    doc.pop("slots", None)
    doc.pop("duffel_env", None)  # copied into create_order by code, never decided by the model
    if have:
        doc["slots"] = have
    return doc


def render_input_compact(turn: dict[str, Any], extraction: dict[str, Any], tool_summary: dict[str, Any]) -> dict:
    """The render input of a trained model: intent, tool result status and card counts; short tool names."""
    doc = render_input(turn, extraction, tool_summary)
    doc.pop("event", None)
    request = doc.pop("request", None)
    result = doc.pop("result")
    tool = result.pop("tool") or request or ""
    doc["tool"] = tool.removeprefix("mcp/")
    doc.update(result)
    return doc


# --- system prompts -------------------------------------------------------------------------------------

EXTRACT_RULES = (
    "You are the extraction step of a travel planner. Read one chat turn (JSON) and answer with one "
    "JSON object: slot_updates (only slots this turn changes: region, check_in_date, check_out_date, "
    "nights, party, picked_flight_offer_id, picked_hotel_id), tool_requests (empty, or one provider "
    "call whose arguments copy the known slots, null when unknown, adults 1 by default) and "
    "render_intent (what to show next). Ask for what is missing (region, dates, party) with "
    "collect_missing. Refuse with kind error or clarify and a reason when the turn holds card or "
    "passport numbers, the provider failed, the request is out of travel, or a booking needs a choice."
)

RENDER_RULES = (
    "You are the reply step of a travel planner. Given the render intent and the tool result of one "
    "turn, pick the bot message and one or two widgets (type and variant). A failed provider result "
    "gets the error message and an error_card. Intent to reply:"
)

# Hand-written example turns; their answers come from the oracle when the prompt is built.
_EXAMPLE_TURNS: tuple[dict[str, Any], ...] = (
    {"event_type": "user_message", "event_payload": {"text": "Planning a getaway, no idea where yet"},
     "slot_state": {}},
    {"event_type": "user_message", "event_payload": {"text": "Show me hotels in Lisbon"}, "slot_state": {}},
    {"event_type": "user_widget_submit",
     "event_payload": {"submitted_value": {"from": "2026-05-02", "to": "2026-05-06"}},
     "slot_state": {"region": {"label": "Rome", "city_code": "ROM", "country_code": "IT", "kind": "city"}}},
    {"event_type": "user_message", "event_payload": {"text": "any flights for us?"},
     "slot_state": {"region": {"label": "Tokyo", "city_code": "TYO", "country_code": "JP", "kind": "city"},
                    "check_in_date": "2026-09-01", "check_out_date": "2026-09-08", "nights": 7,
                    "party": {"rooms": 1, "adults": 2, "children": []}}},
    {"event_type": "user_widget_cta_click", "event_payload": {"action_id": "pick_offer:off_TYO_2"},
     "slot_state": {"region": {"label": "Tokyo", "city_code": "TYO", "country_code": "JP", "kind": "city"},
                    "flight_search_results": ["off_TYO_1", "off_TYO_2"]}},
    {"event_type": "user_message", "event_payload": {"text": "can you do my taxes"}, "slot_state": {}},
)


def _canonical_extract(doc: dict[str, Any]) -> dict[str, Any]:
    """The oracle's extraction in the grammar's key order."""
    return ExtractOutput.model_validate(doc).as_json()


@functools.cache
def extract_system_prompt() -> str:
    from engines.deterministic.extract import extract

    lines = [EXTRACT_RULES, "Examples:"]
    for turn in _EXAMPLE_TURNS:
        lines.append("In: " + compact(extract_input(turn)))
        lines.append("Out: " + compact(_canonical_extract(extract(turn))))
    return "\n".join(lines)


@functools.cache
def render_system_prompt() -> str:
    from contracts.vocab import MISSING_VALUES, RENDER_INTENT_KINDS
    from engines.deterministic.extract import extract
    from engines.deterministic.fixtures import fixture
    from engines.deterministic.render import merged_slot, render_plan

    lines = [RENDER_RULES]
    ok = {"ok": True, "tool": "", "data": {}}
    for kind in RENDER_INTENT_KINDS:
        if kind == "collect_missing":
            for missing in MISSING_VALUES:
                message, plan = render_plan({"render_intent": {"kind": kind, "missing": [missing]}}, ok)
                lines.append(f"- collect_missing first missing {missing}: {message!r} "
                             + " + ".join(f"{t}/{v}" for t, v in plan))
            continue
        message, plan = render_plan({"render_intent": {"kind": kind}}, ok)
        lines.append(f"- {kind}: {message!r} " + " + ".join(f"{t}/{v}" for t, v in plan))
    failed = {"ok": False, "tool": "mcp/duffel.search_offers", "data": {}}
    message, plan = render_plan({"render_intent": {"kind": "show_flights"}}, failed)
    lines.append(f"- any intent, result ok false: {message!r} " + " + ".join(f"{t}/{v}" for t, v in plan))
    lines.append("Examples:")
    for turn in _EXAMPLE_TURNS[:4]:
        extraction = extract(turn)
        summary = fixture(extraction, merged_slot(turn, extraction))
        message, plan = render_plan(extraction, summary)
        lines.append("In: " + compact(render_input(turn, extraction, summary)))
        lines.append("Out: " + compact({"bot_message": message,
                                        "widgets": [{"widget_type": t, "variant": v} for t, v in plan]}))
    lines.append("Answer with JSON only.")
    return "\n".join(lines)


# Compact prompts: for a model trained on this task (``prompt_style=compact``); no examples, so the
# prompt is short and the same text is used at training and at serving time (:func:`completion`).
EXTRACT_COMPACT_PLAN = "travel-slm extract: answer the turn's plan as JSON."
EXTRACT_COMPACT_FULL = "travel-slm extract: answer the turn's extraction as JSON."
RENDER_COMPACT = "travel-slm render: answer the reply plan as JSON."


def extract_messages(turn: dict[str, Any], style: str = "fewshot", *, plan: bool = False) -> list[dict[str, str]]:
    """The extract pass prompt; ``style=compact`` for a trained model (``plan`` picks its instruction)."""
    if style == "compact":
        system = EXTRACT_COMPACT_PLAN if plan else EXTRACT_COMPACT_FULL
        return [{"role": "system", "content": system}, {"role": "user", "content": compact(extract_input_compact(turn))}]
    return [{"role": "system", "content": extract_system_prompt()},
            {"role": "user", "content": compact(extract_input(turn))}]


def render_messages(
    turn: dict[str, Any], extraction: dict[str, Any], tool_summary: dict[str, Any], *, full: bool = False,
    style: str = "fewshot",
) -> list[dict[str, str]]:
    system = RENDER_COMPACT if style == "compact" else render_system_prompt()
    if full:
        system += ("\nWrite every widget as a whole envelope {schema_version:1, widget_type, variant, payload}, "
                   "payload items copied from the tool result.")
        user = {**render_input(turn, extraction, tool_summary), "data": (tool_summary or {}).get("data") or {}}
        return [{"role": "system", "content": system}, {"role": "user", "content": compact(user)}]
    read = render_input_compact if style == "compact" else render_input
    return [{"role": "system", "content": system},
            {"role": "user", "content": compact(read(turn, extraction, tool_summary))}]


def completion(document: dict[str, Any]) -> str:
    """The text a model is trained to write for ``document``: compact JSON in the grammar's key order."""
    return compact(document)
