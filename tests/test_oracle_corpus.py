"""The deterministic engine reproduces every labelled reference turn exactly."""

from __future__ import annotations

import pytest

from contracts.turn import Turn
from engines.deterministic import run_turn
from tests.reference import corpus_files, load_records, require_reference

KNOWN_TURN_KEYS = {"event_type", "event_payload", "slot_state", "tool_summary", "tool_error", "duffel_env"}


@pytest.mark.parametrize("path", corpus_files(), ids=lambda p: p.name.split(".")[0])
def test_every_reference_turn_matches(path):
    require_reference()
    mismatches = []
    records = load_records(path)
    for record in records:
        got = run_turn(record["input"])
        for part in ("extract", "tool_summary", "render"):
            if got[part] != record["expected"][part]:
                mismatches.append((record["id"], part))
                break
    assert not mismatches, f"{len(mismatches)} of {len(records)} turns differ, first: {mismatches[:5]}"


def test_reference_corpora_total_4408_turns():
    require_reference()
    assert sum(len(load_records(p)) for p in corpus_files()) == 4408


@pytest.mark.parametrize("path", corpus_files(), ids=lambda p: p.name.split(".")[0])
def test_ignored_fields_change_nothing_and_normalised_turn_agrees(path):
    require_reference()
    for record in load_records(path):
        raw = record["input"]
        stripped = {k: v for k, v in raw.items() if k in KNOWN_TURN_KEYS}
        normalised = Turn.model_validate(raw).engine_input()
        expected = record["expected"]
        assert run_turn(stripped) == expected, record["id"]
        assert run_turn(normalised) == expected, record["id"]


def test_firestore_envelope_is_unwrapped_to_the_same_answer():
    require_reference()
    records = [r for p in corpus_files() for r in load_records(p) if len(r["input"]["slot_state"]) >= 3]
    record = records[0]
    envelope = {"found": True, "path": "trips/t1/slots/current",
                "document": {"id": "current", "data": record["input"]["slot_state"]}}
    turn = Turn.model_validate({**record["input"], "slot_state": envelope}).engine_input()
    assert run_turn(turn) == record["expected"]
    missing = Turn.model_validate({**record["input"], "slot_state": {"found": False, "path": "x"}})
    assert missing.slot_state == {}
