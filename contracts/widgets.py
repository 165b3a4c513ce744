"""Pydantic v2 models of the widget envelope and the 27 widget payloads (docs/contract.md §6).

The models are hand-written equivalents of the draft-07 JSON Schemas in
``shared/reference/schemas/`` (``_envelope.schema.json`` and ``<widget_type>.schema.json``): the
same required and optional keys, types, nullability, enums and consts, numeric bounds, string and
array length bounds, ``additionalProperties`` behaviour and formats. ``tests/test_contracts_widgets.py``
checks the equivalence against ``jsonschema`` on the labelled corpora and on hand-made valid and
invalid documents.

Validation is always done on Python values parsed from JSON, in strict mode::

    Envelope.model_validate(obj, strict=True)        # envelope + payload of its widget_type
    PAYLOAD_MODELS["flight_card"].model_validate(payload, strict=True)
    payload_errors("flight_card", payload)            # -> ["price.total: Field required", ...]

How the JSON Schema constructs map onto pydantic:

* ``additionalProperties: false`` -> ``extra="forbid"`` (:class:`_Closed`, every object unless said
  otherwise); ``additionalProperties: true`` -> ``extra="allow"`` (:class:`_Open`) or
  ``dict[str, Any]`` for objects without declared properties.
* An optional key whose schema does NOT admit null is declared ``name: T = None``: when the key is
  absent the attribute reads ``None`` (pydantic does not validate defaults), but an explicit JSON
  ``null`` is rejected, as the schema does. A nullable key (``"type": [T, "null"]``) is
  ``name: T | None = None`` (optional) or ``name: T | None`` (required). Use
  ``model_dump(exclude_unset=True)`` to get back exactly the keys that were present.
* ``"type": "integer"`` -> :data:`Integer` (``int``, strict, so ``"1"``, ``1.5`` and ``true`` are
  rejected). Draft-07 defines an integer as any number with a zero fractional part, so ``2.0`` is an
  integer for ``jsonschema`` too: a before-validator turns integral floats into ``int`` to keep
  that equivalence. ``"type": "number"`` -> ``float`` (strict mode accepts ``int``, rejects bool).
* ``format: date`` / ``date-time`` / ``uri`` -> constrained ``str`` (:data:`DateStr`,
  :data:`DateTimeStr`, :data:`UriStr`) with an after-validator; strict python mode would reject a
  ``str`` for ``datetime.date``, and the wire value must stay a string anyway.
* ``oneOf`` (flight_card: ``airline``, ``marketing_carrier``, ``operating_carrier``,
  ``operating_airline``, ``aircraft``, ``baggage``, ``conditions``) is written as a plain union: its
  branches are of disjoint JSON types (object / string / null), so "exactly one" and "at least one"
  accept the same documents.
* ``"default"`` in a schema (``bot_text.markdown``, ``notification.dismissible``,
  ``typing_indicator.agent_name``) is an annotation only in JSON Schema; the models do not fill it in.

Oddities of the reference schemas, kept as they are for equivalence:

* ``ai_adjustments`` has three different shapes: on the envelope (``emphasis``, ``annotations``,
  ``conditional_fields``), inside a hotel_card payload (``emphasis``, ``annotations``,
  ``upsell_banner`` with an optional ``action_id``) and inside a flight_card payload (``emphasis``,
  ``annotations`` only).
* ``hotel_list.upsell_banner`` requires ``action_id``; ``hotel_card.ai_adjustments.upsell_banner``
  does not.
* The airport ``at`` of flight segments, ``hotel_confirmation.check_in``/``check_out`` and
  ``flight_card.expires_at`` are plain strings (no ``format``); the airline logo URLs are plain
  strings too (an empty string means "no logo").
* ``activity_list`` modality ``duration`` is ``{}``: any JSON value, null included.
* ``typing_indicator.agent_name`` is required although it carries a ``default``.
* The envelope's ``ai_adjustments`` may be absent but not ``null``.

Known differences from ``jsonschema``, all outside what a JSON producer of widgets emits:

* ``rfc3339-validator`` and ``rfc3986-validator`` (the libraries behind ``jsonschema``'s
  ``date-time`` and ``uri`` checkers) anchor their regexes with ``^...$`` and so also accept a
  trailing ``"\\n"``, and ``rfc3986-validator`` accepts leading zeros in an IPv4 part inside an
  IPv6 literal; these models follow RFC 3339 / RFC 3986 and reject both. Without ``rfc3987`` or
  ``rfc3986-validator`` installed, ``jsonschema`` does not check ``format: uri`` at all.
* An integer too large for a float (beyond 1e308) is a "number" for ``jsonschema`` but not for a
  pydantic ``float``.
"""

from __future__ import annotations

import calendar
import re
from datetime import date
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
    create_model,
    model_validator,
)

from contracts.vocab import WIDGET_TYPES, WidgetType

__all__ = [
    "PAYLOAD_MODELS",
    "TYPED_ENVELOPES",
    "ActionChooserPayload",
    "ActivityListPayload",
    "AiAdjustments",
    "BotTextPayload",
    "CalendarViewPayload",
    "ClarifyQuestionPayload",
    "DateRangePickerPayload",
    "Envelope",
    "ErrorCardPayload",
    "FilterPanelPayload",
    "FlightCardPayload",
    "FlightListPayload",
    "HotelCardPayload",
    "HotelComparePayload",
    "HotelConfirmationPayload",
    "HotelListPayload",
    "ItinerarySummaryPayload",
    "LoadingCardPayload",
    "MapViewPayload",
    "NotificationPayload",
    "OrderConfirmationPayload",
    "PartyPickerPayload",
    "PlaceAutocompleteInputPayload",
    "PlaceCardPayload",
    "PlaceListPayload",
    "PropertyBlockPayload",
    "TransferListPayload",
    "TypingIndicatorPayload",
    "UserTextPayload",
    "format_validation_error",
    "is_date",
    "is_date_time",
    "is_uri",
    "payload_errors",
]


# --------------------------------------------------------------------------------------------
# Formats
# --------------------------------------------------------------------------------------------

_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)

# RFC 3339 section 5.6 "date-time"; "T" and "Z" may be lower case (section 5.6, NOTE), which
# is why the check runs on the upper-cased string. Leap seconds (":60") are not accepted.
_DATE_TIME_RE = re.compile(
    r"(\d{4})-(0[1-9]|1[0-2])-(\d{2})"  # full-date
    r"T(?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d(?:\.\d+)?"  # partial-time
    r"(?:Z|[+-](?:[01]\d|2[0-3]):[0-5]\d)",  # time-offset
    re.ASCII,
)


def _uri_regex() -> re.Pattern[str]:
    """RFC 3986 appendix A, rule ``URI`` (an absolute URI, optional fragment), ASCII only."""
    hexdig = r"[0-9A-Fa-f]"
    pct = rf"%{hexdig}{{2}}"
    unreserved = r"A-Za-z0-9\-._~"
    sub_delims = r"!$&'()*+,;="
    pchar = rf"(?:[{unreserved}{sub_delims}:@]|{pct})"
    h16 = rf"{hexdig}{{1,4}}"
    dec_octet = r"(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9][0-9]|[0-9])"
    ipv4 = rf"{dec_octet}(?:\.{dec_octet}){{3}}"
    ls32 = rf"(?:{h16}:{h16}|{ipv4})"
    ipv6 = "|".join(
        [
            rf"(?:{h16}:){{6}}{ls32}",
            rf"::(?:{h16}:){{5}}{ls32}",
            rf"(?:{h16})?::(?:{h16}:){{4}}{ls32}",
            rf"(?:(?:{h16}:){{0,1}}{h16})?::(?:{h16}:){{3}}{ls32}",
            rf"(?:(?:{h16}:){{0,2}}{h16})?::(?:{h16}:){{2}}{ls32}",
            rf"(?:(?:{h16}:){{0,3}}{h16})?::{h16}:{ls32}",
            rf"(?:(?:{h16}:){{0,4}}{h16})?::{ls32}",
            rf"(?:(?:{h16}:){{0,5}}{h16})?::{h16}",
            rf"(?:(?:{h16}:){{0,6}}{h16})?::",
        ]
    )
    ipvfuture = rf"v{hexdig}+\.[{unreserved}{sub_delims}:]+"
    ip_literal = rf"\[(?:{ipv6}|{ipvfuture})\]"
    reg_name = rf"(?:[{unreserved}{sub_delims}]|{pct})*"  # also covers IPv4address
    userinfo = rf"(?:[{unreserved}{sub_delims}:]|{pct})*"
    authority = rf"(?:{userinfo}@)?(?:{ip_literal}|{reg_name})(?::[0-9]*)?"
    segment = rf"{pchar}*"
    segment_nz = rf"{pchar}+"
    hier_part = (
        rf"(?://{authority}(?:/{segment})*"  # "//" authority path-abempty
        rf"|/(?:{segment_nz}(?:/{segment})*)?"  # path-absolute
        rf"|{segment_nz}(?:/{segment})*"  # path-rootless
        r"|)"  # path-empty
    )
    query = rf"(?:{pchar}|[/?])*"
    scheme = r"[A-Za-z][A-Za-z0-9+\-.]*"
    return re.compile(rf"{scheme}:{hier_part}(?:\?{query})?(?:#{query})?")


_URI_RE = _uri_regex()


def is_date(value: str) -> bool:
    """JSON Schema ``format: date``: RFC 3339 full-date ``YYYY-MM-DD`` naming a real day."""
    if not _DATE_RE.fullmatch(value):
        return False
    try:
        date.fromisoformat(value)
    except ValueError:
        return False
    return True


def is_date_time(value: str) -> bool:
    """JSON Schema ``format: date-time``: RFC 3339 date-time with a real day, no leap second."""
    match = _DATE_TIME_RE.fullmatch(value.upper())
    if match is None:
        return False
    year, month, day = (int(group) for group in match.groups())
    return year != 0 and 1 <= day <= calendar.monthrange(year, month)[1]


def is_uri(value: str) -> bool:
    """JSON Schema ``format: uri``: an absolute RFC 3986 URI (``scheme ":" hier-part ...``)."""
    return _URI_RE.fullmatch(value) is not None


def _check_date(value: str) -> str:
    if not is_date(value):
        raise ValueError(f"{value!r} is not a valid 'date' (YYYY-MM-DD naming a real day)")
    return value


def _check_date_time(value: str) -> str:
    if not is_date_time(value):
        raise ValueError(f"{value!r} is not a valid RFC 3339 'date-time'")
    return value


def _check_uri(value: str) -> str:
    if not is_uri(value):
        raise ValueError(f"{value!r} is not a valid absolute 'uri' (RFC 3986)")
    return value


def _json_integer(value: Any) -> Any:
    """Draft-07 counts a float with a zero fractional part (``2.0``) as an integer."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bool):  # Literal[1, 2] would otherwise take True for 1
        raise ValueError("Input should be a valid integer, not a boolean")
    return value


DateStr = Annotated[str, AfterValidator(_check_date), WithJsonSchema({"type": "string", "format": "date"})]
DateTimeStr = Annotated[
    str, AfterValidator(_check_date_time), WithJsonSchema({"type": "string", "format": "date-time"})
]
UriStr = Annotated[str, AfterValidator(_check_uri), WithJsonSchema({"type": "string", "format": "uri"})]

Integer = Annotated[int, BeforeValidator(_json_integer)]
NonNegativeInt = Annotated[int, Field(ge=0), BeforeValidator(_json_integer)]
PositiveInt = Annotated[int, Field(ge=1), BeforeValidator(_json_integer)]
NonNegativeFloat = Annotated[float, Field(ge=0)]

# ["string", "number", "boolean", "null"]; bool before int so that True stays a bool.
JsonScalar = str | bool | int | float | None

DetailCta = Literal["view_details", "add_to_itinerary"]
ReceiptCta = Literal["view_full", "new_search"]
FlightDirection = Literal["one-way", "outbound", "inbound", "round-trip", ""]
AnnotationKind = Literal["info", "warning", "success", "error"]


# --------------------------------------------------------------------------------------------
# Base classes
# --------------------------------------------------------------------------------------------


def _drop_null_defaults(schema: dict[str, Any]) -> None:
    """``name: T = None`` means "optional key"; keep ``"default": null`` out of the JSON Schema."""
    for prop in schema.get("properties", {}).values():
        if "default" in prop and prop["default"] is None:
            del prop["default"]


class _Closed(BaseModel):
    """A JSON object with ``additionalProperties: false``."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_drop_null_defaults)


class _Open(BaseModel):
    """A JSON object with ``additionalProperties: true`` (extra keys of any type are kept)."""

    model_config = ConfigDict(extra="allow", json_schema_extra=_drop_null_defaults)


# --------------------------------------------------------------------------------------------
# ai_adjustments (three shapes, see the module docstring)
# --------------------------------------------------------------------------------------------


class Annotation(_Closed):
    target: str
    text: Annotated[str, Field(max_length=240)]
    kind: AnnotationKind = None


class _AdjustmentsBase(_Closed):
    emphasis: str = None
    annotations: list[Annotation] = None


class AiAdjustments(_AdjustmentsBase):
    """The envelope's optional ``ai_adjustments`` (the oracle never emits it)."""

    conditional_fields: dict[str, JsonScalar] = None


class CardUpsellBanner(_Closed):
    text: str
    action_label: str
    action_id: str = None


class HotelCardAiAdjustments(_AdjustmentsBase):
    upsell_banner: CardUpsellBanner = None


class FlightCardAiAdjustments(_AdjustmentsBase):
    pass


# --------------------------------------------------------------------------------------------
# Chat widgets: bot_text, user_text, typing_indicator, notification, error_card, loading_card
# --------------------------------------------------------------------------------------------


class BotTextPayload(_Closed):
    text: str
    timestamp: DateTimeStr = None
    markdown: bool = None  # schema default: true


class UserTextPayload(_Closed):
    text: str
    timestamp: DateTimeStr = None
    user_avatar_url: UriStr = None


class TypingIndicatorPayload(_Closed):
    agent_name: str  # required; the schema's default "AdionaBot" is an annotation only


class NotificationPayload(_Closed):
    kind: Literal["info", "warning", "error", "success"]
    text: str
    dismissible: bool = None  # schema default: true


class ErrorCardPayload(_Closed):
    title: str
    description: str
    retry_action_id: str = None
    contact_support: bool = None


class LoadingCardPayload(_Closed):
    tool_name: str
    started_at: DateTimeStr
    expected_duration_seconds: NonNegativeInt = None


# --------------------------------------------------------------------------------------------
# Slot pickers: date_range_picker, party_picker, place_autocomplete_input
# --------------------------------------------------------------------------------------------


class DateRange(_Closed):
    """``{from*, to*}`` (itinerary_summary.dates). ``from`` is a Python keyword, hence the alias."""

    from_: DateStr = Field(alias="from")
    to: DateStr


class SubmittedDateRange(DateRange):
    nights: NonNegativeInt


class DateRangePickerPayload(_Closed):
    min_date: DateStr
    max_date: DateStr
    default_from: DateStr = None
    default_to: DateStr = None
    locale: Literal["en", "ru"]
    submit: Literal["submit"]
    submitted_value: SubmittedDateRange = None


class ChildAge(_Closed):
    age: Annotated[int, Field(ge=0, le=17), BeforeValidator(_json_integer)]


class SubmittedParty(_Closed):
    rooms: PositiveInt
    adults: PositiveInt
    children: list[ChildAge]


class PartyPickerPayload(_Closed):
    rooms_max: PositiveInt
    adults_max: PositiveInt
    children_max: NonNegativeInt
    allow_child_ages: bool
    submitted_value: SubmittedParty = None


class PlaceSuggestion(_Closed):
    label: str
    id: str
    kind: Literal["airport", "city", "landmark"]


class PlaceAutocompleteInputPayload(_Closed):
    placeholder: str
    suggestions: list[PlaceSuggestion]
    submit_on_select: bool
    submitted_value: PlaceSuggestion = None


# --------------------------------------------------------------------------------------------
# Places: place_card, place_list
# --------------------------------------------------------------------------------------------


class PlaceCardPayload(_Closed):
    place_id: str
    name: str
    types: list[str]
    photos: list[UriStr]
    rating: Annotated[float, Field(ge=0, le=5)] = None
    rating_count: NonNegativeInt = None
    opening_hours: str = None
    address: str = None
    ctas: list[DetailCta] = None


class PlaceListPayload(_Closed):
    title: str
    items: list[PlaceCardPayload]


# --------------------------------------------------------------------------------------------
# Flights: flight_card (schema_version 2 fields all optional), flight_list
# --------------------------------------------------------------------------------------------


class FlightPlace(_Closed):
    """Itinerary ``origin`` / ``destination``: every key optional."""

    iata: str = None
    iataCode: str = None
    at: str = None  # no format in the schema
    city: str = None
    city_iata: str = None
    airport_name: str = None
    country_code: str = None
    time_zone: str = None
    terminal: str = None
    type: str = None


class SegmentEndpoint(FlightPlace):
    """Segment ``departure`` / ``arrival``: as :class:`FlightPlace`, with ``iata`` and ``at`` required."""

    iata: str
    at: str


class AirlineRef(_Closed):
    """Duffel airline reference; an empty logo URL means "no logo" (plain strings, no format)."""

    iata_code: str = None
    name: str = None
    logo_symbol_url: str = None
    logo_lockup_url: str = None
    conditions_of_carriage_url: str = None
    id: str = None


class Aircraft(_Closed):
    iata_code: str = None
    name: str = None


class FlightSegment(_Closed):
    departure: SegmentEndpoint
    arrival: SegmentEndpoint
    carrier: str
    flight_number: str = None
    duration: str
    stops: NonNegativeInt = None
    id: str = None
    carrierCode: str = None
    carrier_name: str = None
    # oneOf [object, null] / [object, string, null]: disjoint JSON types, so a union is exact.
    airline: AirlineRef | None = None
    marketing_carrier: AirlineRef | None = None
    operating_carrier: AirlineRef | str | None = None
    operating_carrier_name: str = None
    operating_airline: AirlineRef | None = None
    operating_flight_number: str = None
    number: str = None
    aircraft: Aircraft | None = None
    cabin_class: str | None = None
    distance: str | None = None
    numberOfStops: NonNegativeInt = None
    technical_stops: list[dict[str, Any]] = None


class FlightItinerary(_Closed):
    duration: str = None
    segments: list[FlightSegment]
    id: str = None
    direction: FlightDirection = None
    origin: FlightPlace = None
    destination: FlightPlace = None
    stops: NonNegativeInt = None


class FlightPrice(_Closed):
    total: str
    currency: str
    base: str | None = None
    tax: str | None = None


class Baggage(_Closed):
    checked: NonNegativeInt = None
    carry_on: NonNegativeInt = None
    known: bool = None


class Conditions(_Closed):
    changeable: bool | None = None
    refundable: bool | None = None


class BaggageOption(_Closed):
    scope: Literal["included", "available"]
    type: str
    quantity: NonNegativeInt
    amount: str | None = None
    currency: str | None = None
    service_id: str | None = None
    max_weight_kg: float | None = None
    max_height_cm: float | None = None
    max_length_cm: float | None = None
    max_depth_cm: float | None = None
    segment_ids: list[str] = None
    passenger_ids: list[str] = None


class ConditionOption(_Closed):
    scope: Literal["offer", "slice"]
    type: str
    key: str = None
    allowed: bool | None  # required, but null ("the fare does not state it") is allowed
    penalty_amount: str | None = None
    penalty_currency: str | None = None
    slice_id: str = None
    slice_direction: str = None


class FlightCardPayload(_Closed):
    offer_id: str
    price: FlightPrice
    itineraries: list[FlightItinerary]
    carriers: list[str]
    duration: str
    stops: NonNegativeInt
    validating_airline: str = None
    ctas: list[Literal["view_details", "book_this"]] = None
    ai_adjustments: FlightCardAiAdjustments = None
    # schema_version 2 additions (all optional)
    direction: FlightDirection = None
    airline: AirlineRef | None = None
    airlines: list[AirlineRef] = None
    baggage: Baggage | None = None
    conditions: Conditions | None = None
    baggage_options: list[BaggageOption] = None
    baggage_known: bool = None
    conditions_options: list[ConditionOption] = None
    conditions_known: bool = None
    fare_brand: str | None = None
    passenger_count: Integer | None = None
    expires_at: str | None = None
    live_mode: bool | None = None


class FlightListPayload(_Closed):
    title: str
    items: list[FlightCardPayload]
    emphasis_offer_id: str = None
    total_count: NonNegativeInt
    currency: str


# --------------------------------------------------------------------------------------------
# Hotels: hotel_card, hotel_list, hotel_compare, hotel_confirmation
# --------------------------------------------------------------------------------------------


class HotelLocation(_Closed):
    lat: float = None
    lng: float = None
    city: str = None


class HotelCardPayload(_Closed):
    hotel_id: str
    name: str
    location: HotelLocation = None
    star_rating: Annotated[float, Field(ge=0, le=5)] = None
    score: Annotated[float, Field(ge=0, le=10)]
    score_count: NonNegativeInt = None
    thumb_up_count: NonNegativeInt = None
    thumb_down_count: NonNegativeInt = None
    photos: list[UriStr]
    amenities: list[str]
    price_per_night: NonNegativeFloat = None
    currency: str
    rooms_matching: NonNegativeInt = None
    available_rooms: NonNegativeInt = None
    address: str = None
    distance_from_center: str = None
    rate_key: str = None
    ctas: list[Literal["watch_in_detail", "show_numbers", "book"]] = None
    ai_adjustments: HotelCardAiAdjustments = None


class ListUpsellBanner(_Closed):
    """hotel_list's banner: unlike the hotel_card one, ``action_id`` is required."""

    text: str
    action_label: str
    action_id: str


class HotelListPayload(_Closed):
    title: str
    items: list[HotelCardPayload]
    total_count: NonNegativeInt
    filter_summary: str = None
    upsell_banner: ListUpsellBanner = None


class HotelComparePayload(_Closed):
    items: Annotated[list[HotelCardPayload], Field(min_length=2, max_length=2)]
    comparison_facets: list[str]


class HotelConfirmationPayload(_Closed):
    booking_reference: str
    hotel_name: str
    status: str = None
    check_in: str = None  # plain strings, no format
    check_out: str = None
    total_amount: str
    total_currency: str
    destination: str = None
    ctas: list[ReceiptCta] = None


# --------------------------------------------------------------------------------------------
# Activities and transfers
# --------------------------------------------------------------------------------------------


class ActivityModality(_Closed):
    code: str = None
    name: str = None
    duration: Any = None  # schema {}: any JSON value, null included


class ActivityItem(_Closed):
    activity_code: str
    name: str
    type: str = None
    country: str = None
    currency: str
    amount_from: NonNegativeFloat = None
    modalities_count: NonNegativeInt = None
    modalities: list[ActivityModality] = None
    description: str = None
    ctas: list[DetailCta] = None


class ActivityListPayload(_Closed):
    title: str
    items: list[ActivityItem]
    total_count: NonNegativeInt
    filter_summary: str = None


class TransferItem(_Closed):
    transfer_id: str
    transfer_type: str = None
    vehicle_name: str = None
    category_name: str = None
    total_amount: NonNegativeFloat = None
    currency: str
    direction: str = None
    detail: str = None
    ctas: list[DetailCta] = None


class TransferListPayload(_Closed):
    title: str
    items: list[TransferItem]
    total_count: NonNegativeInt
    route_summary: str = None


# --------------------------------------------------------------------------------------------
# Choices: action_chooser, clarify_question
# --------------------------------------------------------------------------------------------


class ActionOption(_Closed):
    label: str
    action_id: str
    illustration_url: UriStr = None


class SubmittedAction(_Closed):
    action_id: str


class ActionChooserPayload(_Closed):
    prompt_text: str
    options: list[ActionOption]
    submitted_value: SubmittedAction = None


class ClarifyOption(_Closed):
    label: str
    action_id: str


class ClarifyQuestionPayload(_Closed):
    question_text: str
    options: list[ClarifyOption]


# --------------------------------------------------------------------------------------------
# Right pane: map_view, filter_panel, property_block
# --------------------------------------------------------------------------------------------


class MapCenter(_Closed):
    lat: float
    lng: float


class MapMarker(_Closed):
    lat: float
    lng: float
    label: str
    hotel_id: str = None
    state: Literal["normal", "selected", "viewed"]


class MapFilterState(_Closed):
    star_rating: list[float] = None
    budget_min: float = None
    budget_max: float = None
    guest_rating_min: float = None


class MapViewPayload(_Closed):
    center: MapCenter
    zoom: Annotated[int, Field(ge=1, le=22), BeforeValidator(_json_integer)]
    markers: list[MapMarker]
    selected_marker_id: str = None
    filter_state: MapFilterState = None


class BudgetRange(_Closed):
    min: float
    max: float
    currency: str


class AppliedFilters(_Closed):
    hotel_category: list[str] = None
    budget_min: float = None
    budget_max: float = None
    guest_rating_min: float = None


class FilterPanelPayload(_Closed):
    hotel_category_options: list[str]
    budget_range: BudgetRange
    guest_rating_options: list[float]
    applied: AppliedFilters
    ctas: list[Literal["clear_all", "apply"]] = None


class PropertySlot(_Closed):
    label: str
    value: JsonScalar = None
    edit_action_id: str = None
    missing: bool


class PropertyBlockPayload(_Closed):
    slots: list[PropertySlot]


# --------------------------------------------------------------------------------------------
# Trip: itinerary_summary, order_confirmation, calendar_view
# --------------------------------------------------------------------------------------------


class TotalCost(_Closed):
    amount: float = None
    currency: str = None


class ItinerarySummaryPayload(_Closed):
    destination: str
    dates: DateRange
    traveller_party: dict[str, Any]  # any object
    picked_flight: FlightCardPayload = None
    picked_hotel: HotelCardPayload = None
    total_cost: TotalCost = None
    notes: str = None
    ctas: list[Literal["confirm", "edit"]] = None


class OrderDocument(_Open):
    """Duffel document; declared keys are typed, any other key is allowed."""

    unique_identifier: str = None
    type: str = None
    document_url: str = None  # plain string, no format


class OrderConfirmationPayload(_Closed):
    order_id: str
    booking_reference: str
    total_amount: str
    total_currency: str
    passengers: list[dict[str, Any]] = None
    slices: list[dict[str, Any]] = None
    ctas: list[ReceiptCta] = None
    documents: list[OrderDocument] = None


class CalendarEvent(_Closed):
    event_id: Annotated[str, Field(min_length=1)]
    type: Literal["flight_depart", "flight_arrive", "check_in", "check_out", "activity", "user_note"]
    start_at: DateTimeStr
    end_at: DateTimeStr | None = None
    timezone: Annotated[str, Field(min_length=1)]
    title: Annotated[str, Field(min_length=1, max_length=120)]
    location: Annotated[str, Field(max_length=180)]
    notes: Annotated[str, Field(max_length=1000)] | None = None
    source_order_id: str | None = None
    source_hotel_id: str | None = None
    created_at: DateTimeStr | None = None
    updated_at: DateTimeStr | None = None
    google_calendar_event_id: str | None = None


class CalendarViewPayload(_Closed):
    trip_id: Annotated[str, Field(min_length=1)]
    events_path: str = None  # deprecated, kept optional
    display_events: list[CalendarEvent] = None
    editable: bool
    empty_state_text: Annotated[str, Field(max_length=240)] = None


# --------------------------------------------------------------------------------------------
# Registry, envelope, errors
# --------------------------------------------------------------------------------------------

PAYLOAD_MODELS: dict[str, type[BaseModel]] = {
    "bot_text": BotTextPayload,
    "user_text": UserTextPayload,
    "typing_indicator": TypingIndicatorPayload,
    "date_range_picker": DateRangePickerPayload,
    "party_picker": PartyPickerPayload,
    "place_autocomplete_input": PlaceAutocompleteInputPayload,
    "flight_list": FlightListPayload,
    "flight_card": FlightCardPayload,
    "hotel_list": HotelListPayload,
    "hotel_card": HotelCardPayload,
    "hotel_compare": HotelComparePayload,
    "activity_list": ActivityListPayload,
    "transfer_list": TransferListPayload,
    "place_list": PlaceListPayload,
    "place_card": PlaceCardPayload,
    "action_chooser": ActionChooserPayload,
    "map_view": MapViewPayload,
    "filter_panel": FilterPanelPayload,
    "property_block": PropertyBlockPayload,
    "itinerary_summary": ItinerarySummaryPayload,
    "order_confirmation": OrderConfirmationPayload,
    "hotel_confirmation": HotelConfirmationPayload,
    "notification": NotificationPayload,
    "error_card": ErrorCardPayload,
    "clarify_question": ClarifyQuestionPayload,
    "loading_card": LoadingCardPayload,
    "calendar_view": CalendarViewPayload,
}
if tuple(PAYLOAD_MODELS) != WIDGET_TYPES:  # pragma: no cover - guards against vocabulary drift
    raise RuntimeError("PAYLOAD_MODELS does not follow contracts.vocab.WIDGET_TYPES")


def format_validation_error(exc: ValidationError) -> list[str]:
    """One ``"loc: message"`` string per pydantic error (``loc`` dotted, ``<root>`` when empty)."""
    return [f"{'.'.join(str(part) for part in err['loc']) or '<root>'}: {err['msg']}" for err in exc.errors()]


def payload_errors(widget_type: str, payload: Any) -> list[str]:
    """Human-readable errors of ``payload`` as a ``widget_type`` payload; ``[]`` when it is valid."""
    model = PAYLOAD_MODELS.get(widget_type) if isinstance(widget_type, str) else None
    if model is None:
        return [f"widget_type: unknown widget type {widget_type!r}"]
    try:
        model.model_validate(payload, strict=True)
    except ValidationError as exc:
        return format_validation_error(exc)
    return []


SchemaVersion = Annotated[Literal[1, 2], BeforeValidator(_json_integer)]


class _EnvelopeBase(_Closed):
    """Fields of ``_envelope.schema.json``; ``payload`` is typed in the subclasses' way."""

    schema_version: SchemaVersion
    widget_type: WidgetType
    variant: str
    payload: dict[str, Any]
    # May be absent (the attribute then reads None) but, as in the schema, not JSON null.
    ai_adjustments: AiAdjustments = None


class Envelope(_EnvelopeBase):
    """A widget envelope; validating it also validates ``payload`` against its widget_type's model."""

    @model_validator(mode="after")
    def _validate_payload(self) -> Envelope:
        errors = payload_errors(self.widget_type, self.payload)
        if errors:
            details = "; ".join(f"payload.{line}" for line in errors)
            raise ValueError(f"invalid {self.widget_type} payload: {details}")
        return self


def _typed_envelope(widget_type: str, payload_model: type[BaseModel]) -> type[BaseModel]:
    name = payload_model.__name__.removesuffix("Payload") + "Envelope"
    return create_model(
        name,
        __base__=_EnvelopeBase,
        __module__=__name__,
        __doc__=f"Envelope of a {widget_type} widget (payload typed; used to derive decoding grammars).",
        widget_type=(Literal[widget_type], ...),
        payload=(payload_model, ...),
    )


TYPED_ENVELOPES: dict[str, type[BaseModel]] = {
    widget_type: _typed_envelope(widget_type, model) for widget_type, model in PAYLOAD_MODELS.items()
}
