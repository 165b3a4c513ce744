"""Build an engine by name from the settings; heavy runtimes are imported only when asked for."""

from __future__ import annotations

from typing import TYPE_CHECKING

from contracts.vocab import ENGINES
from engines.base import Engine

if TYPE_CHECKING:
    from core.settings import Settings



class UnknownEngineError(ValueError):
    pass


def build_engine(name: str, settings: Settings) -> Engine:
    if name == "deterministic":
        from engines.deterministic.engine import DeterministicEngine

        return DeterministicEngine()
    if name == "slm":
        from engines.slm.engine import SlmEngine

        return SlmEngine(settings.slm)
    if name == "openai":
        from engines.openai_engine import OpenAIEngine

        return OpenAIEngine(settings.openai)
    raise UnknownEngineError(f"unknown engine {name!r}: expected one of {', '.join(ENGINES)}")
