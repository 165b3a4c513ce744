"""The closed vocabularies of the contract (docs/contract.md §3), in canonical order."""

from __future__ import annotations

from typing import Literal, get_args

CONTRACT_VERSION = "2026.11-oracle-v1"

EventType = Literal["user_message", "user_widget_submit", "user_widget_cta_click"]

ToolId = Literal[
    "mcp/google-places.search_text",
    "mcp/duffel.search_offers",
    "mcp/duffel.create_order",
    "mcp/hotelbeds.search_hotels",
    "mcp/hotelbeds.book_hotel",
    "mcp/hotelbeds-activities.search_activities",
    "mcp/hotelbeds-transfers.search_transfers",
]

#: the render intents that carry nothing but their ``kind`` (every kind but the three with a field of their own)
PlainIntentKind = Literal[
    "show_places",
    "show_flights",
    "flight_detail",
    "order_confirmation",
    "order_detail",
    "show_hotels",
    "hotel_confirmation",
    "show_activities",
    "show_transfers",
    "summary",
    "summarize",
    "calendar_live",
    "trip_map",
]
#: every render intent kind, in the contract's order (nested Literals flatten)
RenderIntentKind = Literal["collect_missing", PlainIntentKind, "clarify", "error"]

ErrorReason = Literal["pii_redacted", "provider_unavailable", "out_of_domain"]
ClarifyReason = Literal["confirmation_required", "contradictory_constraints", "blocker_needs_verification"]
MissingValue = Literal["region", "dates", "party"]

WidgetType = Literal[
    "bot_text",
    "user_text",
    "typing_indicator",
    "date_range_picker",
    "party_picker",
    "place_autocomplete_input",
    "flight_list",
    "flight_card",
    "hotel_list",
    "hotel_card",
    "hotel_compare",
    "activity_list",
    "transfer_list",
    "place_list",
    "place_card",
    "action_chooser",
    "map_view",
    "filter_panel",
    "property_block",
    "itinerary_summary",
    "order_confirmation",
    "hotel_confirmation",
    "notification",
    "error_card",
    "clarify_question",
    "loading_card",
    "calendar_view",
]

EVENT_TYPES: tuple[str, ...] = get_args(EventType)
TOOLS: tuple[str, ...] = get_args(ToolId)
RENDER_INTENT_KINDS: tuple[str, ...] = get_args(RenderIntentKind)
ERROR_REASONS: tuple[str, ...] = get_args(ErrorReason)
CLARIFY_REASONS: tuple[str, ...] = get_args(ClarifyReason)
REFUSAL_REASONS: tuple[str, ...] = ERROR_REASONS + CLARIFY_REASONS
MISSING_VALUES: tuple[str, ...] = get_args(MissingValue)
WIDGET_TYPES: tuple[str, ...] = get_args(WidgetType)

#: Tool ids that must never be emitted (retired or roadmap-only).
RETIRED_TOOLS: tuple[str, ...] = ("mcp/amadeus.search_hotels",)

#: the two passes (the planner's extract_turn and render_widget_chat), in their order
PassName = Literal["extract", "render"]
PASSES: tuple[str, ...] = get_args(PassName)
#: who answers a pass (docs/engines.md §2); the settings, the CLI, the X-Engine header and the metrics read it here
EngineName = Literal["deterministic", "slm", "openai"]
ENGINES: tuple[str, ...] = get_args(EngineName)

#: The eight fallback reasons of docs/engines.md §5.
FALLBACK_REASONS: tuple[str, ...] = (
    "error",
    "timeout",
    "invalid_json",
    "schema_invalid",
    "truncated",
    "out_of_vocab",
    "unavailable",
    "circuit_open",
)
