"""The oracle's rules as data (docs/oracle.md §2, §4, §5, §6, §8 and §9), so they can be audited.

Every keyword test is a plain, case-insensitive substring test on the payload text.
"""

from __future__ import annotations

from typing import Literal

# --- section 2: the gazetteer (needle, label, city_code, country_code, kind), tested in this order ---------
# (the regions first, then the cities)

GAZETTEER: tuple[tuple[str, str, str, str, Literal["region", "city"]], ...] = (
    ("southeast asia", "Southeast Asia", "SIN", "SG", "region"),
    ("south america", "South America", "GRU", "BR", "region"),
    ("mediterranean", "Mediterranean", "BCN", "ES", "region"),
    ("caribbean", "Caribbean", "SJU", "PR", "region"),
    ("scotland", "Scotland", "EDI", "GB", "region"),
    ("europe", "Europe", "LON", "GB", "region"),
    ("asia", "Asia", "SIN", "SG", "region"),
    ("san francisco", "San Francisco", "SFO", "US", "city"),
    ("oktoberfest", "Munich", "MUC", "DE", "city"),
    ("disneyland", "Disneyland", "LAX", "US", "city"),
    ("barcelona", "Barcelona", "BCN", "ES", "city"),
    ("new york", "New York", "NYC", "US", "city"),
    ("istanbul", "Istanbul", "IST", "TR", "city"),
    ("monterey", "Monterey", "MRY", "US", "city"),
    ("yosemite", "Yosemite", "FAT", "US", "city"),
    ("larnaca", "Larnaca", "LCA", "CY", "city"),
    ("iceland", "Iceland", "REK", "IS", "city"),
    ("morocco", "Morocco", "RAK", "MA", "city"),
    ("boston", "Boston", "BOS", "US", "city"),
    ("london", "London", "LON", "GB", "city"),
    ("lisbon", "Lisbon", "LIS", "PT", "city"),
    ("madrid", "Madrid", "MAD", "ES", "city"),
    ("berlin", "Berlin", "BER", "DE", "city"),
    ("athens", "Athens", "ATH", "GR", "city"),
    ("miami", "Miami", "MIA", "US", "city"),
    ("paris", "Paris", "PAR", "FR", "city"),
    ("tokyo", "Tokyo", "TYO", "JP", "city"),
    ("dubai", "Dubai", "DXB", "AE", "city"),
    ("rome", "Rome", "ROM", "IT", "city"),
    ("nyc", "New York", "NYC", "US", "city"),
    ("cdg", "Paris CDG", "PAR", "FR", "city"),
)

# --- section 3: free-text hints -------------------------------------------------------------------

NEXT_MONTH_PHRASE = "next month"
NEXT_MONTH_DATES = ("2026-07-10", "2026-07-14")
COUPLE_WORD = "couple"
PARTY_PATTERN = r"(\d+)\s+(adult|traveller|traveler|people|guest)"
ISO_DATE_PATTERN = r"(\d{4}-\d{2}-\d{2})"

# --- section 4: flags (any of) ----------------------------------------------------------------------

CALENDAR_VIEW_WORDS = ("show", "view", "day by day")
CALENDAR_WHAT_WORDS = ("schedule", "calendar", "day by day")
ORDER_WORDS = ("book", "order", "confirm", "purchase", "reserve")
ORDER_CTA_PREFIXES = ("book_offer:", "book_hotel:", "book_activity:")
HOTEL_WORDS = ("hotel", "accommodation", "lodging", "place to stay", "where to stay", "room", "stay in", "resort")
ACTIVITY_WORDS = (
    "book a tour", "food tour", "wine tasting", "day trip", "day trips", "surf lesson", "diving", "excursion",
    "tour in", "tours", "reserve", "activities", "activity", "spa & shopping", "adrenaline",
)
POI_WORDS = (
    "things to do", "what to do", "attractions", "sightseeing", "museum", "museums", "architecture", "art scene",
    "photography", "stargazing", "dark skies", "hot springs", "viewpoint", "landmark", "history",
    "northern lights", "worth seeing",
)
TRANSFER_WORDS = (
    "transfer", "airport pickup", "airport pick-up", "ride from", "ride to", "shuttle", "from the airport",
    "to the airport", "private car",
)
FLIGHT_WORDS = (
    "flight", "flights", "fly", "flying", "airfare", "airline", "plane", "air ticket", "nonstop", "non-stop",
    "one-way", "round-trip", "layover",
)
SUMMARY_WORDS = (
    "trip look like", "recap", "everything together", "summary", "summarise", "summarize", "the plan", "itinerary",
    "help me decide", "which of these", "plan 3 days", "plan a day", "combine a city", "slow travel",
    "rough itinerary", "day by day", "vs ", " or ",
)
RESEARCH_WORDS = (
    "redo", "again", "instead", "change", "actually", "push it", "make it", "forget", "scratch that", "now only",
    "add one", "just me",
)
REFERENCE_WORDS = (
    "the second one", "the first one", "that first option", "the second", "go with the first", "go with that",
    "same place we talked about", "that hotel from before", "the museum you mentioned", "that food tour",
    "the cheaper van", "add the second", "the second flight",
)
MAP_WORD = "map"
DETAIL_WORD = "detail"
VIEW_OFFER_PREFIX = "view_offer:"
VIEW_ORDER_WORDS = ("my booking", "confirmation", "my flight details", "pull up", "show my booking", "reservation")

# --- section 3 B: CTA prefixes ------------------------------------------------------------------------

PICK_FLIGHT_PREFIXES = ("pick_offer:", "view_offer:")
PICK_HOTEL_PREFIXES = ("pick_hotel:", "hotel:")

# --- section 5: refusals (first match wins) -----------------------------------------------------------

CARD_PATTERN = r"\b(?:\d[ -]*?){13,19}\b"
PASSPORT_PATTERN = r"\bpassport\s+(?:number|no\.?|#)"
OUT_OF_DOMAIN_WORDS = ("on mars", "to the moon", "rocket", "do my taxes", "my taxes", "weather on mars")
BUY_WORDS = ("book", "reserve", "purchase")
VAGUE_WORDS = ("whatever", "surprise me", "cheapest", "anything", "on my card", "just book")
CONTRADICTION_PAIRS = (
    ("disconnect", "wifi"),
    ("not too far", "not too close"),
    ("new", "familiar"),
    ("different", "comfortable"),
    ("not touristy", "stuff to do"),
    ("hates museums", "love them"),
)
CONTRADICTION_SINGLES = ("cool but not cool",)
BLOCKER_WORDS = ("passport expires", "expires soon", "visa", "6-month")

# --- section 6: routing ---------------------------------------------------------------------------------

ROOM_SELECTION_WORDS = ("select this room", "continue to book", "select room")
HOTEL_FILTER_WORDS = (
    "breakfast", "wifi", "pool", "spa", "pet", "star", "stars", "rating", "reviewed", "review", "value", "compare",
    "side by side", "board", "family room", "refundable",
)

TOOL_PLACES = "mcp/google-places.search_text"
TOOL_FLIGHTS = "mcp/duffel.search_offers"
TOOL_ORDER = "mcp/duffel.create_order"
TOOL_HOTELS = "mcp/hotelbeds.search_hotels"
TOOL_BOOK_HOTEL = "mcp/hotelbeds.book_hotel"
TOOL_ACTIVITIES = "mcp/hotelbeds-activities.search_activities"
TOOL_TRANSFERS = "mcp/hotelbeds-transfers.search_transfers"

FLIGHT_ORIGIN = "SFO"
CABIN_CLASS = "economy"
HOTEL_RADIUS = 20
ACTIVITY_LANGUAGE = "en"
HOLDER_NAME = "Alex"
HOLDER_SURNAME = "Traveller"
DEFAULT_DUFFEL_ENV = "test"
PLACES_RESOLVE_REGION = 5
PLACES_POINTS_OF_INTEREST = 8

# --- section 8: fixtures ------------------------------------------------------------------------------------

FIXTURE_DEFAULT_CHECK_IN = "2026-07-10"
OFFER_PRICES = ("480.00", "510.00", "540.00")
HOTEL_LAT = (25.71, 25.72, 25.73)
HOTEL_LNG = (-80.11, -80.11999999999999, -80.13)
HOTEL_PRICE = (200.0, 220.0, 240.0)
ORDER_TOTAL = "510.00"

# --- section 9: render ---------------------------------------------------------------------------------------

MSG_PROVIDER_ERROR = "That provider hiccuped, but the itinerary thread is still intact."
MSG_WHERE = "Where would you like to go?"
MSG_WHEN = "When are you travelling?"
MSG_WHO = "How many travellers?"
MSG_PLACES = "I found a destination anchor. Next I need dates and travellers."
MSG_FLIGHTS = "Here is the first flight batch. Book one to create a Duffel test order."
MSG_FLIGHT_DETAIL = "Here are the flight details."
MSG_HOTELS = "Hotel options are ready."
MSG_ORDER = "Your Duffel test order is confirmed."
MSG_SUMMARY = "The itinerary is ready to review."
MSG_CALENDAR = "Here is the current trip schedule."
MSG_STATE = "Here is the current itinerary state."

SUMMARY_DEFAULT_DATES = ("2026-07-10", "2026-07-14")
DATE_PICKER_RANGE = ("2026-01-01", "2026-12-31")
DESTINATION_SUGGESTIONS = (
    {"label": "Miami", "id": "MIA", "kind": "city"},
    {"label": "Paris", "id": "PAR", "kind": "city"},
)
