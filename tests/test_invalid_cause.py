"""An invalid served document is classified by the pass runner (issue 11, finding 12): ``input`` when it only
echoes slot values the contract refuses (the same turn without them gives a valid document), ``oracle`` when it is
a defect; the metrics count it under that cause, and only ``oracle`` feeds the critical alert."""

from __future__ import annotations

import asyncio
from typing import Any

from contracts.validation import slot_state_problems
from engines.base import PassOutput
from engines.deterministic.engine import DeterministicEngine
from engines.fallback import PassRunner
from server.metrics import Metrics

TURN = {"event_type": "user_message", "event_payload": {"text": "hotels in Paris"}, "slot_state": {}}


class EchoingOracle(DeterministicEngine):
    """A defect that copies the slot state's region into its slot updates, as it came."""

    async def extract(self, turn: dict[str, Any]) -> PassOutput:
        out = await super().extract(turn)
        region = (turn.get("slot_state") or {}).get("region")
        if region is not None:
            out.document["slot_updates"]["region"] = region
        return out


class BrokenOracle(DeterministicEngine):
    """A defect whatever the input: a render intent outside the vocabulary."""

    async def extract(self, turn: dict[str, Any]) -> PassOutput:
        out = await super().extract(turn)
        out.document["render_intent"] = {"kind": "no_such_kind"}
        return out


def _serve(oracle: DeterministicEngine, slot_state: dict[str, Any]) -> tuple[Any, Metrics]:
    metrics = Metrics()
    runner = PassRunner({"deterministic": oracle}, observers=[metrics.observe_served])
    served = asyncio.run(runner.extract({**TURN, "slot_state": slot_state}, "deterministic"))
    return served, metrics


def test_slot_state_problems_name_the_refused_values() -> None:
    problems = slot_state_problems({"region": {"label": 7}, "nights": "x", "unknown": 1, "party": None})
    assert {p.split(".")[0] for p in problems} == {"region", "nights"}, problems
    assert "region.label" in problems
    assert slot_state_problems({"nights": 2, "anything_else": {"x": 1}}) == []
    assert slot_state_problems([1]) == ["slot_state"]


def test_an_echo_of_refused_input_is_input_and_a_defect_is_oracle() -> None:
    served, metrics = _serve(EchoingOracle(), {"region": {"label": 7}})
    assert served.schema_valid is False and served.extra["invalid_cause"] == "input"
    assert metrics.collect_stats()["schema_invalid"]["by_cause"] == {"input": 1}

    served, metrics = _serve(BrokenOracle(), {"region": {"label": 7}})
    assert served.schema_valid is False and served.extra["invalid_cause"] == "oracle"
    assert metrics.collect_stats()["schema_invalid"]["by_cause"] == {"oracle": 1}

    served, _ = _serve(BrokenOracle(), {})  # nothing refused in the input: a defect
    assert served.extra["invalid_cause"] == "oracle"


def test_a_valid_document_is_not_classified_and_latency_is_unrounded() -> None:
    served, metrics = _serve(DeterministicEngine(), {"region": {"label": 7}})  # the real oracle: robust to it
    assert served.schema_valid is True and "invalid_cause" not in served.extra
    assert metrics.collect_stats()["schema_invalid"]["total"] == 0
    assert served.latency_s > 0 and round(served.latency_s * 1000.0, 1) == served.latency_ms
