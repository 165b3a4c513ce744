"""contracts/widgets.py is equivalent to the reference widget JSON Schemas (docs/contract.md §6).

Every check runs the same document through both sides and compares the verdicts:

* the pydantic side: ``Envelope.model_validate(env, strict=True)`` (envelope + payload), and
  ``payload_errors`` / ``TYPED_ENVELOPES`` where relevant;
* the reference side: ``jsonschema.Draft7Validator`` with a ``FormatChecker`` and a ``referencing``
  registry (so ``{"$ref": "flight_card.schema.json"}`` resolves), on ``_envelope.schema.json`` plus
  the payload schema of the envelope's widget_type.

Cases: all 4,408 labelled corpus lines, hand-made valid payloads for all 27 widget types,
hand-made invalid envelopes and payloads, boundary documents both must accept, and schema-driven
mutations (delete each required key, add an unknown key, put a value of a wrong JSON type) of a
full payload of every widget type.

``jsonschema`` checks ``format: date-time`` only with ``rfc3339-validator`` installed and
``format: uri`` only with ``rfc3987`` or ``rfc3986-validator`` installed. Where one is missing, the
reference side falls back to ``contracts.widgets.is_date_time`` / ``is_uri`` (see
``FALLBACK_FORMATS``); those two functions are checked on their own against fixed case lists and,
when installed, against the third-party checkers.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft7Validator, FormatChecker
from pydantic import ValidationError
from referencing import Registry, Resource

from contracts import widgets
from contracts.vocab import WIDGET_TYPES
from contracts.widgets import PAYLOAD_MODELS, TYPED_ENVELOPES, Envelope, payload_errors

REFERENCE = Path(__file__).resolve().parents[1].parent / "shared" / "reference"
SCHEMAS_DIR = REFERENCE / "schemas"
CORPORA_DIR = REFERENCE / "corpora"

if not (SCHEMAS_DIR / "_envelope.schema.json").is_file():
    pytest.skip(
        f"reference widget schemas not found at {SCHEMAS_DIR} (the read-only shared/ folder beside the repo)",
        allow_module_level=True,
    )

# --------------------------------------------------------------------------------------------
# The reference side
# --------------------------------------------------------------------------------------------

ENVELOPE_SCHEMA: dict[str, Any] = json.loads((SCHEMAS_DIR / "_envelope.schema.json").read_text())
PAYLOAD_SCHEMAS: dict[str, dict[str, Any]] = {
    wt: json.loads((SCHEMAS_DIR / f"{wt}.schema.json").read_text()) for wt in WIDGET_TYPES
}
SCHEMAS_BY_FILE = {f"{wt}.schema.json": schema for wt, schema in PAYLOAD_SCHEMAS.items()}
REGISTRY = Registry().with_resources(
    (schema["$id"], Resource.from_contents(schema)) for schema in [ENVELOPE_SCHEMA, *PAYLOAD_SCHEMAS.values()]
)


def _format_checker() -> tuple[FormatChecker, list[str]]:
    checker = FormatChecker()
    fallbacks = []
    for name, func in (("date-time", widgets.is_date_time), ("uri", widgets.is_uri)):
        if name not in checker.checkers:
            # Like jsonschema's own checkers: a format only constrains strings.
            checker.checks(name)(lambda value, func=func: not isinstance(value, str) or func(value))
            fallbacks.append(name)
    return checker, fallbacks


FORMAT_CHECKER, FALLBACK_FORMATS = _format_checker()
ENVELOPE_VALIDATOR = Draft7Validator(ENVELOPE_SCHEMA, registry=REGISTRY, format_checker=FORMAT_CHECKER)
PAYLOAD_VALIDATORS = {
    wt: Draft7Validator(schema, registry=REGISTRY, format_checker=FORMAT_CHECKER)
    for wt, schema in PAYLOAD_SCHEMAS.items()
}


def _path(error: Any) -> str:
    return "/".join(str(part) for part in error.absolute_path) or "<root>"


def js_payload_errors(widget_type: str, payload: Any) -> list[str]:
    return [f"{_path(e)}: {e.message}" for e in PAYLOAD_VALIDATORS[widget_type].iter_errors(payload)]


def js_errors(env: Any) -> list[str]:
    """Reference verdict on an envelope: the envelope schema, then its widget_type's payload schema."""
    errors = [f"{_path(e)}: {e.message}" for e in ENVELOPE_VALIDATOR.iter_errors(env)]
    if isinstance(env, dict):
        wt, payload = env.get("widget_type"), env.get("payload")
        if isinstance(wt, str) and wt in PAYLOAD_VALIDATORS and isinstance(payload, dict):
            errors += [f"payload/{line}" for line in js_payload_errors(wt, payload)]
    return errors


def py_errors(env: Any) -> list[str]:
    try:
        Envelope.model_validate(env, strict=True)
    except ValidationError as exc:
        return widgets.format_validation_error(exc)
    return []


def envelope(widget_type: str, payload: Any, **extra: Any) -> dict[str, Any]:
    variant = {"date_range_picker": "compact"}.get(widget_type, "default")
    return {
        "schema_version": 1,
        "widget_type": widget_type,
        "variant": variant,
        "payload": copy.deepcopy(payload),
        **extra,
    }


# --------------------------------------------------------------------------------------------
# Hand-made valid payloads (FULL: every optional key the schema has, where sensible)
# --------------------------------------------------------------------------------------------

AIRLINE = {
    "iata_code": "BA",
    "name": "British Airways",
    "logo_symbol_url": "https://assets.example.com/ba.svg",
    "logo_lockup_url": "",
    "conditions_of_carriage_url": "https://www.britishairways.com/coc",
    "id": "arl_00009VME7DBKeMags5CliQ",
}
SEGMENT_FULL = {
    "departure": {
        "iata": "LHR",
        "iataCode": "LHR",
        "at": "2026-07-10T08:00:00",
        "city": "London",
        "city_iata": "LON",
        "airport_name": "Heathrow",
        "country_code": "GB",
        "time_zone": "Europe/London",
        "terminal": "5",
        "type": "airport",
    },
    "arrival": {"iata": "JFK", "at": "2026-07-10T11:05:00"},
    "carrier": "BA",
    "flight_number": "BA117",
    "duration": "PT8H5M",
    "stops": 0,
    "id": "seg_1",
    "carrierCode": "BA",
    "carrier_name": "British Airways",
    "airline": AIRLINE,
    "marketing_carrier": {"iata_code": "BA"},
    "operating_carrier": "AA",
    "operating_carrier_name": "American Airlines",
    "operating_airline": None,
    "operating_flight_number": "AA6139",
    "number": "117",
    "aircraft": {"iata_code": "77W", "name": "Boeing 777-300ER"},
    "cabin_class": "economy",
    "distance": None,
    "numberOfStops": 1,
    "technical_stops": [{"iata": "SNN", "duration": "PT1H"}],
}
FLIGHT_CARD_MIN = {
    "offer_id": "off_PAR_1",
    "price": {"total": "480.00", "currency": "USD"},
    "itineraries": [
        {
            "segments": [
                {
                    "departure": {"iata": "SFO", "at": "2026-09-10T08:00:00"},
                    "arrival": {"iata": "PAR", "at": "2026-09-10T14:30:00"},
                    "carrier": "AA",
                    "duration": "PT6H30M",
                }
            ]
        }
    ],
    "carriers": ["AA"],
    "duration": "PT6H30M",
    "stops": 0,
}
FLIGHT_CARD_FULL = {
    "offer_id": "off_0000AgDl2tRk",
    "price": {"total": "612.40", "currency": "GBP", "base": "500.00", "tax": None},
    "itineraries": [
        {
            "duration": "PT8H5M",
            "segments": [SEGMENT_FULL],
            "id": "sli_1",
            "direction": "outbound",
            "origin": {"iata": "LHR", "city": "London"},
            "destination": {"iata": "JFK", "airport_name": "John F. Kennedy"},
            "stops": 0,
        }
    ],
    "carriers": ["BA"],
    "duration": "PT8H5M",
    "stops": 0,
    "validating_airline": "BA",
    "ctas": ["view_details", "book_this"],
    "ai_adjustments": {
        "emphasis": "cheapest",
        "annotations": [{"target": "price", "text": "Lowest fare this week", "kind": "success"}],
    },
    "direction": "one-way",
    "airline": AIRLINE,
    "airlines": [AIRLINE, {"iata_code": "AA"}],
    "baggage": {"checked": 1, "carry_on": 1, "known": True},
    "conditions": {"changeable": True, "refundable": None},
    "baggage_options": [
        {
            "scope": "included",
            "type": "checked",
            "quantity": 1,
            "amount": None,
            "currency": None,
            "service_id": None,
            "max_weight_kg": 23,
            "max_height_cm": 90.5,
            "max_length_cm": None,
            "max_depth_cm": None,
            "segment_ids": ["seg_1"],
            "passenger_ids": ["pas_1"],
        }
    ],
    "baggage_known": True,
    "conditions_options": [
        {
            "scope": "slice",
            "type": "change_before_departure",
            "key": "change",
            "allowed": None,
            "penalty_amount": "50.00",
            "penalty_currency": None,
            "slice_id": "sli_1",
            "slice_direction": "outbound",
        }
    ],
    "conditions_known": False,
    "fare_brand": None,
    "passenger_count": 2,
    "expires_at": "2026-07-01T12:00:00Z",
    "live_mode": False,
}
HOTEL_CARD_MIN = {
    "hotel_id": "hotel_PAR_1",
    "name": "Paris Grand Hotel 1",
    "score": 8.5,
    "photos": [],
    "amenities": [],
    "currency": "EUR",
}
HOTEL_CARD_FULL = {
    "hotel_id": "hotel_PAR_2",
    "name": "Paris Grand Hotel 2",
    "location": {"lat": 48.8566, "lng": 2, "city": "Paris"},
    "star_rating": 4,
    "score": 8.7,
    "score_count": 302,
    "thumb_up_count": 12,
    "thumb_down_count": 0,
    "photos": ["https://example.com/h2.jpg", "https://cdn.example.com/h2-b.jpg?w=640#x"],
    "amenities": ["wifi", "pool"],
    "price_per_night": 220.5,
    "currency": "EUR",
    "rooms_matching": 2,
    "available_rooms": 5,
    "address": "1 Rue de Rivoli",
    "distance_from_center": "0.4 km",
    "rate_key": "20260710|20260714|W|1|1234|DBL.ST|ID_B2B_26|RO|",
    "ctas": ["watch_in_detail", "show_numbers", "book"],
    "ai_adjustments": {
        "emphasis": "best_value",
        "annotations": [{"target": "score", "text": "Great location"}],
        "upsell_banner": {"text": "Upgrade to a suite", "action_label": "See suites"},
    },
}
PLACE_CARD_FULL = {
    "place_id": "ChIJD7fiBh9u5kcRYJSMaMOCCwQ",
    "name": "Louvre Museum",
    "types": ["museum", "tourist_attraction"],
    "photos": ["https://example.com/p1.jpg"],
    "rating": 4.7,
    "rating_count": 250000,
    "opening_hours": "09:00-18:00",
    "address": "Rue de Rivoli, 75001 Paris",
    "ctas": ["view_details", "add_to_itinerary"],
}
CALENDAR_EVENT_FULL = {
    "event_id": "evt_1",
    "type": "flight_depart",
    "start_at": "2026-07-10T08:00:00Z",
    "end_at": "2026-07-10T11:05:00-04:00",
    "timezone": "Europe/London",
    "title": "BA117 to New York",
    "location": "",
    "notes": None,
    "source_order_id": "ord_1",
    "source_hotel_id": None,
    "created_at": "2026-06-01T09:30:12.123456+02:00",
    "updated_at": None,
    "google_calendar_event_id": None,
}

FULL: dict[str, dict[str, Any]] = {
    "bot_text": {"text": "Here are **3** hotels.", "timestamp": "2026-07-10T08:00:00Z", "markdown": True},
    "user_text": {
        "text": "Paris in July",
        "timestamp": "2026-07-10T08:00:00.5+02:00",
        "user_avatar_url": "https://example.com/u/1.png",
    },
    "typing_indicator": {"agent_name": "AdionaBot"},
    "date_range_picker": {
        "min_date": "2026-01-01",
        "max_date": "2026-12-31",
        "default_from": "2026-07-10",
        "default_to": "2026-07-14",
        "locale": "ru",
        "submit": "submit",
        "submitted_value": {"from": "2026-07-10", "to": "2026-07-14", "nights": 4},
    },
    "party_picker": {
        "rooms_max": 4,
        "adults_max": 8,
        "children_max": 0,
        "allow_child_ages": True,
        "submitted_value": {"rooms": 1, "adults": 2, "children": [{"age": 0}, {"age": 17}]},
    },
    "place_autocomplete_input": {
        "placeholder": "Search a destination",
        "suggestions": [
            {"label": "Paris", "id": "PAR", "kind": "city"},
            {"label": "CDG", "id": "CDG", "kind": "airport"},
        ],
        "submit_on_select": True,
        "submitted_value": {"label": "Eiffel Tower", "id": "eiffel", "kind": "landmark"},
    },
    "flight_list": {
        "title": "Flights to New York",
        "items": [FLIGHT_CARD_MIN, FLIGHT_CARD_FULL],
        "emphasis_offer_id": "off_PAR_1",
        "total_count": 2,
        "currency": "USD",
    },
    "flight_card": FLIGHT_CARD_FULL,
    "hotel_list": {
        "title": "Hotels in Paris",
        "items": [HOTEL_CARD_MIN, HOTEL_CARD_FULL],
        "total_count": 2,
        "filter_summary": "4+ stars",
        "upsell_banner": {"text": "Members save 10%", "action_label": "Join", "action_id": "join"},
    },
    "hotel_card": HOTEL_CARD_FULL,
    "hotel_compare": {"items": [HOTEL_CARD_MIN, HOTEL_CARD_FULL], "comparison_facets": ["price", "score"]},
    "activity_list": {
        "title": "Things to do in Paris",
        "items": [
            {
                "activity_code": "E-E10-PARIS1",
                "name": "Seine cruise",
                "type": "ticket",
                "country": "FR",
                "currency": "EUR",
                "amount_from": 0,
                "modalities_count": 2,
                "modalities": [
                    {"code": "M1", "name": "Day", "duration": {"value": 1, "metric": "HOURS"}},
                    {"code": "M2", "duration": None},
                    {},
                ],
                "description": "One hour on the Seine.",
                "ctas": ["view_details", "add_to_itinerary"],
            }
        ],
        "total_count": 1,
        "filter_summary": "Family friendly",
    },
    "transfer_list": {
        "title": "Airport transfers",
        "items": [
            {
                "transfer_id": "tr_1",
                "transfer_type": "PRIVATE",
                "vehicle_name": "Sedan",
                "category_name": "Standard",
                "total_amount": 55.5,
                "currency": "EUR",
                "direction": "ARRIVAL",
                "detail": "Meet & greet",
                "ctas": ["view_details"],
            },
            {"transfer_id": "tr_2", "currency": "EUR"},
        ],
        "total_count": 2,
        "route_summary": "CDG -> Paris centre",
    },
    "place_list": {"title": "Top places in Paris", "items": [PLACE_CARD_FULL]},
    "place_card": PLACE_CARD_FULL,
    "action_chooser": {
        "prompt_text": "What next?",
        "options": [
            {"label": "Hotels", "action_id": "hotels", "illustration_url": "https://example.com/i/hotel.svg"},
            {"label": "Flights", "action_id": "flights"},
        ],
        "submitted_value": {"action_id": "hotels"},
    },
    "map_view": {
        "center": {"lat": 48.8566, "lng": 2.3522},
        "zoom": 12,
        "markers": [
            {"lat": 48.86, "lng": 2.35, "label": "Hotel 1", "hotel_id": "hotel_PAR_1", "state": "selected"},
            {"lat": 48, "lng": 2, "label": "Hotel 2", "state": "normal"},
        ],
        "selected_marker_id": "hotel_PAR_1",
        "filter_state": {
            "star_rating": [4, 4.5],
            "budget_min": 0,
            "budget_max": 300.5,
            "guest_rating_min": 8,
        },
    },
    "filter_panel": {
        "hotel_category_options": ["3", "4", "5"],
        "budget_range": {"min": 0, "max": 999.99, "currency": "EUR"},
        "guest_rating_options": [7, 8.5, 9],
        "applied": {"hotel_category": ["4"], "budget_min": 50, "budget_max": 250.0, "guest_rating_min": 8.5},
        "ctas": ["clear_all", "apply"],
    },
    "property_block": {
        "slots": [
            {"label": "Destination", "value": "Paris", "edit_action_id": "edit_region", "missing": False},
            {"label": "Nights", "value": 4, "missing": False},
            {"label": "Budget", "value": 250.5, "missing": False},
            {"label": "Pets", "value": True, "missing": False},
            {"label": "Dates", "value": None, "missing": True},
            {"label": "Party", "missing": True},
        ]
    },
    "itinerary_summary": {
        "destination": "Paris",
        "dates": {"from": "2026-07-10", "to": "2026-07-14"},
        "traveller_party": {"adults": 2, "children": [{"age": 5}], "rooms": 1, "note": None},
        "picked_flight": FLIGHT_CARD_MIN,
        "picked_hotel": HOTEL_CARD_FULL,
        "total_cost": {"amount": 1500.25, "currency": "EUR"},
        "notes": "Window seats please",
        "ctas": ["confirm", "edit"],
    },
    "order_confirmation": {
        "order_id": "ord_0000AgDl",
        "booking_reference": "RZPVTS",
        "total_amount": "612.40",
        "total_currency": "GBP",
        "passengers": [{"id": "pas_1", "given_name": "Ada", "age": 36}],
        "slices": [{"origin": "LHR", "destination": "JFK", "segments": []}],
        "ctas": ["view_full", "new_search"],
        "documents": [
            {
                "unique_identifier": "125-1234567890",
                "type": "electronic_ticket",
                "document_url": "https://duffel.example/doc.pdf",
                "passenger_ids": ["pas_1"],
            },
            {"anything": {"nested": [1, 2]}},
        ],
    },
    "hotel_confirmation": {
        "booking_reference": "1-3887211",
        "hotel_name": "Paris Grand Hotel 2",
        "status": "CONFIRMED",
        "check_in": "2026-07-10",
        "check_out": "14 July",
        "total_amount": "882.00",
        "total_currency": "EUR",
        "destination": "Paris",
        "ctas": ["view_full"],
    },
    "notification": {"kind": "warning", "text": "Prices changed", "dismissible": False},
    "error_card": {
        "title": "Flights unavailable",
        "description": "The provider did not answer.",
        "retry_action_id": "retry_flights",
        "contact_support": True,
    },
    "clarify_question": {
        "question_text": "Which Paris?",
        "options": [
            {"label": "Paris, France", "action_id": "par_fr"},
            {"label": "Paris, TX", "action_id": "par_tx"},
        ],
    },
    "loading_card": {
        "tool_name": "mcp/duffel.search_offers",
        "started_at": "2026-07-10T08:00:00Z",
        "expected_duration_seconds": 0,
    },
    "calendar_view": {
        "trip_id": "trip_PAR",
        "events_path": "users/u1/trips/trip_PAR/events",
        "display_events": [
            CALENDAR_EVENT_FULL,
            {
                "event_id": "evt_2",
                "type": "user_note",
                "start_at": "2026-07-11t10:00:00z",
                "timezone": "UTC",
                "title": "x" * 120,
                "location": "y" * 180,
                "notes": "z" * 1000,
            },
        ],
        "editable": True,
        "empty_state_text": "e" * 240,
    },
}

MINIMAL: dict[str, dict[str, Any]] = {
    "bot_text": {"text": ""},
    "user_text": {"text": "hi"},
    "typing_indicator": {"agent_name": ""},
    "date_range_picker": {
        "min_date": "2026-01-01",
        "max_date": "2026-12-31",
        "locale": "en",
        "submit": "submit",
    },
    "party_picker": {"rooms_max": 1, "adults_max": 1, "children_max": 0, "allow_child_ages": False},
    "place_autocomplete_input": {"placeholder": "", "suggestions": [], "submit_on_select": False},
    "flight_list": {"title": "Flights", "items": [], "total_count": 0, "currency": "USD"},
    "flight_card": FLIGHT_CARD_MIN,
    "hotel_list": {"title": "Hotels", "items": [], "total_count": 0},
    "hotel_card": HOTEL_CARD_MIN,
    "hotel_compare": {"items": [HOTEL_CARD_MIN, HOTEL_CARD_MIN], "comparison_facets": []},
    "activity_list": {
        "title": "Activities",
        "items": [{"activity_code": "A1", "name": "Tour", "currency": "EUR"}],
        "total_count": 1,
    },
    "transfer_list": {"title": "Transfers", "items": [], "total_count": 0},
    "place_list": {"title": "Places", "items": []},
    "place_card": {"place_id": "p1", "name": "Somewhere", "types": [], "photos": []},
    "action_chooser": {"prompt_text": "Pick", "options": []},
    "map_view": {"center": {"lat": 0, "lng": 0}, "zoom": 1, "markers": []},
    "filter_panel": {
        "hotel_category_options": [],
        "budget_range": {"min": 0, "max": 0, "currency": ""},
        "guest_rating_options": [],
        "applied": {},
    },
    "property_block": {"slots": []},
    "itinerary_summary": {
        "destination": "Paris",
        "dates": {"from": "2026-07-10", "to": "2026-07-14"},
        "traveller_party": {},
    },
    "order_confirmation": {
        "order_id": "o",
        "booking_reference": "b",
        "total_amount": "0",
        "total_currency": "USD",
    },
    "hotel_confirmation": {
        "booking_reference": "b",
        "hotel_name": "h",
        "total_amount": "1",
        "total_currency": "EUR",
    },
    "notification": {"kind": "info", "text": "ok"},
    "error_card": {"title": "t", "description": "d"},
    "clarify_question": {"question_text": "?", "options": []},
    "loading_card": {"tool_name": "t", "started_at": "2026-07-10T08:00:00+00:00"},
    "calendar_view": {"trip_id": "t", "editable": False},
}

# Boundary and edge documents that both sides must ACCEPT: (widget_type, path, value).
EDGE_VALID = [
    ("map_view", ("zoom",), 22),
    ("map_view", ("zoom",), 1.0),  # draft-07: a float with zero fraction is an integer
    ("flight_card", ("stops",), 2.0),
    ("flight_card", ("passenger_count",), None),
    ("flight_card", ("airline",), None),
    ("flight_card", ("baggage",), None),
    ("flight_card", ("conditions",), None),
    ("flight_card", ("direction",), ""),
    ("flight_card", ("itineraries", 0, "segments", 0, "operating_carrier"), {"name": "American"}),
    ("flight_card", ("itineraries", 0, "segments", 0, "operating_carrier"), None),
    ("flight_card", ("itineraries", 0, "segments", 0, "technical_stops"), [{}]),
    ("flight_card", ("price", "base"), None),
    ("place_card", ("rating",), 0),
    ("place_card", ("rating",), 5),
    (
        "place_card",
        ("photos",),
        ["mailto:someone@example.com", "urn:isbn:0451450523", "http://[::1]:8080/p.jpg"],
    ),
    ("hotel_card", ("score",), 10),
    ("hotel_card", ("star_rating",), 0.0),
    ("hotel_card", ("price_per_night",), 0),
    ("hotel_card", ("location",), {}),
    ("party_picker", ("submitted_value", "children", 0, "age"), 17.0),
    ("date_range_picker", ("default_from",), "2028-02-29"),
    ("date_range_picker", ("submitted_value", "nights"), 0),
    ("loading_card", ("started_at",), "1985-04-12T23:20:50.52Z"),
    ("loading_card", ("started_at",), "1996-12-19T16:39:57-08:00"),
    ("calendar_view", ("display_events", 0, "end_at"), "2026-07-10T23:59:59.999+23:59"),
    ("calendar_view", ("display_events", 0, "notes"), ""),
    ("activity_list", ("items", 0, "modalities", 0, "duration"), [1, "two", None]),
    ("property_block", ("slots", 0, "value"), -0.5),
    ("itinerary_summary", ("traveller_party",), {"adults": "two", "x": [None]}),
    ("order_confirmation", ("passengers",), [{}]),
    ("bot_text", ("markdown",), False),
    ("filter_panel", ("budget_range", "min"), -10),
]


def _set(doc: Any, path: tuple, value: Any) -> Any:
    doc = copy.deepcopy(doc)
    target = doc
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    return doc


def _delete(doc: Any, path: tuple) -> Any:
    doc = copy.deepcopy(doc)
    target = doc
    for part in path[:-1]:
        target = target[part]
    del target[path[-1]]
    return doc


# --------------------------------------------------------------------------------------------
# Hand-made invalid documents: each must be rejected by both sides
# --------------------------------------------------------------------------------------------


def _bad_payload(widget_type: str, path: tuple, value: Any, base: dict | None = None) -> dict[str, Any]:
    return envelope(widget_type, _set(base or FULL[widget_type], path, value))


def _missing(widget_type: str, path: tuple, base: dict | None = None) -> dict[str, Any]:
    return envelope(widget_type, _delete(base or FULL[widget_type], path))


_VALID_ENV = envelope("calendar_view", MINIMAL["calendar_view"])

INVALID: list[Any] = [
    # --- envelope
    pytest.param({**_VALID_ENV, "schema_version": 3}, id="env-schema_version-3"),
    pytest.param({**_VALID_ENV, "schema_version": 0}, id="env-schema_version-0"),
    pytest.param({**_VALID_ENV, "schema_version": "1"}, id="env-schema_version-str"),
    pytest.param({**_VALID_ENV, "schema_version": True}, id="env-schema_version-bool"),
    pytest.param({**_VALID_ENV, "schema_version": 1.5}, id="env-schema_version-float"),
    pytest.param(_delete(_VALID_ENV, ("schema_version",)), id="env-schema_version-missing"),
    pytest.param({**_VALID_ENV, "widget_type": "weather_card"}, id="env-widget_type-unknown"),
    pytest.param({**_VALID_ENV, "widget_type": "Calendar_View"}, id="env-widget_type-case"),
    pytest.param({**_VALID_ENV, "widget_type": 7}, id="env-widget_type-int"),
    pytest.param(_delete(_VALID_ENV, ("widget_type",)), id="env-widget_type-missing"),
    pytest.param({**_VALID_ENV, "variant": None}, id="env-variant-null"),
    pytest.param({**_VALID_ENV, "variant": 1}, id="env-variant-int"),
    pytest.param(_delete(_VALID_ENV, ("variant",)), id="env-variant-missing"),
    pytest.param({**_VALID_ENV, "payload": None}, id="env-payload-null"),
    pytest.param({**_VALID_ENV, "payload": []}, id="env-payload-list"),
    pytest.param(_delete(_VALID_ENV, ("payload",)), id="env-payload-missing"),
    pytest.param({**_VALID_ENV, "meta": {}}, id="env-extra-key"),
    pytest.param({**_VALID_ENV, "ai_adjustments": None}, id="env-ai_adjustments-null"),
    pytest.param({**_VALID_ENV, "ai_adjustments": {"tone": "warm"}}, id="env-ai_adjustments-extra-key"),
    pytest.param({**_VALID_ENV, "ai_adjustments": {"emphasis": 1}}, id="env-ai_adjustments-emphasis-int"),
    pytest.param(
        {**_VALID_ENV, "ai_adjustments": {"annotations": [{"target": "t", "text": "x" * 241}]}},
        id="env-annotation-text-too-long",
    ),
    pytest.param(
        {**_VALID_ENV, "ai_adjustments": {"annotations": [{"target": "t", "text": "x", "kind": "fatal"}]}},
        id="env-annotation-kind-enum",
    ),
    pytest.param(
        {**_VALID_ENV, "ai_adjustments": {"annotations": [{"text": "x"}]}}, id="env-annotation-no-target"
    ),
    pytest.param(
        {**_VALID_ENV, "ai_adjustments": {"conditional_fields": {"a": [1]}}}, id="env-conditional_fields-list"
    ),
    pytest.param(
        {**_VALID_ENV, "ai_adjustments": {"conditional_fields": {"a": {"b": 1}}}},
        id="env-conditional_fields-object",
    ),
    pytest.param([], id="env-not-an-object"),
    # --- bot_text / user_text / typing_indicator / notification / error_card / loading_card
    pytest.param(
        _bad_payload("bot_text", ("timestamp",), "yesterday"), id="bot_text-timestamp-not-date-time"
    ),
    pytest.param(_bad_payload("bot_text", ("markdown",), "yes"), id="bot_text-markdown-str"),
    pytest.param(_bad_payload("bot_text", ("markdown",), None), id="bot_text-markdown-null"),
    pytest.param(_bad_payload("user_text", ("user_avatar_url",), "avatar.png"), id="user_text-url-relative"),
    pytest.param(
        _bad_payload("user_text", ("user_avatar_url",), "http://exa mple.com/a.png"), id="user_text-url-space"
    ),
    pytest.param(_bad_payload("user_text", ("text",), None), id="user_text-text-null"),
    pytest.param(envelope("typing_indicator", {}), id="typing_indicator-agent_name-missing"),
    pytest.param(_bad_payload("notification", ("kind",), "debug"), id="notification-kind-enum"),
    pytest.param(_bad_payload("notification", ("dismissible",), "false"), id="notification-dismissible-str"),
    pytest.param(_bad_payload("error_card", ("contact_support",), 1), id="error_card-contact_support-int"),
    pytest.param(_missing("error_card", ("title",)), id="error_card-title-missing"),
    pytest.param(
        _bad_payload("loading_card", ("started_at",), "2026-07-10 08:00:00Z"), id="loading_card-space-sep"
    ),
    pytest.param(
        _bad_payload("loading_card", ("started_at",), "2026-07-10T25:00:00Z"), id="loading_card-hour-25"
    ),
    pytest.param(
        _bad_payload("loading_card", ("started_at",), "2026-07-10T08:00:00"), id="loading_card-no-offset"
    ),
    pytest.param(
        _bad_payload("loading_card", ("started_at",), "2026-02-30T08:00:00Z"), id="loading_card-feb-30"
    ),
    pytest.param(_bad_payload("loading_card", ("started_at",), "2026-07-10"), id="loading_card-date-only"),
    pytest.param(
        _bad_payload("loading_card", ("expected_duration_seconds",), -5), id="loading_card-duration-neg"
    ),
    pytest.param(
        _bad_payload("loading_card", ("expected_duration_seconds",), 2.5), id="loading_card-duration-float"
    ),
    # --- date_range_picker
    pytest.param(
        _bad_payload("date_range_picker", ("min_date",), "2026-13-40"), id="date_range_picker-date-13-40"
    ),
    pytest.param(
        _bad_payload("date_range_picker", ("max_date",), "10/07/2026"), id="date_range_picker-date-slashes"
    ),
    pytest.param(
        _bad_payload("date_range_picker", ("default_from",), "2026-02-30"), id="date_range_picker-feb-30"
    ),
    pytest.param(
        _bad_payload("date_range_picker", ("default_to",), "2026-7-1"), id="date_range_picker-no-padding"
    ),
    pytest.param(
        _bad_payload("date_range_picker", ("default_to",), "2026-07-14T00:00:00Z"),
        id="date_range_picker-datetime",
    ),
    pytest.param(_bad_payload("date_range_picker", ("locale",), "fr"), id="date_range_picker-locale-enum"),
    pytest.param(_bad_payload("date_range_picker", ("submit",), "go"), id="date_range_picker-submit-const"),
    pytest.param(
        _bad_payload("date_range_picker", ("submitted_value", "nights"), -1),
        id="date_range_picker-nights-neg",
    ),
    pytest.param(
        _bad_payload("date_range_picker", ("submitted_value", "nights"), 1.5),
        id="date_range_picker-nights-float",
    ),
    pytest.param(
        _bad_payload("date_range_picker", ("submitted_value", "nights"), "4"),
        id="date_range_picker-nights-str",
    ),
    pytest.param(
        _missing("date_range_picker", ("submitted_value", "to")), id="date_range_picker-submitted-to-missing"
    ),
    pytest.param(
        _bad_payload("date_range_picker", ("submitted_value", "from_"), "2026-07-10"),
        id="date_range_picker-python-field-name",
    ),
    # --- party_picker
    pytest.param(_bad_payload("party_picker", ("rooms_max",), 0), id="party_picker-rooms_max-0"),
    pytest.param(_bad_payload("party_picker", ("adults_max",), True), id="party_picker-adults_max-bool"),
    pytest.param(_bad_payload("party_picker", ("children_max",), 1.5), id="party_picker-children_max-float"),
    pytest.param(_bad_payload("party_picker", ("allow_child_ages",), "yes"), id="party_picker-allow-str"),
    pytest.param(
        _bad_payload("party_picker", ("submitted_value", "children", 0, "age"), 18), id="party_picker-age-18"
    ),
    pytest.param(
        _bad_payload("party_picker", ("submitted_value", "children", 1, "age"), -1), id="party_picker-age-neg"
    ),
    # --- place_autocomplete_input / place_card / place_list
    pytest.param(
        _bad_payload("place_autocomplete_input", ("suggestions", 0, "kind"), "country"),
        id="autocomplete-kind-enum",
    ),
    pytest.param(
        _bad_payload("place_autocomplete_input", ("submit_on_select",), 1),
        id="autocomplete-submit_on_select-int",
    ),
    pytest.param(
        _bad_payload("place_autocomplete_input", ("suggestions",), None), id="autocomplete-suggestions-null"
    ),
    pytest.param(_bad_payload("place_card", ("place_id",), None), id="place_card-place_id-null"),
    pytest.param(_bad_payload("place_card", ("types",), "museum"), id="place_card-types-str"),
    pytest.param(
        _bad_payload("place_card", ("photos",), ["/relative/p.jpg"]), id="place_card-photo-relative"
    ),
    pytest.param(_bad_payload("place_card", ("ctas",), ["book"]), id="place_card-cta-enum"),
    pytest.param(_bad_payload("place_list", ("items", 0, "rating"), 5.5), id="place_list-rating-over-5"),
    pytest.param(
        _bad_payload("place_list", ("items", 0, "rating_count"), True), id="place_list-rating_count-bool"
    ),
    pytest.param(_bad_payload("place_list", ("items", 0, "vicinity"), "x"), id="place_list-item-extra-key"),
    # --- flight_card / flight_list
    pytest.param(_bad_payload("flight_card", ("price", "total"), 612.4), id="flight_card-price-total-number"),
    pytest.param(_bad_payload("flight_card", ("price", "discount"), "1"), id="flight_card-price-extra-key"),
    pytest.param(_bad_payload("flight_card", ("stops",), -1), id="flight_card-stops-neg"),
    pytest.param(_bad_payload("flight_card", ("stops",), "0"), id="flight_card-stops-str"),
    pytest.param(
        _missing("flight_card", ("itineraries", 0, "segments", 0, "carrier")),
        id="flight_card-segment-carrier",
    ),
    pytest.param(
        _missing("flight_card", ("itineraries", 0, "segments", 0, "departure", "at")),
        id="flight_card-departure-at",
    ),
    pytest.param(_bad_payload("flight_card", ("direction",), "sideways"), id="flight_card-direction-enum"),
    pytest.param(
        _bad_payload("flight_card", ("itineraries", 0, "direction"), "return"),
        id="flight_card-itinerary-direction",
    ),
    pytest.param(_bad_payload("flight_card", ("ctas",), ["buy"]), id="flight_card-cta-enum"),
    pytest.param(
        _bad_payload("flight_card", ("baggage", "checked"), 1.5), id="flight_card-baggage-checked-float"
    ),
    pytest.param(
        _missing("flight_card", ("conditions_options", 0, "allowed")), id="flight_card-allowed-missing"
    ),
    pytest.param(
        _bad_payload("flight_card", ("baggage_options", 0, "scope"), "extra"), id="flight_card-bag-scope"
    ),
    pytest.param(_bad_payload("flight_card", ("airline",), "BA"), id="flight_card-airline-str"),
    pytest.param(
        _bad_payload("flight_card", ("itineraries", 0, "segments", 0, "operating_carrier"), 5),
        id="flight_card-operating_carrier-int",
    ),
    pytest.param(
        _bad_payload("flight_card", ("itineraries", 0, "segments", 0, "aircraft"), {"code": "77W"}),
        id="flight_card-aircraft-extra-key",
    ),
    pytest.param(
        _bad_payload("flight_card", ("passenger_count",), 1.5), id="flight_card-passenger_count-float"
    ),
    pytest.param(_bad_payload("flight_card", ("live_mode",), "true"), id="flight_card-live_mode-str"),
    pytest.param(
        _bad_payload("flight_card", ("ai_adjustments", "conditional_fields"), {}),
        id="flight_card-ai-no-conditional",
    ),
    pytest.param(
        _bad_payload("flight_card", ("ai_adjustments", "annotations", 0, "text"), "x" * 241),
        id="flight_card-annotation-too-long",
    ),
    pytest.param(_bad_payload("flight_list", ("total_count",), -1), id="flight_list-total_count-neg"),
    pytest.param(_missing("flight_list", ("currency",)), id="flight_list-currency-missing"),
    pytest.param(_bad_payload("flight_list", ("items", 0, "co2"), 1), id="flight_list-item-extra-key"),
    # --- hotels
    pytest.param(_bad_payload("hotel_card", ("score",), 10.5), id="hotel_card-score-over-10"),
    pytest.param(_bad_payload("hotel_card", ("score",), -0.1), id="hotel_card-score-neg"),
    pytest.param(_bad_payload("hotel_card", ("star_rating",), 6), id="hotel_card-star_rating-6"),
    pytest.param(_bad_payload("hotel_card", ("photos",), ["not a uri"]), id="hotel_card-photo-not-uri"),
    pytest.param(_bad_payload("hotel_card", ("currency",), None), id="hotel_card-currency-null"),
    pytest.param(_bad_payload("hotel_card", ("ctas",), ["view_details"]), id="hotel_card-cta-enum"),
    pytest.param(_bad_payload("hotel_card", ("location", "lat"), "48.8"), id="hotel_card-lat-str"),
    pytest.param(
        _missing("hotel_card", ("ai_adjustments", "upsell_banner", "action_label")),
        id="hotel_card-banner-label",
    ),
    pytest.param(_missing("hotel_list", ("upsell_banner", "action_id")), id="hotel_list-banner-action_id"),
    pytest.param(_bad_payload("hotel_list", ("total_count",), 2.5), id="hotel_list-total_count-float"),
    pytest.param(_bad_payload("hotel_compare", ("items",), [HOTEL_CARD_MIN]), id="hotel_compare-one-item"),
    pytest.param(
        _bad_payload("hotel_compare", ("items",), [HOTEL_CARD_MIN] * 3), id="hotel_compare-three-items"
    ),
    pytest.param(
        _bad_payload("hotel_confirmation", ("total_amount",), 882), id="hotel_confirmation-amount-int"
    ),
    pytest.param(_bad_payload("hotel_confirmation", ("ctas",), ["cancel"]), id="hotel_confirmation-cta-enum"),
    # --- activities / transfers
    pytest.param(
        _bad_payload("activity_list", ("items", 0, "amount_from"), -1), id="activity_list-amount-neg"
    ),
    pytest.param(
        _bad_payload("activity_list", ("items", 0, "modalities", 0, "price"), 1),
        id="activity_list-modality-extra",
    ),
    pytest.param(_missing("activity_list", ("items", 0, "currency")), id="activity_list-currency-missing"),
    pytest.param(
        _bad_payload("transfer_list", ("items", 0, "total_amount"), "55.50"), id="transfer_list-amount-str"
    ),
    pytest.param(_bad_payload("transfer_list", ("items", 0, "ctas"), ["book"]), id="transfer_list-cta-enum"),
    # --- choices
    pytest.param(
        _bad_payload("action_chooser", ("options", 0, "illustration_url"), "hotel.svg"),
        id="action_chooser-url",
    ),
    pytest.param(
        _bad_payload("action_chooser", ("submitted_value",), {}), id="action_chooser-submitted-empty"
    ),
    pytest.param(
        _missing("clarify_question", ("options", 0, "action_id")), id="clarify_question-action_id-missing"
    ),
    # --- right pane
    pytest.param(_bad_payload("map_view", ("zoom",), 0), id="map_view-zoom-0"),
    pytest.param(_bad_payload("map_view", ("zoom",), 23), id="map_view-zoom-23"),
    pytest.param(_bad_payload("map_view", ("zoom",), 10.5), id="map_view-zoom-float"),
    pytest.param(_bad_payload("map_view", ("markers", 0, "state"), "hidden"), id="map_view-marker-state"),
    pytest.param(_missing("map_view", ("center", "lng")), id="map_view-center-lng-missing"),
    pytest.param(_bad_payload("filter_panel", ("budget_range", "min"), "10"), id="filter_panel-min-str"),
    pytest.param(
        _bad_payload("filter_panel", ("guest_rating_options",), ["8"]), id="filter_panel-rating-str"
    ),
    pytest.param(_bad_payload("filter_panel", ("ctas",), ["reset"]), id="filter_panel-cta-enum"),
    pytest.param(_missing("filter_panel", ("applied",)), id="filter_panel-applied-missing"),
    pytest.param(_bad_payload("property_block", ("slots", 0, "value"), []), id="property_block-value-list"),
    pytest.param(_bad_payload("property_block", ("slots", 0, "value"), {}), id="property_block-value-object"),
    pytest.param(
        _bad_payload("property_block", ("slots", 0, "missing"), "no"), id="property_block-missing-str"
    ),
    # --- trip
    pytest.param(
        _bad_payload("itinerary_summary", ("dates", "from"), "2026-13-40"), id="itinerary_summary-date-13-40"
    ),
    pytest.param(
        _bad_payload("itinerary_summary", ("traveller_party",), []), id="itinerary_summary-party-list"
    ),
    pytest.param(
        _bad_payload("itinerary_summary", ("total_cost", "amount"), "1500"), id="itinerary_summary-amount-str"
    ),
    pytest.param(_bad_payload("itinerary_summary", ("notes",), 5), id="itinerary_summary-notes-int"),
    pytest.param(
        _missing("itinerary_summary", ("picked_flight", "offer_id")), id="itinerary_summary-flight-offer_id"
    ),
    pytest.param(_bad_payload("itinerary_summary", ("ctas",), ["book"]), id="itinerary_summary-cta-enum"),
    pytest.param(
        _bad_payload("order_confirmation", ("total_amount",), 612.4), id="order_confirmation-amount-num"
    ),
    pytest.param(
        _bad_payload("order_confirmation", ("documents", 0, "type"), 5), id="order_confirmation-doc-type"
    ),
    pytest.param(
        _bad_payload("order_confirmation", ("passengers",), ["adult"]), id="order_confirmation-passenger"
    ),
    pytest.param(_bad_payload("calendar_view", ("trip_id",), ""), id="calendar_view-trip_id-empty"),
    pytest.param(
        _bad_payload("calendar_view", ("empty_state_text",), "e" * 241), id="calendar_view-empty-too-long"
    ),
    pytest.param(_missing("calendar_view", ("editable",)), id="calendar_view-editable-missing"),
    pytest.param(
        _bad_payload("calendar_view", ("display_events", 0, "title"), "x" * 121),
        id="calendar_event-title-too-long",
    ),
    pytest.param(
        _bad_payload("calendar_view", ("display_events", 0, "title"), ""), id="calendar_event-title-empty"
    ),
    pytest.param(
        _bad_payload("calendar_view", ("display_events", 0, "location"), "y" * 181),
        id="calendar_event-location-long",
    ),
    pytest.param(
        _bad_payload("calendar_view", ("display_events", 0, "notes"), "z" * 1001),
        id="calendar_event-notes-long",
    ),
    pytest.param(
        _bad_payload("calendar_view", ("display_events", 0, "type"), "meeting"), id="calendar_event-type"
    ),
    pytest.param(
        _bad_payload("calendar_view", ("display_events", 0, "end_at"), "tomorrow"), id="calendar_event-end_at"
    ),
    pytest.param(
        _bad_payload("calendar_view", ("display_events", 0, "timezone"), ""), id="calendar_event-tz-empty"
    ),
    pytest.param(
        _missing("calendar_view", ("display_events", 0, "location")), id="calendar_event-location-missing"
    ),
]


# --------------------------------------------------------------------------------------------
# Registry and structure
# --------------------------------------------------------------------------------------------


def test_registry_covers_the_vocabulary_and_schema_titles() -> None:
    assert tuple(PAYLOAD_MODELS) == WIDGET_TYPES
    assert ENVELOPE_SCHEMA["properties"]["widget_type"]["enum"] == list(WIDGET_TYPES)
    assert set(TYPED_ENVELOPES) == set(WIDGET_TYPES)
    for wt, model in PAYLOAD_MODELS.items():
        assert model.__name__ == PAYLOAD_SCHEMAS[wt]["title"]
    assert set(FULL) == set(MINIMAL) == set(WIDGET_TYPES)


def test_reference_schemas_are_valid_draft7() -> None:
    for schema in [ENVELOPE_SCHEMA, *PAYLOAD_SCHEMAS.values()]:
        Draft7Validator.check_schema(schema)


@pytest.mark.parametrize("widget_type", WIDGET_TYPES)
def test_top_level_keys_match_schema(widget_type: str) -> None:
    schema = PAYLOAD_SCHEMAS[widget_type]
    model = PAYLOAD_MODELS[widget_type]
    fields = {field.alias or name: field for name, field in model.model_fields.items()}
    assert set(fields) == set(schema["properties"])
    assert {key for key, field in fields.items() if field.is_required()} == set(schema["required"])
    assert model.model_config.get("extra") == (
        "forbid" if schema["additionalProperties"] is False else "allow"
    )


def test_envelope_fields_match_schema() -> None:
    fields = Envelope.model_fields
    assert set(fields) == set(ENVELOPE_SCHEMA["properties"])
    assert {k for k, f in fields.items() if f.is_required()} == set(ENVELOPE_SCHEMA["required"])
    assert Envelope.model_config.get("extra") == "forbid"


# --------------------------------------------------------------------------------------------
# 1. The labelled corpora
# --------------------------------------------------------------------------------------------

CORPUS_FILES = sorted(CORPORA_DIR.glob("*.labeled.jsonl"))


def test_corpora_size() -> None:
    lines = sum(1 for path in CORPUS_FILES for line in path.read_text().splitlines() if line.strip())
    assert lines == 4408, "docs/oracle.md §11: the corpora hold 4,408 labelled lines"


@pytest.mark.parametrize("corpus", CORPUS_FILES, ids=lambda p: p.name.removesuffix(".labeled.jsonl"))
def test_corpus_envelopes_valid_on_both_sides(corpus: Path) -> None:
    failures: list[str] = []
    count = 0
    for line in corpus.read_text().splitlines():
        if not line.strip():
            continue
        record = json.loads(line)
        for index, env in enumerate(record["expected"]["render"]["widgets"]):
            count += 1
            where = f"{record['id']} widget {index} ({env.get('widget_type')})"
            if errors := js_errors(env):
                failures.append(f"{where}: jsonschema: {errors[:3]}")
            if errors := py_errors(env):
                failures.append(f"{where}: Envelope: {errors[:3]}")
            try:
                TYPED_ENVELOPES[env["widget_type"]].model_validate(env, strict=True)
            except ValidationError as exc:
                failures.append(f"{where}: typed envelope: {widgets.format_validation_error(exc)[:3]}")
    assert count > 0
    assert not failures, f"{len(failures)} failures, first: {failures[:5]}"


# --------------------------------------------------------------------------------------------
# 2. Hand-made valid payloads
# --------------------------------------------------------------------------------------------

VALID_CASES = [
    pytest.param(wt, payload, id=f"{wt}-{kind}")
    for kind, table in (("minimal", MINIMAL), ("full", FULL))
    for wt, payload in table.items()
] + [
    pytest.param(wt, _set(FULL[wt], path, value), id=f"{wt}-edge-{'.'.join(map(str, path))}={value!r}"[:90])
    for wt, path, value in EDGE_VALID
]


@pytest.mark.parametrize(("widget_type", "payload"), VALID_CASES)
def test_valid_payload_accepted_by_both(widget_type: str, payload: dict[str, Any]) -> None:
    env = envelope(widget_type, payload)
    assert js_errors(env) == []
    assert py_errors(env) == []
    assert payload_errors(widget_type, payload) == []
    TYPED_ENVELOPES[widget_type].model_validate(env, strict=True)


@pytest.mark.parametrize(
    "env",
    [
        pytest.param(envelope("flight_card", FULL["flight_card"], schema_version=2), id="schema_version-2"),
        pytest.param(
            envelope("flight_card", FULL["flight_card"], schema_version=2.0), id="schema_version-2.0"
        ),
        pytest.param(envelope("bot_text", FULL["bot_text"], variant=""), id="variant-empty"),
        pytest.param(envelope("bot_text", FULL["bot_text"], ai_adjustments={}), id="ai_adjustments-empty"),
        pytest.param(
            envelope(
                "hotel_list",
                FULL["hotel_list"],
                ai_adjustments={
                    "emphasis": "hotel_PAR_2",
                    "annotations": [{"target": "items.1", "text": "x" * 240, "kind": "info"}],
                    "conditional_fields": {"a": "s", "b": 1, "c": 1.5, "d": True, "e": None},
                },
            ),
            id="ai_adjustments-full",
        ),
    ],
)
def test_valid_envelope_variants_accepted_by_both(env: dict[str, Any]) -> None:
    assert js_errors(env) == []
    assert py_errors(env) == []


# --------------------------------------------------------------------------------------------
# 3. Hand-made invalid envelopes and payloads
# --------------------------------------------------------------------------------------------


def test_enough_invalid_cases() -> None:
    assert len(INVALID) >= 60
    covered = {p.values[0].get("widget_type") for p in INVALID if isinstance(p.values[0], dict)}
    assert set(WIDGET_TYPES) <= covered


@pytest.mark.parametrize("env", INVALID)
def test_invalid_rejected_by_both(env: Any) -> None:
    assert js_errors(env), "jsonschema accepted it"
    assert py_errors(env), "Envelope accepted it"
    if isinstance(env, dict) and env.get("widget_type") in PAYLOAD_MODELS:
        typed = TYPED_ENVELOPES[env["widget_type"]]
        with pytest.raises(ValidationError):
            typed.model_validate(env, strict=True)


# --------------------------------------------------------------------------------------------
# Schema-driven mutations of every FULL payload
# --------------------------------------------------------------------------------------------


def _resolve(schema: dict[str, Any], root: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    while "$ref" in schema:
        ref = schema["$ref"]
        if ref.startswith("#/definitions/"):
            schema = root["definitions"][ref.removeprefix("#/definitions/")]
        else:
            root = schema = SCHEMAS_BY_FILE[ref]
    return schema, root


def _branches(schema: dict[str, Any]) -> list[dict[str, Any]]:
    return schema.get("oneOf", [schema])


def _walk(value: Any, schema: dict[str, Any], root: dict[str, Any], path: tuple = ()) -> Iterator[tuple]:
    """Yield (path, value, schema) for every node of a document that its schema describes."""
    schema, root = _resolve(schema, root)
    yield path, value, schema
    if isinstance(value, dict):
        for branch in _branches(schema):
            props = branch.get("properties")
            if branch.get("type") == "object" and props is not None:
                for key, child in value.items():
                    if key in props:
                        yield from _walk(child, props[key], root, (*path, key))
    elif isinstance(value, list) and "items" in schema:
        for index, child in enumerate(value):
            yield from _walk(child, schema["items"], root, (*path, index))


def _json_types(schema: dict[str, Any]) -> set[str] | None:
    types: set[str] = set()
    for branch in _branches(schema):
        if "type" not in branch:
            return None  # {} accepts anything
        branch_type = branch["type"]
        types |= set(branch_type) if isinstance(branch_type, list) else {branch_type}
    return types


def _matches(value: Any, types: set[str]) -> bool:
    checks = {
        "string": lambda v: isinstance(v, str),
        "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
        "boolean": lambda v: isinstance(v, bool),
        "null": lambda v: v is None,
        "array": lambda v: isinstance(v, list),
        "object": lambda v: isinstance(v, dict),
    }
    return any(checks[t](value) for t in types)


VALUE_POOL: list[Any] = ["1", 1, 1.5, True, None, [], {}]


def _mutations(widget_type: str) -> Iterator[tuple[str, dict[str, Any], bool]]:
    """(label, mutated payload, must_be_rejected)."""
    payload = FULL[widget_type]
    root = PAYLOAD_SCHEMAS[widget_type]
    for path, value, schema in _walk(payload, root, root):
        where = ".".join(map(str, path)) or "<root>"
        if isinstance(value, dict):
            for branch in _branches(schema):
                if branch.get("type") != "object":
                    continue
                for key in branch.get("required", []):
                    yield f"{where}: delete required {key!r}", _delete(payload, (*path, key)), True
                closed = branch.get("additionalProperties") is False
                yield f"{where}: add unknown key", _set(payload, (*path, "zz_unknown"), 1), closed
        if path:
            # Every pool value: those of a JSON type the schema does not allow must be rejected;
            # the others (null where nullable, 1.5 where "number", ...) only need the same verdict.
            types = _json_types(schema)
            for other in VALUE_POOL:
                wrong_type = types is not None and not _matches(other, types)
                yield f"{where}: set {other!r}", _set(payload, path, other), wrong_type
            for branch in _branches(schema):
                if "enum" in branch:
                    yield f"{where}: not in enum", _set(payload, path, "zz_not_in_enum"), True
                if "maxLength" in branch:
                    too_long = "x" * (branch["maxLength"] + 1)
                    yield f"{where}: over maxLength", _set(payload, path, too_long), True
                if "minimum" in branch:
                    yield f"{where}: under minimum", _set(payload, path, branch["minimum"] - 1), True
                if "maximum" in branch:
                    yield f"{where}: over maximum", _set(payload, path, branch["maximum"] + 0.5), True
                if branch.get("format") in {"date", "date-time", "uri"}:
                    yield f"{where}: bad {branch['format']}", _set(payload, path, "2026-13-40 nope"), True


@pytest.mark.parametrize("widget_type", WIDGET_TYPES)
def test_schema_driven_mutations_agree(widget_type: str) -> None:
    disagreements = []
    rejected = 0
    for label, mutated, must_reject in _mutations(widget_type):
        js_ok = not js_payload_errors(widget_type, mutated)
        py_ok = not payload_errors(widget_type, mutated)
        env_ok = not py_errors(envelope(widget_type, mutated))
        if not (js_ok == py_ok == env_ok):
            disagreements.append(f"{label}: jsonschema ok={js_ok}, pydantic ok={py_ok}, Envelope ok={env_ok}")
        elif must_reject and js_ok:
            disagreements.append(f"{label}: expected a rejection, both accepted")
        rejected += not js_ok
    assert rejected > 0
    assert not disagreements, "\n".join(disagreements)


@pytest.mark.parametrize("widget_type", WIDGET_TYPES)
def test_required_key_deletion_and_unknown_key(widget_type: str) -> None:
    """Top level, spelled out: each required key deleted, and one unknown key added, is rejected."""
    payload = MINIMAL[widget_type]
    schema = PAYLOAD_SCHEMAS[widget_type]
    for key in schema["required"]:
        mutated = _delete(payload, (key,))
        assert js_payload_errors(widget_type, mutated), key
        assert payload_errors(widget_type, mutated), key
    assert schema["additionalProperties"] is False
    mutated = _set(payload, ("zz_unknown",), "x")
    assert js_payload_errors(widget_type, mutated)
    assert any(line.startswith("zz_unknown:") for line in payload_errors(widget_type, mutated))


# --------------------------------------------------------------------------------------------
# Errors and typed envelopes
# --------------------------------------------------------------------------------------------


def test_payload_errors_messages() -> None:
    assert payload_errors("flight_card", FULL["flight_card"]) == []
    assert payload_errors("weather_card", {}) == ["widget_type: unknown widget type 'weather_card'"]
    assert payload_errors(None, {}) == ["widget_type: unknown widget type None"]  # type: ignore[arg-type]
    errors = payload_errors("flight_card", _delete(FULL["flight_card"], ("price", "total")))
    assert errors == ["price.total: Field required"]
    errors = payload_errors(
        "date_range_picker", _set(FULL["date_range_picker"], ("submitted_value", "from"), "x")
    )
    assert len(errors) == 1 and errors[0].startswith("submitted_value.from: ")
    assert payload_errors("bot_text", [])[0].startswith("<root>: ")


def test_envelope_error_names_widget_type_and_path() -> None:
    env = _bad_payload("map_view", ("markers", 1, "state"), "hidden")
    with pytest.raises(ValidationError) as info:
        Envelope.model_validate(env, strict=True)
    message = str(info.value)
    assert "map_view" in message and "payload.markers.1.state" in message


def test_envelope_ai_adjustments_absent_reads_none() -> None:
    env = Envelope.model_validate(envelope("bot_text", MINIMAL["bot_text"]), strict=True)
    assert env.ai_adjustments is None
    assert "ai_adjustments" not in env.model_dump(exclude_unset=True)


def test_typed_envelopes() -> None:
    for wt, model in TYPED_ENVELOPES.items():
        env = model.model_validate(envelope(wt, FULL[wt]), strict=True)
        assert isinstance(env.payload, PAYLOAD_MODELS[wt])  # type: ignore[attr-defined]
        other = "bot_text" if wt != "bot_text" else "user_text"
        with pytest.raises(ValidationError):
            model.model_validate({**envelope(wt, FULL[wt]), "widget_type": other}, strict=True)
        schema = model.model_json_schema()
        assert schema["properties"]["widget_type"]["const"] == wt
        assert schema["additionalProperties"] is False


def test_dump_round_trip_keeps_the_document() -> None:
    for wt, model in PAYLOAD_MODELS.items():
        for payload in (MINIMAL[wt], FULL[wt]):
            dumped = model.model_validate(payload, strict=True).model_dump(by_alias=True, exclude_unset=True)
            assert dumped == payload, wt


# --------------------------------------------------------------------------------------------
# Format checkers
# --------------------------------------------------------------------------------------------

DATES_OK = ["2026-07-10", "2028-02-29", "0001-01-01", "9999-12-31"]
DATES_BAD = [
    "2026-13-40",
    "10/07/2026",
    "2026-02-29",
    "2026-7-10",
    "20260710",
    "2026-07-10T00:00:00Z",
    "0000-01-01",
    "",
]
DATE_TIMES_OK = [
    "2026-07-10T08:00:00Z",
    "2026-07-10t08:00:00z",
    "2026-07-10T08:00:00.123456+05:30",
    "2026-07-10T23:59:59-23:59",
    "2028-02-29T00:00:00+00:00",
]
DATE_TIMES_BAD = [
    "2026-07-10T08:00:00",
    "2026-07-10 08:00:00Z",
    "2026-07-10T24:00:00Z",
    "2026-07-10T08:60:00Z",
    "2026-07-10T08:00:60Z",
    "2026-02-30T08:00:00Z",
    "2026-07-10T08:00:00+0530",
    "2026-07-10T08:00Z",
    "2026-07-10T08:00:00.Z",
    "0000-01-01T00:00:00Z",
    "yesterday",
]
URIS_OK = [
    "https://example.com/p1.jpg",
    "http://u:p@[2001:db8::1]:8080/a/b?c=d&e#f",
    "http://[::ffff:192.0.2.1]/",
    "http://[v1.fe80::a+en1]/",
    "mailto:someone@example.com",
    "urn:isbn:0451450523",
    "file:///etc/hosts",
    "a:",
    "http://example.com/%20space",
]
URIS_BAD = [
    "example.com/p.jpg",
    "/relative/p.jpg",
    "//example.com/p.jpg",
    "http://exa mple.com/",
    "http://example.com/%zz",
    "http://[1::2::3]/",
    "http://example.com/caf\u00e9",
    "1http://example.com/",
    "http://example.com/a b",
    "",
]


@pytest.mark.parametrize(
    ("check", "good", "bad"),
    [
        pytest.param(widgets.is_date, DATES_OK, DATES_BAD, id="date"),
        pytest.param(widgets.is_date_time, DATE_TIMES_OK, DATE_TIMES_BAD, id="date-time"),
        pytest.param(widgets.is_uri, URIS_OK, URIS_BAD, id="uri"),
    ],
)
def test_format_functions(check: Any, good: list[str], bad: list[str]) -> None:
    assert [value for value in good if not check(value)] == []
    assert [value for value in bad if check(value)] == []


@pytest.mark.parametrize(
    ("fmt", "values"),
    [
        pytest.param("date", DATES_OK + DATES_BAD, id="date"),
        pytest.param("date-time", DATE_TIMES_OK + DATE_TIMES_BAD, id="date-time"),
        pytest.param("uri", URIS_OK + URIS_BAD, id="uri"),
    ],
)
def test_format_functions_agree_with_jsonschema_checkers(fmt: str, values: list[str]) -> None:
    if fmt in FALLBACK_FORMATS:
        pytest.skip(f"jsonschema has no '{fmt}' checker here (install rfc3339-validator / rfc3986-validator)")
    ours = {"date": widgets.is_date, "date-time": widgets.is_date_time, "uri": widgets.is_uri}[fmt]
    theirs = [FORMAT_CHECKER.conforms(value, fmt) for value in values]
    assert [ours(value) for value in values] == theirs
