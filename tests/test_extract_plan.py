"""The extract plan mode: the model's small decision document and the code that derives the rest."""

from __future__ import annotations

import json

import pytest

from contracts.turn import Turn
from contracts.validation import extract_errors
from engines.deterministic.extract import extract
from engines.slm import grammars
from engines.slm.extract_plan import plan_model, plan_of, plan_schema, realise, region_labels
from tests.reference import all_records, require_reference


def test_plan_round_trip_reproduces_every_reference_extraction():
    """realise(plan_of(oracle)) == oracle on all labelled turns: the derivation loses nothing."""
    require_reference()
    records = all_records()
    assert len(records) > 4000
    for record in records:
        turn = Turn.model_validate(record["input"]).engine_input()
        plan = plan_of(turn, record["expected"]["extract"])
        plan_model().model_validate(plan, strict=True)
        assert realise(turn, plan) == record["expected"]["extract"], record["id"]


def test_plan_puts_the_deciding_field_first_and_derives_the_request():
    turn = {"event_type": "user_message", "event_payload": {"text": "hotels in Paris for 2 adults"}, "slot_state": {}}
    plan = plan_of(turn, extract(turn))
    assert list(plan) == ["kind", "call", "region", "adults"]
    assert plan == {"kind": "show_hotels", "call": True, "region": "Paris", "adults": 2}
    out = realise(turn, plan)
    assert out["tool_requests"][0]["tool"] == "mcp/hotelbeds.search_hotels"
    assert out["tool_requests"][0]["arguments"]["city_code"] == "PAR"
    assert out["slot_updates"]["party"] == {"rooms": 1, "adults": 2, "children": []}


@pytest.mark.parametrize(("plan", "check"), [
    ({"kind": "collect_missing"}, lambda o: o["render_intent"]["missing"] == ["region", "dates", "party"]),
    ({"kind": "error", "reason": "out_of_domain"}, lambda o: o["render_intent"] == {"kind": "error",
                                                                                    "reason": "out_of_domain"}),
    ({"kind": "show_places", "query": "text"}, lambda o: o["tool_requests"][0]["arguments"]["max_results"] == 8),
    ({"kind": "show_hotels", "call": False}, lambda o: o["tool_requests"] == []),
    ({"kind": "show_flights", "region": "Lisbon", "dates": ["2026-05-01", "2026-05-04"]},
     lambda o: o["slot_updates"]["nights"] == 3 and o["tool_requests"][0]["arguments"]["destination"] == "LIS"),
])
def test_realised_plans_are_contract_valid(plan, check):
    turn = {"event_type": "user_message", "event_payload": {"text": "museums please"}, "slot_state": {}}
    out = realise(turn, plan)
    assert not extract_errors(out)
    assert check(out)


def test_state_rules_apply_to_model_values():
    """Dates or party already in the slots, or the same region again, are not written (as the oracle does)."""
    slot = {"region": {"label": "Paris", "city_code": "PAR", "country_code": "FR", "kind": "city"},
            "check_in_date": "2026-01-01", "party": {"rooms": 1, "adults": 1, "children": []}}
    turn = {"event_type": "user_message", "event_payload": {"text": "x"}, "slot_state": slot}
    out = realise(turn, {"kind": "summarize", "region": "Paris", "dates": ["2026-02-01", "2026-02-03"], "adults": 3})
    assert out["slot_updates"] == {}


def test_grammar_is_the_plan_schema_and_lists_the_gazetteer():
    schema = json.loads(grammars.schema_texts("plan", "plan")[grammars.EXTRACT_PLAN])
    assert schema == grammars.as_decoded(plan_schema())
    kinds = {k for branch in schema["anyOf"] for k in branch["properties"]["kind"]["enum"]}
    from contracts.vocab import RENDER_INTENT_KINDS

    assert kinds == set(RENDER_INTENT_KINDS)
    assert schema["anyOf"][0]["properties"]["region"]["enum"] == list(region_labels())
    assert grammars.schema_texts("plan")  # the full extract grammar stays the default
    assert grammars.EXTRACT in grammars.schema_texts("plan")
