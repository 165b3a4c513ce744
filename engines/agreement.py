"""Field-level agreement between two answers of the same pass.

One code path: ``travel-slm eval`` metrics and shadow-record ``agreement`` fields both come from
these functions (docs/shadow.md §5 and docs/evaluation.md §4).
"""

from __future__ import annotations

from typing import Any

EXTRACT_FIELDS: tuple[str, ...] = ("tool_match", "arg_match", "slot_match", "render_intent_match")
RENDER_FIELDS: tuple[str, ...] = ("widget_type_match", "bot_message_match")
FIELDS: tuple[str, ...] = EXTRACT_FIELDS + RENDER_FIELDS


def _first_request(extract: Any) -> dict[str, Any] | None:
    requests = extract.get("tool_requests") if isinstance(extract, dict) else None
    if isinstance(requests, list) and requests and isinstance(requests[0], dict):
        return requests[0]
    return None


def first_tool(extract: Any) -> str:
    """The first request's tool id; no request is ``""``."""
    first = _first_request(extract)
    tool = first.get("tool") if first else ""
    return tool if isinstance(tool, str) else ""


def first_arguments(extract: Any) -> Any:
    """The first request's arguments; no request is ``{}``."""
    first = _first_request(extract)
    return first.get("arguments", {}) if first else {}


def intent_kind(extract: Any) -> str | None:
    intent = extract.get("render_intent") if isinstance(extract, dict) else None
    return intent.get("kind") if isinstance(intent, dict) else None


def widget_types(render: Any) -> list[str]:
    widgets = render.get("widgets") if isinstance(render, dict) else None
    if not isinstance(widgets, list):
        return []
    return [w.get("widget_type") for w in widgets if isinstance(w, dict)]


def extract_agreement(a: Any, b: Any) -> dict[str, bool]:
    return {
        "tool_match": first_tool(a) == first_tool(b),
        "arg_match": first_arguments(a) == first_arguments(b),
        "slot_match": (a.get("slot_updates") if isinstance(a, dict) else None)
        == (b.get("slot_updates") if isinstance(b, dict) else None),
        "render_intent_match": intent_kind(a) == intent_kind(b),
    }


def render_agreement(a: Any, b: Any) -> dict[str, bool]:
    return {
        "widget_type_match": widget_types(a) == widget_types(b),
        "bot_message_match": (a.get("bot_message") if isinstance(a, dict) else None)
        == (b.get("bot_message") if isinstance(b, dict) else None),
    }


def turn_class(extract: Any) -> str:
    """A bounded class label: ``<render_intent kind>|<first tool or 'none'>``."""
    return f"{intent_kind(extract) or 'unknown'}|{first_tool(extract) or 'none'}"
