"""What each layer may know (issue 13, item 1): the engine interface knows no fixtures, the fallback layer asks them."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any, ClassVar

from engines.base import Engine, PassOutput
from engines.deterministic.engine import DeterministicEngine
from engines.deterministic.fixtures import fixture
from engines.deterministic.render import merged_slot
from engines.fallback import PassRunner

REPO = Path(__file__).resolve().parent.parent
TURN = {"event_type": "user_message", "event_payload": {"text": "find me a hotel in Lisbon for 2 adults from 3 to 6 June"},
        "slot_state": {}}


def _imported_modules(path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module)
    return out


def test_the_engine_interface_knows_no_fixtures() -> None:
    assert not any(m.startswith("engines.deterministic") for m in _imported_modules(REPO / "engines" / "base.py"))
    assert not hasattr(Engine, "tool_summary")


class _SummaryRecorder(Engine):
    """Answers like the oracle and keeps the tool summary each render got; its own ``tool_summary`` (the old
    engine hook) must not be consulted."""

    name: ClassVar[str] = "slm"
    adapter = "test"
    model = "recorder"

    def __init__(self) -> None:
        self.oracle = DeterministicEngine()
        self.summaries: list[dict[str, Any]] = []

    async def extract(self, turn: dict[str, Any]) -> PassOutput:
        return await self.oracle.extract(turn)

    async def render(self, turn: dict[str, Any], extraction: dict[str, Any], tool_summary: dict[str, Any]
                     ) -> PassOutput:
        self.summaries.append(tool_summary)
        return await self.oracle.render(turn, extraction, tool_summary)

    def tool_summary(self, extraction: dict[str, Any], slot: dict[str, Any]) -> dict[str, Any]:
        raise AssertionError("the fallback layer asked the engine for a fixture")


async def test_a_render_without_a_tool_summary_gets_the_oracle_fixture_on_every_engine() -> None:
    engine = _SummaryRecorder()
    runner = PassRunner({"slm": engine})
    extraction = (await runner.extract(TURN, "slm")).document
    served = await runner.render(TURN, extraction, None, "slm")
    assert not served.fallback_used
    expected = fixture(extraction, merged_slot(TURN, extraction))
    assert expected and engine.summaries == [expected]
    # a given summary wins over the fixture
    given = {"ok": True, "tool": "search_hotels", "data": {"hotels": []}}
    await runner.render(TURN, extraction, given, "slm")
    assert engine.summaries[-1]["tool"] == "search_hotels"
