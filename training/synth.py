"""An oracle-labelled synthetic turn generator (the dataset builder's second source).

Turns are composed from paraphrase frames, the oracle's own keyword lists (so every rule is
exercised), gazetteer places and place names it does not know, dates, party phrases, widget
submits and CTA clicks, provider failures, and slot states across the whole pipeline (nothing
known -> region -> dates and party -> flights searched -> flight picked -> ordered -> hotels
searched -> hotel picked -> trip confirmed). Every turn is labelled by the deterministic oracle
(:func:`engines.deterministic.render.run_turn`), so labels are right by construction; the
generator's job is coverage and balance: :func:`generate` draws turns until every class (the
render-intent kind, the first tool and the refusal reason) has its quota, or the class is
exhausted.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from typing import Any

from contracts.vocab import CLARIFY_REASONS, ERROR_REASONS
from engines.deterministic import rules as R
from engines.deterministic.render import run_turn

GENERATOR_VERSION = "synth-1"

UNKNOWN_PLACES = ("Prague", "Kyoto", "Atlantis", "Cusco", "Oslo", "Nairobi", "Hanoi", "Quebec", "Zanzibar", "Bruges",
                  "El Dorado", "Patagonia", "Lapland", "Bali", "Vienna", "Seoul")
OPENERS = ("", "", "", "hey, ", "hi! ", "ok ", "so ", "please ", "can you ", "could you ", "I'd like to ", "now ",
           "alright, ", "hmm, ", "quick one: ", "and ", "also ", "great, ")
CLOSERS = ("", "", "", " please", "?", "!", " thanks", " for me", " asap", " if possible", " :)", ".", " now")
FILLERS = ("sounds good", "ok", "cool", "thanks", "perfect", "nice", "let's continue", "go on", "what's next",
           "great", "yes", "alright then", "move ahead", "carry on", "keep going", "fine by me", "proceed")

HOTEL_FRAMES = ("find me a {w}", "show {w} options", "I need a {w}", "what {w} options are there", "{w} please",
                "looking for a {w}", "any good {w}?", "search {w}", "which {w} would you suggest")
FLIGHT_FRAMES = ("show me {w} options", "find {w}", "I want a {w}", "check {w}", "any {w} available",
                 "what about the {w}", "look up {w} for us", "{w} prices please")
POI_FRAMES = ("what are the {w}", "{w} worth it?", "show me {w}", "recommend {w}", "I love {w}", "list {w}",
              "interested in {w}")
ACTIVITY_FRAMES = ("book a {w}", "any {w}?", "we want {w}", "find {w} for us", "I'd enjoy {w}", "{w} options")
TRANSFER_FRAMES = ("need a {w}", "arrange a {w}", "book the {w}", "{w} for two", "how about a {w}")
SUMMARY_FRAMES = ("{w}", "give me the {w}", "show the {w}", "what does the {w} look like", "{w} please")
CAL_FRAMES = ("{v} my {w}", "{v} the {w}", "can you {v} the {w}", "{v} the trip {w}")
ORDER_FRAMES = ("{w} it", "{w} this one", "please {w}", "{w} the flight", "go ahead and {w}", "{w} now")
DETAIL_FRAMES = ("show the details", "more detail please", "details on that flight", "I want the details",
                 "can I see the details")
VIEW_ORDER_FRAMES = ("{w}", "show {w}", "where is {w}", "I need {w}", "can you {w}")


def _pick(rng: random.Random, seq: tuple[str, ...] | list[str]) -> str:
    return seq[rng.randrange(len(seq))]


#: the gazetteer's entries (needle, label, city_code, country_code) in the order the generator has always drawn
#: from, the cities then the regions, so that a data build stays byte-identical
_PLACES: tuple[tuple[str, str, str, str], ...] = tuple(
    (needle, label, code, cc) for kind_first in ("city", "region")
    for needle, label, code, cc, kind in R.GAZETTEER if kind == kind_first)


def _dress(rng: random.Random, text: str) -> str:
    text = _pick(rng, OPENERS) + text + _pick(rng, CLOSERS)
    r = rng.random()
    if r < 0.15:
        text = text.capitalize()
    elif r < 0.2:
        text = text.upper()
    return text


def _place(rng: random.Random, known: float = 0.8) -> str:
    if rng.random() < known:
        entry = _pick(rng, _PLACES)
        return entry[1] if rng.random() < 0.7 else entry[0]
    return _pick(rng, UNKNOWN_PLACES)


def _date_pair(rng: random.Random) -> tuple[str, str]:
    month = rng.randint(1, 12)
    day = rng.randint(1, 20)
    nights = rng.randint(1, 9)
    return f"2026-{month:02d}-{day:02d}", f"2026-{month:02d}-{day + nights:02d}"


def _region_slot(rng: random.Random) -> dict[str, Any]:
    _needle, label, code, cc = _pick(rng, _PLACES)
    return {"label": label, "city_code": code, "country_code": cc, "kind": "city"}


def _state(rng: random.Random, stage: int) -> dict[str, Any]:
    """A slot state at pipeline stage 0 (empty) .. 8 (trip confirmed)."""
    s: dict[str, Any] = {}
    if stage >= 1:
        s["region"] = _region_slot(rng)
        if rng.random() < 0.6:
            s["places_seen"] = [f"place_{s['region']['city_code']}_{i}" for i in (1, 2, 3)]
    if stage >= 2:
        ci, co = _date_pair(rng)
        if rng.random() < 0.85:
            s.update(check_in_date=ci, check_out_date=co, nights=0)
        if rng.random() < 0.85:
            s["party"] = {"rooms": 1, "adults": rng.randint(1, 4), "children": []}
    code = s.get("region", {}).get("city_code", "MIA")
    if stage >= 3:
        s["flight_search_results"] = [f"off_{code}_{i}" for i in (1, 2, 3)]
    if stage >= 4:
        s["picked_flight_offer_id"] = f"off_{code}_{rng.randint(1, 3)}"
    if stage >= 5 and rng.random() < 0.5:
        s["order_id"] = "ord_" + s["picked_flight_offer_id"]
    if stage >= 6:
        s["hotel_search_results"] = [f"hotel_{code}_{i}" for i in (1, 2, 3)]
    if stage >= 7:
        s["picked_hotel_id"] = f"hotel_{code}_{rng.randint(1, 3)}"
        if rng.random() < 0.4:
            s["picked_hotel_rate_key"] = "rk_" + code.lower()
    if stage >= 8:
        s["trip_confirmed"] = True
    return s


def _msg(text: str, slot: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"event_type": "user_message", "event_payload": {"text": text}, "slot_state": slot, **extra}


# --- recipes: each returns one turn ---------------------------------------------------------------------


def _framed(rng: random.Random, frames: tuple[str, ...], words: tuple[str, ...], place_p: float) -> str:
    text = _pick(rng, frames).format(w=_pick(rng, words), v=_pick(rng, R.CALENDAR_VIEW_WORDS))
    if rng.random() < place_p:
        text += _pick(rng, (" in ", " for ", " near ", " around ")) + _place(rng)
    return _dress(rng, text)


def _framed_recipe(frames: tuple[str, ...], words: tuple[str, ...], place_p: float, stages: tuple[int, int]
                   ) -> Callable[[random.Random], dict[str, Any]]:
    """A recipe: one of ``frames`` around one of the oracle's ``words``, over a slot state of ``stages``."""
    def recipe(rng: random.Random) -> dict[str, Any]:
        return _msg(_framed(rng, frames, words, place_p), _state(rng, rng.randint(*stages)))

    return recipe


r_hotels = _framed_recipe(HOTEL_FRAMES, R.HOTEL_WORDS, 0.4, (0, 7))
r_flights = _framed_recipe(FLIGHT_FRAMES, R.FLIGHT_WORDS, 0.4, (0, 5))
r_poi = _framed_recipe(POI_FRAMES, R.POI_WORDS, 0.5, (0, 3))
r_activities = _framed_recipe(ACTIVITY_FRAMES, R.ACTIVITY_WORDS, 0.4, (0, 4))
r_transfers = _framed_recipe(TRANSFER_FRAMES, R.TRANSFER_WORDS, 0.3, (0, 7))
r_summary = _framed_recipe(SUMMARY_FRAMES, R.SUMMARY_WORDS, 0.1, (0, 8))
r_calendar = _framed_recipe(CAL_FRAMES, R.CALENDAR_WHAT_WORDS, 0.0, (0, 8))
r_order = _framed_recipe(ORDER_FRAMES, R.ORDER_WORDS, 0.0, (3, 7))


def r_detail(rng: random.Random) -> dict[str, Any]:
    return _msg(_dress(rng, _pick(rng, DETAIL_FRAMES)), _state(rng, rng.randint(3, 7)))


def r_view_order(rng: random.Random) -> dict[str, Any]:
    slot = _state(rng, rng.randint(4, 7))
    if rng.random() < 0.8:
        slot["order_id"] = "ord_" + str(slot.get("picked_flight_offer_id") or "x")
    return _msg(_framed(rng, VIEW_ORDER_FRAMES, R.VIEW_ORDER_WORDS, 0.0), slot)


def r_research(rng: random.Random) -> dict[str, Any]:
    text = _pick(rng, R.RESEARCH_WORDS) + " " + _pick(rng, ("the dates", "it to next week", "the flights", "that",
                                                            "the search", "to two people", ""))
    return _msg(_dress(rng, text.strip()), _state(rng, rng.randint(2, 5)))


def r_reference(rng: random.Random) -> dict[str, Any]:
    return _msg(_dress(rng, _pick(rng, R.REFERENCE_WORDS)), _state(rng, rng.randint(1, 7)))


def r_hotel_filter(rng: random.Random) -> dict[str, Any]:
    slot = _state(rng, rng.randint(6, 7))
    if rng.random() < 0.5:
        slot.pop("region", None)
    return _msg(_dress(rng, "only ones with " + _pick(rng, R.HOTEL_FILTER_WORDS)), slot)


def r_room(rng: random.Random) -> dict[str, Any]:
    slot = _state(rng, 7)
    slot.setdefault("picked_hotel_id", "hotel_X_1")
    return _msg(_dress(rng, _pick(rng, (*R.ROOM_SELECTION_WORDS, "book it", "reserve it", "book this hotel", "confirm the room", "looks fine"))), slot)


def r_map(rng: random.Random) -> dict[str, Any]:
    slot = _state(rng, rng.randint(1, 8))
    if rng.random() < 0.5:
        return {"event_type": "user_widget_cta_click", "event_payload": {"action_id": _pick(rng, ("view_map",
                "open_map", "map:show"))}, "slot_state": slot}
    return _msg(_dress(rng, _pick(rng, ("show it on a map", "map view", "where is it on the map", "open the map"))),
                slot)


def r_places_text(rng: random.Random) -> dict[str, Any]:
    frames = ("trip to {p}", "let's go to {p}", "thinking about {p}", "what about {p}", "change destination to {p}",
              "{p} for {n} nights", "visiting {p} with {a} adults", "a couple's trip to {p}", "{p} from {d1} to {d2}",
              "{p} next month", "I want to see {p}", "{p}!")
    d1, d2 = _date_pair(rng)
    text = _pick(rng, frames).format(p=_place(rng, 0.75), n=rng.randint(2, 9), a=rng.randint(1, 6), d1=d1, d2=d2)
    return _msg(_dress(rng, text), _state(rng, rng.choice((0, 0, 1, 2))))


def r_vague(rng: random.Random) -> dict[str, Any]:
    frames = ("let's plan a getaway", "I need a vacation", "somewhere warm", "help me plan a trip", "no idea where",
              "a trip in {d1} to {d2}", "we are {a} adults", "just the two of us, a couple", "for {a} travellers",
              "sometime next month", "{d1} to {d2} works")
    d1, d2 = _date_pair(rng)
    text = _pick(rng, frames).format(a=rng.randint(1, 6), d1=d1, d2=d2)
    return _msg(_dress(rng, text), _state(rng, rng.choice((0, 0, 1, 2))))


def r_filler(rng: random.Random) -> dict[str, Any]:
    return _msg(_dress(rng, _pick(rng, FILLERS)), _state(rng, rng.randint(0, 8)))


def r_submit(rng: random.Random) -> dict[str, Any]:
    kind = rng.randrange(3)
    if kind == 0:
        d1, d2 = _date_pair(rng)
        value: dict[str, Any] = {"from": d1, "to": d2}
        if rng.random() < 0.5:
            value["nights"] = rng.randint(1, 9)
        aid = "date:range"
    elif kind == 1:
        value = {"adults": rng.randint(1, 6), "rooms": rng.randint(1, 2), "children": []}
        aid = "party:submit"
    else:
        place = _place(rng, 0.6)
        value = {"id": place[:3].upper(), "label": place, "kind": "city"}
        aid = "place:select"
    payload: dict[str, Any] = {"action_id": aid, "submitted_value": value}
    if rng.random() < 0.2:
        payload["text"] = _pick(rng, (*FILLERS, "book this tour", "show hotels", "reserve 2 spots"))
    return {"event_type": "user_widget_submit", "event_payload": payload, "slot_state": _state(rng, rng.randint(0, 5))}


def r_cta(rng: random.Random) -> dict[str, Any]:
    slot = _state(rng, rng.randint(3, 7))
    code = slot.get("region", {}).get("city_code", "MIA")
    prefix = _pick(rng, R.PICK_FLIGHT_PREFIXES + R.PICK_HOTEL_PREFIXES + R.ORDER_CTA_PREFIXES + ("add_place:",))
    ident = f"hotel_{code}_{rng.randint(1, 3)}" if "hotel" in prefix else f"off_{code}_{rng.randint(1, 3)}"
    payload: dict[str, Any] = {"action_id": prefix + ident}
    if prefix == "book_hotel:" and rng.random() < 0.5:
        payload["rate_key"] = "rk_fixture"
    return {"event_type": "user_widget_cta_click", "event_payload": payload, "slot_state": slot}


def r_pii(rng: random.Random) -> dict[str, Any]:
    card = " ".join(str(rng.randint(1000, 9999)) for _ in range(4))
    text = _pick(rng, (f"my card is {card}", f"charge {card} please", f"use card {card.replace(' ', '-')}",
                       "here is my passport number X1234567", "passport no. 55512345", "my passport # is 9988"))
    return _msg(_dress(rng, text), _state(rng, rng.randint(0, 5)))


def r_out_of_domain(rng: random.Random) -> dict[str, Any]:
    return _msg(_dress(rng, _pick(rng, ("book me a trip ", "plan a vacation ", "what's the weather ", "can you ", ""))
                       + _pick(rng, R.OUT_OF_DOMAIN_WORDS)), _state(rng, rng.randint(0, 3)))


def r_provider_error(rng: random.Random) -> dict[str, Any]:
    slot = _state(rng, rng.randint(1, 7))
    text = _pick(rng, ("show hotels", "find flights", "ok", "any news?", "try again", "what happened"))
    if rng.random() < 0.5:
        return _msg(_dress(rng, text), slot, tool_error={"message": "provider timeout"})
    return _msg(_dress(rng, text), slot, tool_summary={"ok": False, "tool": R.TOOL_HOTELS, "isError": True,
                                                       "data": {}})


def r_confirm_vague(rng: random.Random) -> dict[str, Any]:
    slot = _state(rng, rng.randint(0, 3))
    return _msg(_dress(rng, _pick(rng, R.BUY_WORDS) + " " + _pick(rng, R.VAGUE_WORDS)), slot)


def r_contradiction(rng: random.Random) -> dict[str, Any]:
    if rng.random() < 0.8:
        a, b = _pick(rng, R.CONTRADICTION_PAIRS)  # type: ignore[arg-type]
        text = f"{a} {_pick(rng, ('but', 'yet', 'and also', 'but still'))} {b}"
    else:
        text = _pick(rng, R.CONTRADICTION_SINGLES)
    return _msg(_dress(rng, text), _state(rng, rng.randint(0, 2)))


def r_blocker(rng: random.Random) -> dict[str, Any]:
    text = _pick(rng, ("do I need a ", "is my ", "what about the ", "worried about the ")) + _pick(rng, R.BLOCKER_WORDS)
    return _msg(_dress(rng, text), _state(rng, rng.randint(0, 3)))


def r_trip_map(rng: random.Random) -> dict[str, Any]:
    return _msg(_dress(rng, _pick(rng, (*FILLERS, "looks good", "what now"))), _state(rng, 8))


RECIPES: tuple[Callable[[random.Random], dict[str, Any]], ...] = (
    r_hotels, r_flights, r_poi, r_activities, r_transfers, r_summary, r_calendar, r_order, r_detail, r_view_order,
    r_research, r_reference, r_hotel_filter, r_room, r_map, r_places_text, r_vague, r_filler, r_submit, r_cta,
    r_pii, r_out_of_domain, r_provider_error, r_confirm_vague, r_contradiction, r_blocker, r_trip_map,
)


def turn_class(extraction: dict[str, Any]) -> str:
    """The balancing class: ``kind|tool`` plus the refusal reason (``error:pii_redacted|none``)."""
    intent = extraction.get("render_intent") or {}
    kind = intent.get("kind") or "?"
    if intent.get("reason"):
        kind = f"{kind}:{intent['reason']}"
    requests = extraction.get("tool_requests") or []
    tool = requests[0]["tool"].rsplit(".", 1)[-1] if requests else "none"
    return f"{kind}|{tool}"


def expected_classes() -> set[str]:
    """Classes the generator must reach (every kind, tool and refusal reason of the oracle)."""
    refusals = {f"error:{r}|none" for r in ERROR_REASONS} | {f"clarify:{r}|none" for r in CLARIFY_REASONS}
    return refusals | {
        "collect_missing|none", "show_places|search_text", "show_flights|search_offers", "flight_detail|none",
        "order_confirmation|create_order", "order_detail|none", "show_hotels|search_hotels", "show_hotels|none",
        "hotel_confirmation|book_hotel", "hotel_confirmation|none", "show_activities|search_activities",
        "show_transfers|search_transfers", "summary|none", "summarize|none", "calendar_live|none", "trip_map|none",
    }


def label(turn: dict[str, Any]) -> dict[str, Any]:
    """A labelled record in the reference corpora's shape."""
    return {"input": turn, "expected": run_turn(turn)}


def _planner_data(tool: str, rng: random.Random) -> dict[str, Any] | None:
    """Cards of the kinds the fixtures never produce (the live planner's activities, transfers, bookings)."""
    n = rng.randint(0, 4)
    if tool == R.TOOL_ACTIVITIES:
        return {"activities": [{"activity_code": f"ACT{i}", "name": f"Tour {i}", "currency": "EUR",
                                "ctas": ["view_details", "add_to_itinerary"]} for i in range(n)]}
    if tool == R.TOOL_TRANSFERS:
        return {"transfers": [{"transfer_id": f"TR{i}", "currency": "EUR", "ctas": ["view_details", "add_to_itinerary"]}
                              for i in range(n)]}
    if tool == R.TOOL_BOOK_HOTEL:
        return {"hotel_booking": {"booking_reference": f"HB-{rng.randint(1000, 9999)}", "hotel_name": "Hotel",
                                  "status": "CONFIRMED", "check_in": "2026-07-10", "check_out": "2026-07-14",
                                  "total_amount": "812.00", "total_currency": "EUR", "destination": "Paris",
                                  "ctas": ["new_search"]}}
    return None


def with_planner_result(record: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """The record re-rendered over a failed provider result, or over the planner's own cards when its
    tool is one the fixtures leave empty."""
    from engines.deterministic.render import render

    extraction = record["expected"]["extract"]
    requests = extraction.get("tool_requests") or []
    if requests and rng.random() < 0.2:  # the provider failed
        summary: dict[str, Any] = {"ok": False, "tool": requests[0]["tool"], "data": {}}
    else:
        data = _planner_data(requests[0]["tool"], rng) if requests else None
        if data is None:
            return record
        summary = {"ok": True, "tool": requests[0]["tool"], "data": data}
    record["expected"] = {"extract": extraction, "tool_summary": summary,
                          "render": render(record["input"], extraction, summary)}
    return record


def generate(n: int, seed: int, *, text_is_excluded: Callable[[str], bool] | None = None,
             progress: Callable[[int], None] | None = None) -> tuple[list[dict[str, Any]], Counter]:
    """``n`` labelled turns balanced over classes (an equal quota each; spare draws go to the rest).

    ``text_is_excluded(text)``: drop a turn whose text the caller reserves (the eval split's texts).
    Returns the records and the per-class counts.
    """
    rng = random.Random(seed)
    classes = sorted(expected_classes())
    quota = max(1, n // len(classes))
    counts: Counter = Counter()
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    attempts = 0
    max_attempts = 60 * n + 1000
    while len(out) < n and attempts < max_attempts:
        attempts += 1
        turn = _pick(rng, RECIPES)(rng)  # type: ignore[arg-type]
        record = label(turn)
        if rng.random() < 0.6:
            record = with_planner_result(record, rng)
        cls = turn_class(record["expected"]["extract"])
        limit = quota if attempts < 40 * n else n  # late: fill with whatever comes
        if counts[cls] >= limit:
            continue
        key = repr((turn.get("event_type"), turn.get("event_payload"), sorted((turn.get("slot_state") or {}).keys())))
        text = str((turn.get("event_payload") or {}).get("text") or "")
        if key in seen or (text and text_is_excluded is not None and text_is_excluded(text)):
            continue
        seen.add(key)
        counts[cls] += 1
        record["id"] = f"synth-{seed}-{len(out):06d}"
        record["source_file"] = GENERATOR_VERSION
        out.append(record)
        if progress is not None:
            progress(1)
    return out, counts
