"""The ``plan`` extract mode: the model emits only what needs language understanding.

A trained model answers the extract pass with an :class:`ExtractPlan`, a small document whose
deciding field comes first::

    {"kind": "show_hotels", "call": true, "region": "Paris", "dates": ["2026-10-10", "2026-10-14"], "adults": 2}

- ``kind``: the render-intent kind; ``reason`` for ``error`` / ``clarify``;
- ``call`` (``show_hotels``, ``hotel_confirmation``): whether the turn calls the provider;
- ``query`` (``show_places``): search the user's ``text`` or the ``region`` label;
- ``region`` (a gazetteer label), ``dates`` (check-in, check-out) and ``adults``: the slot values
  read from free text.

:func:`realise` derives the contract document from it with the oracle's own functions: slot
updates of widget submits and CTA clicks are parsed from the structured payload (no language in
them), ``nights``, region codes and ``missing`` follow from the slots, and the tool request and
its arguments follow from the kind and the merged slots (:mod:`engines.deterministic.tools`).
:func:`plan_of` is the inverse on the oracle's answers: it writes the training targets, and
``realise(turn, plan_of(turn, extract(turn))) == extract(turn)`` holds on every reference turn
(tests/test_extract_plan.py).
"""

from __future__ import annotations

import functools
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from contracts.planner import payload_text
from contracts.vocab import CLARIFY_REASONS, ERROR_REASONS, RENDER_INTENT_KINDS
from engines.deterministic import rules as R
from engines.deterministic import tools as T
from engines.deterministic.extract import day_diff, event_slot_updates, place_slot

FREE_TEXT_EVENTS_EXCLUDED: tuple[str, ...] = ("user_widget_submit", "user_widget_cta_click")
CALL_KINDS: tuple[str, ...] = ("show_hotels", "hotel_confirmation")
"""Kinds whose turn may or may not call the provider: the plan says which (``call``)."""
PLACES_QUERIES: tuple[str, ...] = ("text", "region")


@functools.cache
def regions_by_label() -> dict[str, dict[str, Any]]:
    """Gazetteer label -> the region slot the oracle writes for it (first entry wins)."""
    out: dict[str, dict[str, Any]] = {}
    for _needle, label, code, cc, kind in R.GAZETTEER:
        out.setdefault(label, place_slot(label, code, cc, kind))
    return out


def region_labels() -> tuple[str, ...]:
    return tuple(regions_by_label())


IsoDate = Annotated[str, StringConstraints(pattern=r"^\d{4}-\d{2}-\d{2}$")]


@functools.cache
def plan_model() -> type[BaseModel]:
    """The pydantic model of an extract plan (validation after decoding; the grammar is its schema)."""
    from pydantic import create_model

    return create_model(
        "ExtractPlan",
        __config__=ConfigDict(extra="forbid"),
        kind=(Literal[RENDER_INTENT_KINDS], ...),  # type: ignore[valid-type]
        reason=(Literal[ERROR_REASONS + CLARIFY_REASONS] | None, None),  # type: ignore[valid-type]
        call=(bool | None, None),
        query=(Literal[PLACES_QUERIES] | None, None),  # type: ignore[valid-type]
        region=(Literal[region_labels()] | None, None),  # type: ignore[valid-type]
        dates=(Annotated[list[IsoDate], Field(min_length=2, max_length=2)] | None, None),
        adults=(Annotated[int, Field(ge=0, le=99)] | None, None),
    )


def _slots_schema() -> dict[str, Any]:
    date = {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}$"}
    return {
        "region": {"enum": list(region_labels())},
        "dates": {"type": "array", "items": date, "minItems": 2, "maxItems": 2},
        "adults": {"type": "integer", "minimum": 0, "maximum": 99},
    }


def _branch(kinds: tuple[str, ...], decider: tuple[str, dict[str, Any]] | None) -> dict[str, Any]:
    props: dict[str, Any] = {"kind": {"enum": list(kinds)}}
    required = ["kind"]
    if decider is not None:
        props[decider[0]] = decider[1]
        required.append(decider[0])
    props.update(_slots_schema())
    return {"type": "object", "properties": props, "required": required, "additionalProperties": False}


@functools.cache
def plan_schema() -> dict[str, Any]:
    """The decoding grammar: one branch per decider, the kind first, slot values last."""
    special = {"error", "clarify", "show_places", *CALL_KINDS}
    plain = tuple(k for k in RENDER_INTENT_KINDS if k not in special)
    return {"title": "ExtractPlan", "anyOf": [
        _branch(("error",), ("reason", {"enum": list(ERROR_REASONS)})),
        _branch(("clarify",), ("reason", {"enum": list(CLARIFY_REASONS)})),
        _branch(("show_places",), ("query", {"enum": list(PLACES_QUERIES)})),
        _branch(CALL_KINDS, ("call", {"type": "boolean"})),
        _branch(plain, None),
    ]}


def _free_text(turn: dict[str, Any]) -> bool:
    return (turn.get("event_type") or "user_message") not in FREE_TEXT_EVENTS_EXCLUDED


def plan_of(turn: dict[str, Any], extraction: dict[str, Any]) -> dict[str, Any]:
    """The plan a perfect model writes for ``turn``, read off the oracle's ``extraction``."""
    intent = extraction.get("render_intent") or {}
    kind = intent.get("kind")
    plan: dict[str, Any] = {"kind": kind}
    requests = extraction.get("tool_requests") or []
    if kind in ("error", "clarify"):
        plan["reason"] = intent.get("reason")
    elif kind == "show_places":
        args = requests[0]["arguments"] if requests else {}
        plan["query"] = "text" if args.get("max_results") == R.PLACES_POINTS_OF_INTEREST else "region"
    elif kind in CALL_KINDS:
        plan["call"] = bool(requests)
    if _free_text(turn):
        updates = extraction.get("slot_updates") or {}
        if "region" in updates:
            plan["region"] = updates["region"]["label"]
        if "check_in_date" in updates:
            plan["dates"] = [updates["check_in_date"], updates["check_out_date"]]
        if "party" in updates:
            plan["adults"] = updates["party"]["adults"]
    return plan


def _text_updates(turn: dict[str, Any], plan: dict[str, Any]) -> dict[str, Any]:
    """Slot updates from the values the model read in free text, applied as the oracle applies them."""
    slot = turn.get("slot_state") or {}
    updates: dict[str, Any] = {}
    label = plan.get("region")
    hit = regions_by_label().get(label) if isinstance(label, str) else None
    if hit is not None:
        old = slot.get("region")
        if not old or hit["city_code"] != (old.get("city_code") if isinstance(old, dict) else None):
            updates["region"] = dict(hit)
    dates = plan.get("dates")
    if isinstance(dates, list) and len(dates) == 2 and not slot.get("check_in_date"):
        updates["check_in_date"], updates["check_out_date"] = dates
        updates["nights"] = day_diff(*dates)
    adults = plan.get("adults")
    if isinstance(adults, int) and not slot.get("party"):
        updates["party"] = {"rooms": 1, "adults": adults, "children": []}
    return updates


def _request(kind: str, plan: dict[str, Any], turn: dict[str, Any], merged: dict[str, Any]) -> tuple | None:
    if kind == "show_places":
        label = (merged.get("region") or {}).get("label") if isinstance(merged.get("region"), dict) else ""
        if plan.get("query") == "region":
            return T.places(label or "", R.PLACES_RESOLVE_REGION)
        return T.places(payload_text(turn.get("event_payload") or {}) or label or "", R.PLACES_POINTS_OF_INTEREST)
    if kind == "show_flights":
        return T.flights(merged)
    if kind == "show_transfers":
        return T.transfers(merged)
    if kind == "show_activities":
        return T.activities(merged)
    if kind == "order_confirmation":
        return T.create_order(turn, merged)
    if kind == "show_hotels" and plan.get("call", True):
        return T.hotels(merged)
    if kind == "hotel_confirmation" and plan.get("call", True):
        return T.book_hotel(merged)
    return None


def realise(turn: dict[str, Any], plan: dict[str, Any]) -> dict[str, Any]:
    """Plan -> ``{slot_updates, tool_requests, render_intent}`` (the extract contract document)."""
    slot = turn.get("slot_state") or {}
    updates = _text_updates(turn, plan) if _free_text(turn) else event_slot_updates(turn)
    merged = {**slot, **updates}
    kind = plan.get("kind")
    if kind in ("error", "clarify"):
        return {"slot_updates": updates, "tool_requests": [],
                "render_intent": {"kind": kind, "reason": plan.get("reason")}}
    intent: dict[str, Any] = {"kind": kind}
    if kind == "collect_missing":
        intent["missing"] = [name for name, have in (("region", merged.get("region")),
                                                     ("dates", merged.get("check_in_date")),
                                                     ("party", merged.get("party"))) if not have]
    request = _request(kind, plan, turn, merged)
    return {"slot_updates": updates,
            "tool_requests": [{"tool": request[0], "arguments": request[1]}] if request else [],
            "render_intent": intent}
