"""The extract pass output (docs/contract.md §2.2, §3 and §4): one argument model per tool."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from contracts.vocab import (
    MISSING_VALUES,
    ClarifyReason,
    ErrorReason,
    MissingValue,
    PlainIntentKind,
)

IsoDate = Annotated[str, StringConstraints(pattern=r"^\d{4}-\d{2}-\d{2}$")]
Count = Annotated[int, Field(ge=0)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- slot updates -------------------------------------------------------------------------------


class Region(_Strict):
    label: str
    city_code: str
    country_code: str
    kind: str | None = None
    scope: Literal["region"] | None = None


class Child(BaseModel):
    model_config = ConfigDict(extra="allow")
    age: Annotated[int, Field(ge=0, le=17)] | None = None


class Party(_Strict):
    rooms: Count
    adults: Count
    children: list[Child]


class SlotUpdates(_Strict):
    """Shallow patch of slot_state; only the keys the extract pass may write.

    Every key is optional but never null: an absent key leaves the slot as it is.
    """

    region: Region = None  # type: ignore[assignment]
    check_in_date: IsoDate = None  # type: ignore[assignment]
    check_out_date: IsoDate = None  # type: ignore[assignment]
    nights: Count = None  # type: ignore[assignment]
    party: Party = None  # type: ignore[assignment]
    picked_flight_offer_id: str = None  # type: ignore[assignment]
    picked_hotel_id: str = None  # type: ignore[assignment]


# --- tool requests --------------------------------------------------------------------------------


class SearchTextArgs(_Strict):
    query: str
    max_results: Literal[5, 8]


class SearchOffersArgs(_Strict):
    origin: Literal["SFO"]
    destination: str
    departure_date: IsoDate | None
    adults: Count
    cabin_class: Literal["economy"]


class Passenger(_Strict):
    given_name: Literal["Alex"]
    family_name: Literal["Traveller"]


class CreateOrderArgs(_Strict):
    offer_id: str
    passengers: Annotated[list[Passenger], Field(min_length=1, max_length=1)]
    duffel_env: str


class SearchHotelsArgs(_Strict):
    city: str
    city_code: str
    check_in: IsoDate | None
    check_out: IsoDate | None
    adults: Count
    rooms: Count
    children: Count
    radius: Literal[20]


class BookHotelArgs(_Strict):
    rate_key: str
    holder_name: Literal["Alex"]
    holder_surname: Literal["Traveller"]
    adults: Count


class SearchActivitiesArgs(_Strict):
    destination: str
    from_: IsoDate | None = Field(alias="from")
    to: IsoDate | None
    language: Literal["en"]
    adults: Count

    model_config = ConfigDict(extra="forbid", populate_by_name=True, serialize_by_alias=True)


class SearchTransfersArgs(_Strict):
    from_type: Literal["IATA"]
    from_code: str
    to_type: Literal["ATLAS"]
    outbound: IsoDate | None
    adults: Count


class SearchTextRequest(_Strict):
    tool: Literal["mcp/google-places.search_text"]
    arguments: SearchTextArgs


class SearchOffersRequest(_Strict):
    tool: Literal["mcp/duffel.search_offers"]
    arguments: SearchOffersArgs


class CreateOrderRequest(_Strict):
    tool: Literal["mcp/duffel.create_order"]
    arguments: CreateOrderArgs


class SearchHotelsRequest(_Strict):
    tool: Literal["mcp/hotelbeds.search_hotels"]
    arguments: SearchHotelsArgs


class BookHotelRequest(_Strict):
    tool: Literal["mcp/hotelbeds.book_hotel"]
    arguments: BookHotelArgs


class SearchActivitiesRequest(_Strict):
    tool: Literal["mcp/hotelbeds-activities.search_activities"]
    arguments: SearchActivitiesArgs


class SearchTransfersRequest(_Strict):
    tool: Literal["mcp/hotelbeds-transfers.search_transfers"]
    arguments: SearchTransfersArgs


ToolRequest = Annotated[
    SearchTextRequest
    | SearchOffersRequest
    | CreateOrderRequest
    | SearchHotelsRequest
    | BookHotelRequest
    | SearchActivitiesRequest
    | SearchTransfersRequest,
    Field(discriminator="tool"),
]


# --- render intent --------------------------------------------------------------------------------


class CollectMissingIntent(_Strict):
    kind: Literal["collect_missing"]
    missing: Annotated[list[MissingValue], Field(min_length=1, max_length=3)]

    @model_validator(mode="after")
    def _canonical_order(self) -> CollectMissingIntent:
        order = [m for m in MISSING_VALUES if m in self.missing]
        if order != list(self.missing):
            raise ValueError("missing must list region, dates, party in that order, each at most once")
        return self


class ErrorIntent(_Strict):
    kind: Literal["error"]
    reason: ErrorReason


class ClarifyIntent(_Strict):
    kind: Literal["clarify"]
    reason: ClarifyReason


class PlainIntent(_Strict):
    kind: PlainIntentKind


RenderIntent = Annotated[
    CollectMissingIntent | ErrorIntent | ClarifyIntent | PlainIntent,
    Field(discriminator="kind"),
]


class ExtractOutput(_Strict):
    """``{slot_updates, tool_requests (0 or 1), render_intent}``."""

    slot_updates: SlotUpdates
    tool_requests: Annotated[list[ToolRequest], Field(max_length=1)]
    render_intent: RenderIntent

    def as_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)
