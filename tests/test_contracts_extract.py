"""The extract contract: reference labels validate; hand-made invalid outputs are refused.

Both validators are exercised: the pydantic models (strict) and jsonschema on the exported files.
"""

from __future__ import annotations

import copy
import json

import pytest
from jsonschema import Draft202012Validator

from contracts.export import contract_schemas
from contracts.validation import extract_errors, extract_problem, render_errors
from tests.reference import all_records, require_reference

EXTRACT_SCHEMA = contract_schemas()["extract_output.schema.json"]
VALIDATOR = Draft202012Validator(EXTRACT_SCHEMA)

VALID = {
    "slot_updates": {"region": {"label": "Paris", "city_code": "PAR", "country_code": "FR", "kind": "city"},
                     "check_in_date": "2026-07-10", "nights": 4,
                     "party": {"rooms": 1, "adults": 2, "children": [{"age": 7}]}},
    "tool_requests": [{"tool": "mcp/hotelbeds.search_hotels",
                       "arguments": {"city": "Paris", "city_code": "PAR", "check_in": "2026-07-10", "check_out": None,
                                     "adults": 2, "rooms": 1, "children": 1, "radius": 20}}],
    "render_intent": {"kind": "show_hotels"},
}


def both_accept(doc) -> tuple[bool, bool]:
    return not extract_errors(doc), VALIDATOR.is_valid(doc)


def test_reference_labels_validate_under_both():
    require_reference()
    records = all_records()
    bad = [r["id"] for r in records if both_accept(r["expected"]["extract"]) != (True, True)]
    assert not bad, f"{len(bad)} reference extracts refused, e.g. {bad[:5]}"
    bad_render = [r["id"] for r in records if render_errors(r["expected"]["render"])]
    assert not bad_render, bad_render[:5]


def test_valid_example_and_every_tool_shape():
    assert both_accept(VALID) == (True, True)
    for doc in (
        {"slot_updates": {}, "tool_requests": [], "render_intent": {"kind": "collect_missing", "missing": ["dates"]}},
        {"slot_updates": {}, "tool_requests": [], "render_intent": {"kind": "error", "reason": "out_of_domain"}},
        {"slot_updates": {"picked_hotel_id": "h"}, "tool_requests": [], "render_intent":
            {"kind": "clarify", "reason": "confirmation_required"}},
        {"slot_updates": {}, "tool_requests": [{"tool": "mcp/hotelbeds-activities.search_activities", "arguments":
            {"destination": "ROM", "from": None, "to": None, "language": "en", "adults": 1}}],
         "render_intent": {"kind": "show_activities"}},
    ):
        assert both_accept(doc) == (True, True), doc


def mutate(path: list, value=..., delete: bool = False) -> dict:
    doc = copy.deepcopy(VALID)
    target = doc
    for key in path[:-1]:
        target = target[key]
    if delete:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return doc


INVALID = {
    "retired tool": mutate(["tool_requests", 0, "tool"], "mcp/amadeus.search_hotels"),
    "unknown intent": mutate(["render_intent", "kind"], "show_cars"),
    "missing key": mutate(["render_intent"], delete=True),
    "missing argument": mutate(["tool_requests", 0, "arguments", "radius"], delete=True),
    "extra argument": mutate(["tool_requests", 0, "arguments", "return_date"], "2026-07-12"),
    "extra top-level key": {**VALID, "notes": "x"},
    "string for integer": mutate(["tool_requests", 0, "arguments", "adults"], "2"),
    "float for integer": mutate(["slot_updates", "nights"], 4.5),
    "bool for integer": mutate(["tool_requests", 0, "arguments", "rooms"], True),
    "bad date": mutate(["slot_updates", "check_in_date"], "10/07/2026"),
    "bad date in args": mutate(["tool_requests", 0, "arguments", "check_in"], "July 10"),
    "null slot update": mutate(["slot_updates", "region"], None),
    "wrong constant": mutate(["tool_requests", 0, "arguments", "radius"], 50),
    "two requests": {**VALID, "tool_requests": VALID["tool_requests"] * 2},
    "reason on plain kind": mutate(["render_intent", "reason"], "out_of_domain"),
    "missing on plain kind": mutate(["render_intent", "missing"], ["dates"]),
    "collect_missing without list": {**VALID, "render_intent": {"kind": "collect_missing"}},
    "empty missing": {**VALID, "render_intent": {"kind": "collect_missing", "missing": []}},
    "unknown missing value": {**VALID, "render_intent": {"kind": "collect_missing", "missing": ["budget"]}},
    "error reason under clarify": {**VALID, "render_intent": {"kind": "clarify", "reason": "pii_redacted"}},
    "unknown slot key": mutate(["slot_updates", "budget_max"], 100),
    "negative adults": mutate(["tool_requests", 0, "arguments", "adults"], -1),
    "arguments for another tool": mutate(["tool_requests", 0, "tool"], "mcp/duffel.search_offers"),
}


@pytest.mark.parametrize("name", sorted(INVALID))
def test_invalid_extract_refused_by_both(name):
    assert both_accept(INVALID[name]) == (False, False)


def test_missing_order_is_checked_by_the_models():
    """Order of ``missing`` is a model rule (JSON Schema cannot express it): the models refuse it."""
    doc = {**VALID, "render_intent": {"kind": "collect_missing", "missing": ["party", "region"]}}
    assert extract_errors(doc)


def test_problem_classification():
    assert extract_problem(VALID) is None
    assert extract_problem(INVALID["retired tool"])[0] == "out_of_vocab"
    assert extract_problem(INVALID["unknown intent"])[0] == "out_of_vocab"
    assert extract_problem(INVALID["bad date"])[0] == "schema_invalid"
    assert extract_problem("not a dict")[0] == "out_of_vocab"


def test_exported_schema_is_json_serialisable_and_names_every_tool():
    text = json.dumps(EXTRACT_SCHEMA)
    for tool in ("mcp/google-places.search_text", "mcp/hotelbeds-transfers.search_transfers"):
        assert tool in text
    assert "mcp/amadeus.search_hotels" not in text
