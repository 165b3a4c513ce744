"""The one interface every engine implements: the oracle, slm and openai.

An engine answers a pass with a raw, *unvalidated* document (:class:`PassOutput`). It never
decides about fallback: validation, timeouts, the circuit breaker, the switch to the oracle's
output and the fixture tool summary of a render without one live in :mod:`engines.fallback`,
identically for every engine.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

FallbackReason = Literal[
    "error", "timeout", "invalid_json", "schema_invalid", "truncated", "out_of_vocab", "unavailable", "circuit_open"
]


class EngineError(Exception):
    """A pass failed for a known reason; the fallback layer turns it into a fallback."""

    def __init__(self, reason: FallbackReason, message: str) -> None:
        super().__init__(message)
        self.reason: FallbackReason = reason
        self.message = message


@dataclass
class PassOutput:
    """What an engine produced for one pass, before validation."""

    document: Any
    """The decoded JSON document (normally a dict)."""
    finish_reason: str = "stop"
    """``stop`` or ``length`` (a length stop is a fallback with reason ``truncated``)."""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    time_to_first_token_s: float | None = None
    text: str | None = None
    """The raw generated text, when the engine generated text."""
    extra: dict[str, Any] = field(default_factory=dict)


class Engine(ABC):
    """Base class of every engine.

    ``turn`` arguments are plain dicts already normalised by :class:`contracts.turn.Turn`
    (``slot_state`` unwrapped from the Firestore envelope, ``event_payload`` a dict).
    """

    name: ClassVar[str]
    adapter: str = "none"
    model: str = "rules"
    constrained: bool = True

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Load models, compile grammars. Called once before serving."""

    def readiness(self) -> tuple[bool, str]:
        """``(ready, reason)``; ``/readyz`` is 200 only when every configured engine is ready."""
        return True, "ready"

    @abstractmethod
    async def extract(self, turn: dict[str, Any]) -> PassOutput:
        """turn -> ``{slot_updates, tool_requests, render_intent}``."""

    @abstractmethod
    async def render(
        self, turn: dict[str, Any], extraction: dict[str, Any], tool_summary: dict[str, Any]
    ) -> PassOutput:
        """turn + extraction + tool_summary -> ``{bot_message, widgets}``."""

    def model_for(self, pass_name: str) -> str:
        """The model that answers ``pass_name`` (engines with one model per pass override this)."""
        return self.model

    def describe(self) -> dict[str, Any]:
        return {"engine": self.name, "adapter": self.adapter, "model": self.model, "constrained": self.constrained}

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release models, HTTP clients, threads."""
