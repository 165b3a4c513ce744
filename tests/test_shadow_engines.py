"""Misbehaving shadow engines used by the shadow tests, and what the fallback layer makes of them.

Each wraps the deterministic oracle and breaks one way: slow (waits on a gate the test opens),
failing (an invalid document or an engine error) and crashing (raises from every entry point,
including ``model_for`` which the fallback layer calls outside its own guard).
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any, ClassVar

import pytest

from engines.base import Engine, EngineError, PassOutput
from engines.deterministic.engine import DeterministicEngine
from engines.fallback import PassRunner

TURN = {"event_type": "user_message", "event_payload": {"text": "flights to Paris"}, "slot_state": {}}


class GatedEngine(Engine):
    """The oracle's answers, released only once ``gate`` is set (a threading.Event: usable across threads)."""

    name: ClassVar[str] = "slm"
    adapter = "test"
    model = "gated"

    def __init__(self, gate: threading.Event | None = None, *, wrong: bool = False) -> None:
        self.gate = gate or threading.Event()
        self.oracle = DeterministicEngine()
        self.calls = 0
        self.wrong = wrong

    async def _wait(self) -> None:
        self.calls += 1
        while not self.gate.is_set():
            await asyncio.sleep(0.005)

    async def extract(self, turn: dict[str, Any]) -> PassOutput:
        await self._wait()
        out = await self.oracle.extract(turn)
        if self.wrong:  # a valid but different answer
            out.document = {"slot_updates": {}, "tool_requests": [], "render_intent": {"kind": "summary"}}
        return out

    async def render(self, turn: dict[str, Any], extraction: dict[str, Any], tool_summary: dict[str, Any]
                     ) -> PassOutput:
        await self._wait()
        return await self.oracle.render(turn, extraction, tool_summary)


class SleepyEngine(GatedEngine):
    """Never answers within any sane timeout (sleeps an hour unless cancelled)."""

    model = "sleepy"

    async def _wait(self) -> None:
        self.calls += 1
        await asyncio.sleep(3600)


class FailingEngine(Engine):
    """Extract: an engine error; render: a schema-invalid document."""

    name: ClassVar[str] = "slm"
    adapter = "test"
    model = "failing"

    async def extract(self, turn: dict[str, Any]) -> PassOutput:
        raise EngineError("invalid_json", "the model emitted half a JSON object")

    async def render(self, turn: dict[str, Any], extraction: dict[str, Any], tool_summary: dict[str, Any]
                     ) -> PassOutput:
        return PassOutput(document={"bot_message": 42, "widgets": "none"})


class CrashingEngine(Engine):
    """Raises from every entry point, model_for included (for the render pass)."""

    name: ClassVar[str] = "slm"
    adapter = "test"
    model = "crashing"

    async def extract(self, turn: dict[str, Any]) -> PassOutput:
        raise RuntimeError("segfault-ish crash in extract")

    async def render(self, turn: dict[str, Any], extraction: dict[str, Any], tool_summary: dict[str, Any]
                     ) -> PassOutput:
        raise RuntimeError("crash in render")

    def model_for(self, pass_name: str) -> str:
        if pass_name == "render":
            raise RuntimeError("crash in model_for")
        return self.model


async def test_failing_engine_falls_back_under_the_pass_runner() -> None:
    runner = PassRunner({"slm": FailingEngine()})
    ex = await runner.extract(TURN, "slm")
    assert ex.fallback_used and ex.fallback_reason == "invalid_json" and ex.engine_document is None
    rd = await runner.render(TURN, ex.document, None, "slm")
    assert rd.fallback_used and rd.fallback_reason == "schema_invalid"
    assert rd.engine_document == {"bot_message": 42, "widgets": "none"}


async def test_crashing_engine_escapes_the_pass_runner_through_model_for() -> None:
    # why the shadow runner needs its own guard: this exception is not turned into a fallback
    runner = PassRunner({"slm": CrashingEngine()})
    ex = await runner.extract(TURN, "slm")
    assert ex.fallback_reason == "error"
    with pytest.raises(RuntimeError, match="model_for"):
        await runner.render(TURN, ex.document, None, "slm")


async def test_gated_engine_waits_for_its_gate() -> None:
    engine = GatedEngine()
    task = asyncio.ensure_future(engine.extract(TURN))
    await asyncio.sleep(0.02)
    assert not task.done() and engine.calls == 1
    engine.gate.set()
    out = await task
    assert out.document == (await DeterministicEngine().extract(TURN)).document
