"""What the live planner sends, mapped onto the contract (``docs/planner-input.md``; liberal in, strict out).

Two inputs arrive in shapes the contract does not have:

* the planner's ``tool_result`` (cards at the top level beside ``call_id``, ``tool``, ``ok``, ``isError``,
  ``response_summary`` ..., no ``data`` wrapper) where the contract has ``{ok, tool, data}``;
* the live ``extract_turn`` output: slot aliases, unknown slot keys, ``null`` clears, extra, missing or
  differently-typed tool arguments, ``render_intent`` as a bare string, ``clarify`` / ``error`` without
  ``reason``, ``missing`` on other kinds, ``blocking``, the legacy Amadeus hotel tool.

Every rule that maps a live shape to contract data is a row of :data:`RULES` (its id is the bounded
``rule`` label of the ``travel_slm_input_notes_total`` metric); the value-level tables the rules use are
:data:`SLOT_ALIASES`, :data:`SLOT_COERCERS`, :data:`TOOL_ALIASES`, :data:`TOOL_ARGS`,
:data:`INTENT_REASON_DEFAULTS`, :data:`CARD_MODELS` and :data:`CARD_DEFAULTS`. Each application of a
rule is reported as an :class:`InputNote` ``{path, action, rule}`` (``action``: ``mapped``, ``dropped``
or ``defaulted``), never with the value itself (it may hold user text).

Entry points: :func:`normalise_tool_summary`, :func:`normalise_extraction`,
:func:`normalise_render_slot_state`. All are idempotent, and leave contract-shaped input unchanged.
"""

from __future__ import annotations

import functools
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, TypeAdapter, ValidationError

from contracts.vocab import MISSING_VALUES, RENDER_INTENT_KINDS, TOOLS
from contracts.widgets import (
    ActivityItem,
    FlightCardPayload,
    HotelCardPayload,
    HotelConfirmationPayload,
    OrderConfirmationPayload,
    PlaceCardPayload,
    TransferItem,
    is_date,
)

Action = Literal["mapped", "dropped", "defaulted"]


class InputNote(BaseModel):
    """One application of a mapping rule: where, what was done, and which rule of :data:`RULES`."""

    path: str
    action: Action
    rule: str


@dataclass(frozen=True)
class Rule:
    action: Action
    description: str


#: The mapping table: rule id -> (action, what it does). Ids are the metric's ``rule`` label values.
RULES: dict[str, Rule] = {
    # tool_result -> {ok, tool, data}
    "tool_result.cards_to_data": Rule("mapped", "planner tool_result: top-level cards (places, offers, groups, "
                                      "order, hotels, activities, transfers, hotel_booking) moved under data"),
    "tool_result.is_error": Rule("mapped", "isError true means a provider failure: ok becomes false"),
    "tool_result.ok_not_bool": Rule("defaulted", "ok that is not a boolean: true unless isError"),
    "tool_result.order_fields": Rule("mapped", "the Duffel order card is flattened into data (order_id, "
                                     "booking_reference, totals, passengers, slices, documents, ctas)"),
    "tool_result.not_a_list": Rule("dropped", "a card list that is not a list"),
    "card.not_an_object": Rule("dropped", "a card that is not a JSON object"),
    "card.field_not_in_contract": Rule("dropped", "a card field the widget contract does not allow"),
    "card.field_coerced": Rule("mapped", "a card field of the wrong JSON type converted (e.g. \"4.5\" -> 4.5, "
                               "412 -> \"412\") or cleaned of invalid list entries"),
    "card.field_invalid": Rule("dropped", "an optional card field whose value the contract refuses"),
    "card.field_defaulted": Rule("defaulted", "a required card field that is missing or invalid, given the "
                                 "planner's own default"),
    "card.invalid": Rule("dropped", "a card lacking a required field without a default (not rendered)"),
    # extraction
    "extraction.extra_key": Rule("dropped", "a top-level extraction key other than slot_updates, tool_requests, "
                                 "render_intent"),
    "extraction.null_section": Rule("defaulted", "slot_updates or tool_requests null: empty"),
    "slot.alias": Rule("mapped", "slot alias renamed (departure_date, depart_date, start_date -> check_in_date; "
                       "return_date, end_date -> check_out_date; travelers, passengers -> party)"),
    "slot.alias_shadowed": Rule("dropped", "slot alias whose target key is also present"),
    "slot.not_in_contract": Rule("dropped", "a slot key the render pass does not read and the contract does not "
                                 "carry (dates_explicit_range, max_flight_hours, budget, flight_origin, ...)"),
    "slot.null_clear": Rule("mapped", "null clears the slot: the key is removed from the slot state the render "
                            "reads"),
    "slot.value_coerced": Rule("mapped", "a slot value converted to the contract type (region without kind or "
                               "country_code, party without rooms, children as ages or a count, a date-time "
                               "cut to its date, a numeric string)"),
    "slot.value_invalid": Rule("dropped", "a slot value that cannot be read as the contract type"),
    "tool.alias": Rule("mapped", "legacy tool id (mcp/amadeus.search_hotels) or tool_id/tool_name key mapped to "
                       "the live tool"),
    "tool.unknown": Rule("dropped", "a tool request outside the 7 live tools"),
    "tool.extra_request": Rule("dropped", "tool requests after the first (the contract carries 0 or 1)"),
    "tool.arguments_not_object": Rule("defaulted", "tool arguments that are not an object: all defaulted"),
    "arg.alias": Rule("mapped", "argument synonym renamed (text, textQuery -> query; dest, city -> destination; "
                      "offerId -> offer_id; rateKey -> rate_key; fromCode, from -> from_code; Amadeus camelCase)"),
    "arg.extra": Rule("dropped", "an argument the contract shape of the tool does not have (passengers, "
                      "return_date, to_code, children, language, ...)"),
    "arg.missing": Rule("defaulted", "a missing argument given the contract default"),
    "arg.coerced": Rule("mapped", "an argument converted to the contract type (date-time cut to its date, "
                        "numeric string, children list to its count)"),
    "arg.outside_contract": Rule("defaulted", "an argument value outside the contract (origin other than SFO, "
                                 "to_type GPS, cabin_class, passenger details, radius, max_results)"),
    "intent.bare_string": Rule("mapped", "render_intent given as a bare kind string"),
    "intent.unknown_kind": Rule("defaulted", "render_intent without a known kind: summarize (the oracle's "
                                "default)"),
    "intent.reason_defaulted": Rule("defaulted", "clarify/error without a valid reason: the kind's default "
                                    "reason"),
    "intent.reason_dropped": Rule("dropped", "reason on a kind other than clarify/error"),
    "intent.missing_dropped": Rule("dropped", "missing on a kind other than collect_missing"),
    "intent.missing_mapped": Rule("mapped", "collect_missing values outside region/dates/party dropped, order "
                                  "made canonical; none left: region (the oracle's reading of an empty list)"),
    "intent.blocking_dropped": Rule("dropped", "blocking (the planner's blocked provider search)"),
    "intent.extra_key": Rule("dropped", "another render_intent key"),
    # slot_state the render reads
    "slot_state.value_invalid": Rule("dropped", "a slot_state value the passes read (region, dates, party, "
                                     "picked offer) of a shape they cannot use"),
    "slot_state.value_coerced": Rule("mapped", "a slot_state value the passes read converted to its type"),
}

RULE_IDS: frozenset[str] = frozenset(RULES)


class Notes:
    """Collects :class:`InputNote` rows (deduplicated, bounded)."""

    LIMIT = 200

    def __init__(self) -> None:
        self.items: list[InputNote] = []
        self._seen: set[tuple[str, str]] = set()

    def add(self, path: str, rule: str) -> None:
        if rule not in RULES:  # pragma: no cover - a programming error, caught by the tests
            raise KeyError(rule)
        path = path[:200]  # request key names are caller-chosen: bounded
        key = (path, rule)
        if key in self._seen or len(self.items) >= self.LIMIT:
            return
        self._seen.add(key)
        self.items.append(InputNote(path=path, action=RULES[rule].action, rule=rule))

    def extend(self, other: Notes) -> None:
        for note in other.items:
            self.add(note.path, note.rule)

    def dump(self) -> list[dict[str, str]]:
        return [n.model_dump() for n in self.items]


_MISS = object()

# --- value coercion helpers --------------------------------------------------------------------------------

_DATE_PREFIX = re.compile(r"^(\d{4}-\d{2}-\d{2})(?:$|[T ])")
#: at most 18 digits: int() of a longer digit string is slow, and over 4,300 digits it raises
_INT_TEXT = re.compile(r"^\s*-?\d{1,18}\s*$")
#: a children count above this is not a party (and must not allocate a list of that length)
MAX_CHILDREN = 50


def iso_date(value: Any) -> Any:
    """``"2026-10-10"`` as is; a date-time cut to its date; anything else :data:`_MISS`."""
    if isinstance(value, str):
        m = _DATE_PREFIX.match(value.strip())
        if m:
            return m.group(1)
    return _MISS


def is_count(value: Any) -> bool:
    """A JSON integer >= 0 (not a boolean): the contract's ``Count``."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def is_real_date(value: Any) -> bool:
    """``YYYY-MM-DD`` naming a real day (the widget contract's ``format: date``)."""
    return isinstance(value, str) and len(value) == 10 and _real_date(value)


#: the widget contract's own check, memoised: a session's few dates are read again on every pass
_real_date = functools.lru_cache(maxsize=4096)(is_date)


def count(value: Any) -> Any:
    """A non-negative int from an int, an integral float or a numeric string."""
    if isinstance(value, bool):
        return _MISS
    if isinstance(value, int):
        return value if value >= 0 else _MISS
    if isinstance(value, float) and value.is_integer() and value >= 0:
        return int(value)
    if isinstance(value, str) and _INT_TEXT.match(value) and int(value) >= 0:
        return int(value)
    return _MISS


def text(value: Any) -> Any:
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return _MISS


def region(value: Any) -> Any:
    """``{label, city_code, country_code, kind?, scope?}`` from a dict (missing codes ``""``) or a label."""
    if isinstance(value, str):
        return {"label": value, "city_code": "", "country_code": ""} if value.strip() else _MISS
    if not isinstance(value, dict):
        return _MISS
    out: dict[str, Any] = {}
    for key in ("label", "city_code", "country_code"):
        v = text(value.get(key)) if value.get(key) is not None else ""
        out[key] = "" if v is _MISS else v
    if not out["label"]:
        out["label"] = out["city_code"] or (text(value.get("name")) if isinstance(value.get("name"), str) else "")
    if not (out["label"] or out["city_code"]):
        return _MISS
    kind = value.get("kind")
    if isinstance(kind, str):
        out["kind"] = kind
    if value.get("scope") == "region":
        out["scope"] = "region"
    return out


def party(value: Any) -> Any:
    """``{rooms, adults, children: [{age}?]}``; rooms and adults default 1, children from ages or a count."""
    if not isinstance(value, dict):
        n = count(value)
        return _MISS if n is _MISS or n == 0 else {"rooms": 1, "adults": n, "children": []}
    rooms = count(value.get("rooms", 1))
    adults = count(value.get("adults", 1))
    raw_children = value.get("children", [])
    children: list[dict[str, Any]] = []
    if isinstance(raw_children, list):
        for child in raw_children:
            age = child.get("age") if isinstance(child, dict) else child
            n = count(age)
            children.append({"age": n} if n is not _MISS and n <= 17 else {})
    else:
        n = count(raw_children)
        children = [{} for _ in range(n)] if n is not _MISS and n <= MAX_CHILDREN else []
    return {"rooms": 1 if rooms is _MISS else rooms, "adults": 1 if adults is _MISS else adults,
            "children": children}


#: slot aliases (planner_io 2.2): alias -> contract key
SLOT_ALIASES: dict[str, str] = {
    "departure_date": "check_in_date", "depart_date": "check_in_date", "start_date": "check_in_date",
    "return_date": "check_out_date", "end_date": "check_out_date",
    "travelers": "party", "travellers": "party", "passengers": "party",
}

#: contract slot key -> coercer (value -> contract value, or _MISS)
SLOT_COERCERS: dict[str, Callable[[Any], Any]] = {
    "region": region,
    "check_in_date": iso_date,
    "check_out_date": iso_date,
    "nights": count,
    "party": party,
    "picked_flight_offer_id": text,
    "picked_hotel_id": text,
}

#: tool ids mapped onto live tools
TOOL_ALIASES: dict[str, str] = {
    "mcp/amadeus.search_hotels": "mcp/hotelbeds.search_hotels",
    "amadeus.search_hotels": "mcp/hotelbeds.search_hotels",
}


def _const(value: Any) -> Callable[[Any], Any]:
    return lambda v: value if v == value else _MISS


def _one_of(*values: Any) -> Callable[[Any], Any]:
    return lambda v: v if v in values and not isinstance(v, bool) else _MISS


def _date_or_null(value: Any) -> Any:
    return None if value is None else iso_date(value)


def _children_count(value: Any) -> Any:
    return len(value) if isinstance(value, list) else count(value)


def _passengers(value: Any) -> Any:
    expected = [{"given_name": "Alex", "family_name": "Traveller"}]
    return expected if value == expected else _MISS


@dataclass(frozen=True)
class Arg:
    """One contract argument: where it may come from, how to read it, and its default."""

    sources: tuple[str, ...]
    coerce: Callable[[Any], Any]
    default: Any


_ADULTS = Arg(("adults",), count, 1)
#: tool -> contract argument -> Arg (planner_io 2.2 synonyms; the Amadeus camelCase names)
TOOL_ARGS: dict[str, dict[str, Arg]] = {
    "mcp/google-places.search_text": {
        "query": Arg(("query", "text", "textQuery", "text_query", "q", "search", "place"), text, ""),
        "max_results": Arg(("max_results", "maxResults"), _one_of(5, 8), 5),
    },
    "mcp/duffel.search_offers": {
        "origin": Arg(("origin", "origin_code", "from"), _const("SFO"), "SFO"),
        "destination": Arg(("destination", "dest", "to", "city", "destination_code"), text, ""),
        "departure_date": Arg(("departure_date", "depart_date", "date", "check_in"), _date_or_null, None),
        "adults": _ADULTS,
        "cabin_class": Arg(("cabin_class", "cabin"), _const("economy"), "economy"),
    },
    "mcp/duffel.create_order": {
        "offer_id": Arg(("offer_id", "offerId", "id"), text, ""),
        "passengers": Arg(("passengers",), _passengers, [{"given_name": "Alex", "family_name": "Traveller"}]),
        "duffel_env": Arg(("duffel_env",), text, "test"),
    },
    "mcp/hotelbeds.search_hotels": {
        "city": Arg(("city", "city_name", "destination"), text, ""),
        "city_code": Arg(("city_code", "cityCode"), text, ""),
        "check_in": Arg(("check_in", "checkInDate", "check_in_date"), _date_or_null, None),
        "check_out": Arg(("check_out", "checkOutDate", "check_out_date"), _date_or_null, None),
        "adults": _ADULTS,
        "rooms": Arg(("rooms", "roomQuantity"), count, 1),
        "children": Arg(("children",), _children_count, 0),
        "radius": Arg(("radius",), _const(20), 20),
    },
    "mcp/hotelbeds.book_hotel": {
        "rate_key": Arg(("rate_key", "rateKey"), text, ""),
        "holder_name": Arg(("holder_name",), _const("Alex"), "Alex"),
        "holder_surname": Arg(("holder_surname",), _const("Traveller"), "Traveller"),
        "adults": _ADULTS,
    },
    "mcp/hotelbeds-activities.search_activities": {
        "destination": Arg(("destination", "dest", "city", "destination_code"), text, ""),
        "from": Arg(("from", "from_date", "start_date"), _date_or_null, None),
        "to": Arg(("to", "to_date", "end_date"), _date_or_null, None),
        "language": Arg(("language",), _const("en"), "en"),
        "adults": _ADULTS,
    },
    "mcp/hotelbeds-transfers.search_transfers": {
        "from_type": Arg(("from_type",), _const("IATA"), "IATA"),
        "from_code": Arg(("from_code", "fromCode", "origin_code", "from"), text, ""),
        "to_type": Arg(("to_type",), _const("ATLAS"), "ATLAS"),
        "outbound": Arg(("outbound", "outbound_date", "date"), _date_or_null, None),
        "adults": _ADULTS,
    },
}

#: clarify/error without a (valid) reason
INTENT_REASON_DEFAULTS: dict[str, str] = {"error": "provider_unavailable", "clarify": "confirmation_required"}
_REASONS: dict[str, frozenset[str]] = {
    "error": frozenset({"pii_redacted", "provider_unavailable", "out_of_domain"}),
    "clarify": frozenset({"confirmation_required", "contradictory_constraints", "blocker_needs_verification"}),
}

#: data key of a card list -> (contract model of one card, id field)
CARD_MODELS: dict[str, tuple[type[BaseModel], str]] = {
    "places": (PlaceCardPayload, "place_id"),
    "offers": (FlightCardPayload, "offer_id"),
    "hotels": (HotelCardPayload, "hotel_id"),
    "activities": (ActivityItem, "activity_code"),
    "transfers": (TransferItem, "transfer_id"),
}
#: the planner's own defaults of required card fields (planner_io 1.3-1.9)
CARD_DEFAULTS: dict[str, dict[str, Any]] = {
    "places": {"name": "Place", "types": [], "photos": []},
    "offers": {"carriers": [], "stops": 0, "duration": "PT0H", "itineraries": []},
    "hotels": {"score": 0.0, "photos": [], "amenities": [], "currency": "EUR"},
    "activities": {"currency": "EUR"},
    "transfers": {"currency": "EUR"},
    "order": {"total_amount": "0.00", "total_currency": "USD"},
    "hotel_booking": {"hotel_name": "Hotel", "total_amount": "0.00", "total_currency": "EUR",
                      "booking_reference": ""},
}
#: the planner tool_result keys that carry cards (planner_io 1.2)
TOOL_RESULT_CARD_KEYS: tuple[str, ...] = ("places", "offers", "groups", "over_budget_excluded", "order", "hotels",
                                          "activities", "transfers", "hotel_booking")
ORDER_FIELDS: tuple[str, ...] = ("order_id", "booking_reference", "total_amount", "total_currency", "passengers",
                                 "slices", "documents", "ctas")

# --- cards ---------------------------------------------------------------------------------------------------

_ADAPTERS: dict[tuple[type[BaseModel], str], TypeAdapter[Any]] = {}


def _field_adapter(model: type[BaseModel], name: str) -> TypeAdapter[Any]:
    key = (model, name)
    if key not in _ADAPTERS:
        info = model.model_fields[name]
        annotation: Any = info.annotation
        if info.metadata:
            annotation = typing.Annotated[(annotation, *info.metadata)]
        _ADAPTERS[key] = TypeAdapter(annotation)
    return _ADAPTERS[key]


def _valid(adapter: TypeAdapter[Any], value: Any) -> bool:
    try:
        adapter.validate_python(value, strict=True)
    except ValidationError:
        return False
    return True


def _model_type(annotation: Any) -> type[BaseModel] | None:
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        annotation = args[0]
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def _coerce_field(model: type[BaseModel], name: str, value: Any, path: str, notes: Notes) -> Any:
    """A value of ``model.name`` built from ``value``: nested objects made valid field by field, lax
    conversion, number -> text, list filtering."""
    adapter = _field_adapter(model, name)
    candidates: list[Any] = []
    annotation = model.model_fields[name].annotation
    nested = _model_type(annotation)
    if nested is not None and isinstance(value, dict):
        candidates.append(sanitise_card(nested, value, path, notes))
    list_args = [a for a in typing.get_args(annotation) if a is not type(None)]
    list_type = annotation if typing.get_origin(annotation) is list else next(
        (a for a in list_args if typing.get_origin(a) is list), None)
    item_model = _model_type(typing.get_args(list_type)[0]) if list_type is not None and typing.get_args(
        list_type) else None
    if item_model is not None and isinstance(value, list):
        items = [sanitise_card(item_model, v, f"{path}.{i}", notes) for i, v in enumerate(value)]
        candidates.append([v for v in items if v is not None])
    if isinstance(value, int | float) and not isinstance(value, bool):
        candidates.append(str(value))
    try:
        lax = adapter.validate_python(value)
        candidates.append(adapter.dump_python(lax, mode="json", by_alias=True, exclude_unset=True))
    except (ValidationError, ValueError, TypeError):
        pass
    if isinstance(value, list):
        annotation = model.model_fields[name].annotation
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        inner = args[0] if args and typing.get_origin(args[0]) is list else annotation
        item_args = typing.get_args(inner)
        if typing.get_origin(inner) is list and item_args:
            item_adapter = TypeAdapter(item_args[0])
            candidates.append([v for v in value if _valid(item_adapter, v)])
    for candidate in candidates:
        if _valid(adapter, candidate):
            return candidate
    return _MISS


def sanitise_card(model: type[BaseModel], card: Any, path: str, notes: Notes,
                  defaults: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """``card`` made valid for ``model`` (a valid card is returned unchanged), or None when it cannot be."""
    if not isinstance(card, dict):
        notes.add(path, "card.not_an_object")
        return None
    defaults = defaults or {}
    out = dict(card)
    for _ in range(len(out) + len(model.model_fields) + 2):
        try:
            model.model_validate(out, strict=True)
            return out
        except ValidationError as exc:
            keys = list(dict.fromkeys(e["loc"][0] for e in exc.errors() if e["loc"]))
        if not keys:
            break
        for key in keys:
            fpath = f"{path}.{key}"
            if not isinstance(key, str) or key not in model.model_fields:
                out.pop(key, None)  # type: ignore[arg-type]
                notes.add(fpath, "card.field_not_in_contract")
                continue
            required = model.model_fields[key].is_required()
            value = out.get(key, _MISS)
            coerced = (_coerce_field(model, key, value, fpath, notes) if value is not _MISS and value is not None
                       else _MISS)
            if coerced is not _MISS:
                out[key] = coerced
                notes.add(fpath, "card.field_coerced")
            elif key in defaults:
                out[key] = defaults[key]
                notes.add(fpath, "card.field_defaulted")
            elif required:
                notes.add(path, "card.invalid")
                return None
            else:
                out.pop(key, None)
                notes.add(fpath, "card.field_invalid")
    notes.add(path, "card.invalid")
    return None


def _cards(key: str, value: Any, path: str, notes: Notes) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        notes.add(path, "tool_result.not_a_list")
        return []
    model, _id = CARD_MODELS[key]
    out = []
    for i, card in enumerate(value):
        clean = sanitise_card(model, card, f"{path}.{i}", notes, CARD_DEFAULTS.get(key))
        if clean is not None:
            out.append(clean)
    return out


def _order_fields(order: dict[str, Any], path: str, notes: Notes) -> dict[str, Any]:
    """The Duffel order card (planner_io 1.5) as flat order_confirmation fields."""
    flat = {k: order[k] for k in ORDER_FIELDS if k in order}
    for k in order:
        if k not in ORDER_FIELDS:
            notes.add(f"{path}.{k}", "card.field_not_in_contract")
    oid = text(order.get("order_id")) if order.get("order_id") is not None else _MISS
    if oid is _MISS and order.get("id") is not None:
        oid = text(order.get("id"))
    ref = text(order.get("booking_reference")) if order.get("booking_reference") is not None else _MISS
    flat["order_id"] = oid if oid is not _MISS else (ref if ref is not _MISS else "")
    flat["booking_reference"] = ref if ref is not _MISS else flat["order_id"]
    for k, v in CARD_DEFAULTS["order"].items():
        if flat.get(k) is None:
            flat[k] = v
    return sanitise_card(OrderConfirmationPayload, flat, path, notes, {"order_id": flat["order_id"],
                         "booking_reference": flat["booking_reference"], **CARD_DEFAULTS["order"]}) or {}


def _clean_data(data: dict[str, Any], notes: Notes, prefix: str) -> dict[str, Any]:
    out = dict(data)
    for key in CARD_MODELS:
        if key in out:
            out[key] = _cards(key, out[key], f"{prefix}.{key}", notes)
    if isinstance(out.get("order"), dict):
        order = out.pop("order")
        notes.add(f"{prefix}.order", "tool_result.order_fields")
        out.update(_order_fields(order, f"{prefix}.order", notes))
    elif any(k in out for k in ("order_id", "booking_reference")):
        fields = {k: out[k] for k in ORDER_FIELDS if k in out}
        clean = sanitise_card(OrderConfirmationPayload, fields, prefix, notes,
                              {"order_id": "", "booking_reference": "", **CARD_DEFAULTS["order"]})
        for k in ORDER_FIELDS:
            out.pop(k, None)
        out.update(clean or {})
    if "hotel_booking" in out:
        booking = out["hotel_booking"]
        if isinstance(booking, dict):
            out["hotel_booking"] = sanitise_card(HotelConfirmationPayload, booking, f"{prefix}.hotel_booking", notes,
                                                 CARD_DEFAULTS["hotel_booking"]) or {}
        else:
            notes.add(f"{prefix}.hotel_booking", "card.not_an_object")
            out.pop("hotel_booking")
    if "groups" in out and not isinstance(out["groups"], dict):
        notes.add(f"{prefix}.groups", "card.not_an_object")
        out.pop("groups")
    return out


def normalise_tool_summary(raw: Any, notes: Notes | None = None, path: str = "tool_summary") -> dict[str, Any]:
    """The internal ``{ok, tool, data}`` from ours or the planner's ``tool_result`` (both accepted).

    ``ok`` is false when ``ok`` is false or ``isError`` is truthy. The planner's top-level cards become
    ``data`` keys (the order card is flattened into the order fields); every card is made valid for its
    widget contract (a valid card is kept as is). Other planner keys (``call_id``, ``response_summary``,
    ``raw_response`` ...) are carried, unread.
    """
    notes = notes if notes is not None else Notes()
    if not isinstance(raw, dict):
        return {"ok": True, "tool": "", "data": {}}
    out = dict(raw)
    ok = raw.get("ok", True)
    if not isinstance(ok, bool):
        notes.add(f"{path}.ok", "tool_result.ok_not_bool")
        ok = True
    if raw.get("isError"):
        if ok:
            notes.add(f"{path}.isError", "tool_result.is_error")
        ok = False
    tool = raw.get("tool")
    out["ok"] = ok
    out["tool"] = tool if isinstance(tool, str) else ""
    data = dict(raw["data"]) if isinstance(raw.get("data"), dict) else {}
    for key in TOOL_RESULT_CARD_KEYS:
        if key in raw:
            value = out.pop(key)
            if key not in data:
                data[key] = value
                notes.add(f"{path}.{key}", "tool_result.cards_to_data")
    out["data"] = _clean_data(data, notes, f"{path}.data")
    return out


# --- extraction ----------------------------------------------------------------------------------------------


class ExtractionShapeError(ValueError):
    """The extraction is not an object with slot_updates, tool_requests and render_intent (field-level)."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__("; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors))
        self.errors = errors


def _slot_updates(raw: dict[str, Any], notes: Notes, path: str) -> tuple[dict[str, Any], list[str]]:
    renamed: dict[str, Any] = {}
    for key, value in raw.items():
        target = SLOT_ALIASES.get(key)
        if target is None:
            continue
        if target in raw or target in renamed:
            notes.add(f"{path}.{key}", "slot.alias_shadowed")
        else:
            renamed[target] = value
            notes.add(f"{path}.{key}", "slot.alias")
    updates: dict[str, Any] = {}
    clears: list[str] = []
    for key, value in [*((k, v) for k, v in raw.items() if k not in SLOT_ALIASES), *renamed.items()]:
        kpath = f"{path}.{key}"
        coercer = SLOT_COERCERS.get(key)
        if coercer is None:
            notes.add(kpath, "slot.not_in_contract")
            continue
        if value is None:
            clears.append(key)
            notes.add(kpath, "slot.null_clear")
            continue
        coerced = coercer(value)
        if coerced is _MISS:
            notes.add(kpath, "slot.value_invalid")
            continue
        if coerced != value:
            notes.add(kpath, "slot.value_coerced")
        updates[key] = coerced
    return updates, clears


def _tool_request(raw: Any, notes: Notes, path: str) -> dict[str, Any] | None:
    if not isinstance(raw, dict):
        notes.add(path, "tool.unknown")
        return None
    tool = raw.get("tool")
    if not isinstance(tool, str) or not tool:
        alt = raw.get("tool_id") or raw.get("tool_name")
        if isinstance(alt, str) and alt:
            tool = alt
            notes.add(f"{path}.tool", "tool.alias")
    if isinstance(tool, str) and tool in TOOL_ALIASES:
        tool = TOOL_ALIASES[tool]
        notes.add(f"{path}.tool", "tool.alias")
    if not isinstance(tool, str) or tool not in TOOLS:
        notes.add(f"{path}.tool", "tool.unknown")
        return None
    args = raw.get("arguments")
    if args is None and isinstance(raw.get("args"), dict):
        args = raw["args"]
    if not isinstance(args, dict):
        notes.add(f"{path}.arguments", "tool.arguments_not_object")
        args = {}
    specs = TOOL_ARGS[tool]
    used: set[str] = set()
    out: dict[str, Any] = {}
    for name, spec in specs.items():
        apath = f"{path}.arguments.{name}"
        source = next((s for s in spec.sources if s in args and s not in used), None)
        if source is None:
            out[name] = spec.default
            notes.add(apath, "arg.missing")
            continue
        used.add(source)
        if source != name:
            notes.add(f"{path}.arguments.{source}", "arg.alias")
        value = spec.coerce(args[source])
        if value is _MISS:
            out[name] = spec.default
            notes.add(apath, "arg.outside_contract")
        else:
            if value != args[source] or type(value) is not type(args[source]):
                notes.add(apath, "arg.coerced")
            out[name] = value
    for key in args:
        if key not in used:
            notes.add(f"{path}.arguments.{key}", "arg.extra")
    return {"tool": tool, "arguments": out}


def _render_intent(raw: Any, notes: Notes, path: str) -> dict[str, Any]:
    if isinstance(raw, str):
        notes.add(path, "intent.bare_string")
        raw = {"kind": raw}
    if not isinstance(raw, dict):
        raw = {}
    kind = raw.get("kind")
    if not isinstance(kind, str) or kind not in RENDER_INTENT_KINDS:
        notes.add(f"{path}.kind", "intent.unknown_kind")
        kind = "summarize"
    out: dict[str, Any] = {"kind": kind}
    for key in raw:
        if key not in ("kind", "missing", "reason", "blocking"):
            notes.add(f"{path}.{key}", "intent.extra_key")
    if "blocking" in raw:
        notes.add(f"{path}.blocking", "intent.blocking_dropped")
    if kind == "collect_missing":
        given = raw.get("missing")
        values = [v for v in given if isinstance(v, str)] if isinstance(given, list) else []
        missing = [m for m in MISSING_VALUES if m in values]
        if not missing:
            missing = ["region"]
        if missing != given:
            notes.add(f"{path}.missing", "intent.missing_mapped")
        out["missing"] = missing
    elif "missing" in raw:
        notes.add(f"{path}.missing", "intent.missing_dropped")
    if kind in _REASONS:
        reason = raw.get("reason")
        if reason not in _REASONS[kind]:
            reason = INTENT_REASON_DEFAULTS[kind]
            notes.add(f"{path}.reason", "intent.reason_defaulted")
        out["reason"] = reason
    elif "reason" in raw:
        notes.add(f"{path}.reason", "intent.reason_dropped")
    return out


def normalise_extraction(raw: Any, notes: Notes | None = None, path: str = "extraction"
                         ) -> tuple[dict[str, Any], list[str]]:
    """``(contract extraction, slot keys cleared by null)`` from a live ``extract_turn`` output.

    The input must be an object with ``slot_updates``, ``tool_requests`` and ``render_intent`` (any of the
    live shapes of each); otherwise :class:`ExtractionShapeError` names the fields. A contract-valid
    extraction is returned unchanged.
    """
    notes = notes if notes is not None else Notes()
    if not isinstance(raw, dict):
        raise ExtractionShapeError([{"loc": [], "msg": "Input should be a JSON object with slot_updates, "
                                     "tool_requests and render_intent", "type": "model_type"}])
    errors = []
    for key in ("slot_updates", "tool_requests", "render_intent"):
        if key not in raw:
            errors.append({"loc": [key], "msg": "Field required", "type": "missing"})
    su, tr = raw.get("slot_updates"), raw.get("tool_requests")
    if "slot_updates" in raw and su is not None and not isinstance(su, dict):
        errors.append({"loc": ["slot_updates"], "msg": "Input should be an object (or null)", "type": "dict_type"})
    if "tool_requests" in raw and tr is not None and not isinstance(tr, list | dict):
        errors.append({"loc": ["tool_requests"], "msg": "Input should be a list (or null)", "type": "list_type"})
    if errors:
        raise ExtractionShapeError(errors)
    for key in raw:
        if key not in ("slot_updates", "tool_requests", "render_intent"):
            notes.add(f"{path}.{key}", "extraction.extra_key")
    if su is None:
        notes.add(f"{path}.slot_updates", "extraction.null_section")
        su = {}
    if tr is None:
        notes.add(f"{path}.tool_requests", "extraction.null_section")
        tr = []
    elif isinstance(tr, dict):  # a single request object
        notes.add(f"{path}.tool_requests", "tool.alias")
        tr = [tr]
    updates, clears = _slot_updates(su, notes, f"{path}.slot_updates")
    requests: list[dict[str, Any]] = []
    for i, item in enumerate(tr):
        if requests:
            notes.add(f"{path}.tool_requests.{i}", "tool.extra_request")
            continue
        request = _tool_request(item, notes, f"{path}.tool_requests.{i}")
        if request is not None:
            requests.append(request)
    intent = _render_intent(raw.get("render_intent"), notes, f"{path}.render_intent")
    return {"slot_updates": updates, "tool_requests": requests, "render_intent": intent}, clears


# --- what the passes read of a turn --------------------------------------------------------------------------


def payload_text(payload: dict[str, Any]) -> str:
    """The text of an event payload as every pass reads it (the oracle, the slm prompts, the training data):
    the first of ``text``, ``message``, ``label`` that is a non-blank str, unstripped; else ``""``."""
    for key in ("text", "message", "label"):
        value = payload.get(key)
        if isinstance(value, str) and value.strip():
            return value
    return ""


def _region_usable(value: Any) -> bool:
    if not isinstance(value, dict):
        return False
    for key in ("label", "city_code", "country_code"):
        field = value.get(key)
        if field is not None and not isinstance(field, str):
            return False
    return True


def _is_str(value: Any) -> bool:
    return isinstance(value, str)


def _party_usable(value: Any) -> bool:
    """What the passes read of a party: ``adults`` absent or a count, ``rooms`` absent, null or a count
    (``children`` is read as a list's length or a count, anything else 0; any object is a traveller party)."""
    return isinstance(value, dict) and ("adults" not in value or is_count(value["adults"])) and (
        value.get("rooms") is None or is_count(value["rooms"]))


#: slot key -> whether a value has the type docs/contract.md §7 gives it, for the keys whose value the
#: passes copy into their output (other keys are read only for truthiness, or not at all)
SLOT_VALUE_CHECKS: dict[str, Callable[[Any], bool]] = {
    "region": _region_usable,
    "check_in_date": is_real_date,
    "check_out_date": is_real_date,
    "party": _party_usable,
    "picked_flight_offer_id": _is_str,
    "picked_hotel_id": _is_str,
    "picked_hotel_rate_key": _is_str,
}


def slot_value_usable(key: str, value: Any) -> bool:
    """Whether the passes can use ``value`` as slot ``key`` (any value of a key without a check)."""
    check = SLOT_VALUE_CHECKS.get(key)
    return check is None or check(value)


def usable_slot_state(slot_state: Any) -> dict[str, Any]:
    """The slot state as the oracle reads it: a value of a type it cannot use counts as absent, as an empty
    value already does (docs/contract.md §7), so the output stays contract-valid whatever the slot state
    holds. Usable values (every labelled turn's) are kept unchanged; a non-object is ``{}``."""
    if not isinstance(slot_state, dict):
        return {}
    get = slot_state.get  # the hot path of every oracle call: no loop, no call for an absent key
    region, check_in, check_out, party_ = get("region"), get("check_in_date"), get("check_out_date"), get("party")
    flight, hotel, rate_key = get("picked_flight_offer_id"), get("picked_hotel_id"), get("picked_hotel_rate_key")
    if ((region is None or _region_usable(region)) and (check_in is None or is_real_date(check_in))
            and (check_out is None or is_real_date(check_out)) and (party_ is None or _party_usable(party_))
            and (flight is None or isinstance(flight, str)) and (hotel is None or isinstance(hotel, str))
            and (rate_key is None or isinstance(rate_key, str))):
        return slot_state  # null counts as absent already
    return {k: v for k, v in slot_state.items() if v is None or slot_value_usable(k, v)}


_RENDER_SLOT_KEYS: dict[str, Callable[[Any], Any]] = {
    "region": region, "check_in_date": iso_date, "check_out_date": iso_date, "party": party,
    "picked_flight_offer_id": text,
}


def normalise_render_slot_state(slot_state: dict[str, Any], clears: list[str] | tuple[str, ...] = (),
                                notes: Notes | None = None, path: str = "turn.slot_state") -> dict[str, Any]:
    """The slot state the passes read: keys cleared by a null update removed, and the values they read
    (region, dates, party, picked offer) usable; everything else is carried unchanged."""
    notes = notes if notes is not None else Notes()
    out = {k: v for k, v in slot_state.items() if k not in clears}
    for key, coercer in _RENDER_SLOT_KEYS.items():
        value = out.get(key)
        if value is None or value == "" or slot_value_usable(key, value):
            continue
        coerced = coercer(value)
        if coerced is _MISS or not slot_value_usable(key, coerced):
            out.pop(key)
            notes.add(f"{path}.{key}", "slot_state.value_invalid")
        else:
            out[key] = coerced
            notes.add(f"{path}.{key}", "slot_state.value_coerced")
    return out
