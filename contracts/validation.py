"""Validation of pass outputs against the contract models (strict: parsed JSON, no coercion)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from contracts.extract import ExtractOutput
from contracts.vocab import RENDER_INTENT_KINDS, TOOLS, WIDGET_TYPES

Problem = Literal["out_of_vocab", "schema_invalid"]


def _messages(exc: ValidationError, limit: int = 5) -> list[str]:
    out = []
    for err in exc.errors(include_url=False)[:limit]:
        loc = ".".join(str(p) for p in err["loc"]) or "<root>"
        out.append(f"{loc}: {err['msg']}")
    return out


def _errors(model: type[BaseModel], doc: Any) -> list[str]:
    """The first messages of ``doc`` validated strictly as ``model``; empty when it is valid."""
    try:
        model.model_validate(doc, strict=True)
    except ValidationError as exc:
        return _messages(exc)
    return []


def extract_errors(doc: Any) -> list[str]:
    """Empty when ``doc`` is a valid extract output."""
    return _errors(ExtractOutput, doc)


def render_errors(doc: Any) -> list[str]:
    """Empty when ``doc`` is a valid render output (envelopes and every payload)."""
    from contracts.render import RenderOutput

    return _errors(RenderOutput, doc)


def envelope_validity(doc: Any) -> tuple[int, int]:
    """``(valid envelopes, envelopes)`` of a render output; a non-list ``widgets`` counts as one invalid."""
    from contracts.widgets import Envelope

    widgets = doc.get("widgets") if isinstance(doc, dict) else None
    if not isinstance(widgets, list) or not widgets:
        return 0, 1
    valid = 0
    for env in widgets:
        try:
            Envelope.model_validate(env, strict=True)
            valid += 1
        except ValidationError:
            pass
    return valid, len(widgets)


def tools_in_vocab(doc: Any) -> bool:
    """Every tool request names one of the 7 live tools (no request is in vocabulary)."""
    requests = doc.get("tool_requests") if isinstance(doc, dict) else None
    if requests is None:
        return True
    if not isinstance(requests, list):
        return False
    return all(isinstance(r, dict) and r.get("tool") in TOOLS for r in requests)


def intent_in_vocab(doc: Any) -> bool:
    intent = doc.get("render_intent") if isinstance(doc, dict) else None
    return isinstance(intent, dict) and intent.get("kind") in RENDER_INTENT_KINDS


def widgets_in_vocab(doc: Any) -> bool:
    widgets = doc.get("widgets") if isinstance(doc, dict) else None
    return isinstance(widgets, list) and all(isinstance(w, dict) and w.get("widget_type") in WIDGET_TYPES
                                             for w in widgets)


def extract_problem(doc: Any) -> tuple[Problem, str] | None:
    """Why an extract output may not be served: ``out_of_vocab`` before ``schema_invalid``."""
    if not tools_in_vocab(doc) or not intent_in_vocab(doc):
        return "out_of_vocab", "tool or render-intent kind outside the contract vocabulary"
    errors = extract_errors(doc)
    return ("schema_invalid", "; ".join(errors)) if errors else None


def render_problem(doc: Any) -> tuple[Problem, str] | None:
    if isinstance(doc, dict) and isinstance(doc.get("widgets"), list) and not widgets_in_vocab(doc):
        return "out_of_vocab", "widget type outside the contract vocabulary"
    errors = render_errors(doc)
    return ("schema_invalid", "; ".join(errors)) if errors else None


def slot_state_problems(slot_state: Any) -> list[str]:
    """Where a turn's ``slot_state`` holds a value the contract's slot types refuse: the dotted locations
    (``region.label``) of the keys :class:`contracts.extract.SlotUpdates` knows; null values and unknown keys
    are not problems. Consulted only once a served document already failed validation, to tell a client's
    bad input from an oracle defect."""
    from contracts.extract import SlotUpdates

    if not isinstance(slot_state, dict):
        return ["slot_state"]
    known = {k: v for k, v in slot_state.items() if k in SlotUpdates.model_fields and v is not None}
    try:
        SlotUpdates.model_validate(known)
    except ValidationError as exc:
        return [".".join(str(p) for p in err["loc"]) for err in exc.errors(include_url=False)]
    return []
