"""The ``deterministic`` engine: the oracle behind the shared engine interface. Always up."""

from __future__ import annotations

from typing import Any, ClassVar

from engines.base import Engine, PassOutput
from engines.deterministic.extract import extract
from engines.deterministic.render import render


class DeterministicEngine(Engine):
    name: ClassVar[str] = "deterministic"
    adapter = "none"
    model = "oracle"
    constrained = True

    async def extract(self, turn: dict[str, Any]) -> PassOutput:
        return PassOutput(document=extract(turn))

    async def render(
        self, turn: dict[str, Any], extraction: dict[str, Any], tool_summary: dict[str, Any]
    ) -> PassOutput:
        return PassOutput(document=render(turn, extraction, tool_summary))
