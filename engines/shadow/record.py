"""The shadow comparison record (docs/shadow.md): the answered live pass, what the shadow engine
produced for it, and the stored form of the two side by side.

:class:`ShadowComparison` is what :class:`~engines.shadow.runner.ShadowRunner` builds for every finished
run; :meth:`ShadowComparison.as_record` is the dict the store redacts and writes and the report reads
(``kind = slm_shadow_comparison``). Agreement uses the functions of :mod:`engines.agreement`, the ones
``travel-slm eval`` uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from contracts.validation import extract_problem, render_problem
from engines.agreement import extract_agreement, render_agreement, turn_class, widget_types
from engines.fallback import Served

RECORD_KIND = "slm_shadow_comparison"
#: the longest error text a record keeps
ERROR_MAX = 300


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(slots=True)
class LiveAnswer:
    """The answered live pass a shadow run compares with. Not copied: the app hands over documents it no
    longer touches once the response is sent (copying a render document cost the event loop more than the
    comparison itself)."""

    turn: dict[str, Any]
    document: Any
    extraction: dict[str, Any] | None
    """The extraction the live render was computed from (the extract pass: its own document)."""
    tool_summary: dict[str, Any] | None
    engine: str
    latency_ms: float
    fallback_used: bool

    @classmethod
    def of(cls, turn: dict[str, Any], served: Served, extraction: dict[str, Any] | None,
           tool_summary: dict[str, Any] | None) -> LiveAnswer:
        return cls(turn, served.document, extraction, tool_summary, served.engine, served.latency_ms,
                   served.fallback_used)


@dataclass(slots=True)
class ShadowResult:
    """What the shadow engine produced in one run: its own documents (``None`` when it produced none) and
    whether, why and after how long the run fell back."""

    extract: Any = None
    render: Any = None
    extract_fell_back: bool | None = None
    """The render pass: whether the shadow extract run first fell back (``None``: it never answered)."""
    own_valid: bool | None = None
    """Whether the shadow engine's own document passed the contract, when the pass runner already checked it
    (``None``: check it here)."""
    fell_back: bool = False
    reason: str | None = None
    error: str | None = None
    pass_seconds: float = 0.0
    """Wall time of the compared pass (the render alone for the render pass): the report's shadow latency."""
    total_seconds: float = 0.0
    """Wall time of the whole run (the extract first, for the render pass)."""


@dataclass(slots=True)
class ShadowComparison:
    """One finished shadow run of ``pass_name`` beside the live answer it shadows."""

    pass_name: str
    request_id: str
    shadow_engine: str
    live: LiveAnswer
    shadow: ShadowResult

    @property
    def live_extract(self) -> Any:
        return self.live.document if self.pass_name == "extract" else self.live.extraction

    @property
    def live_render(self) -> Any:
        return self.live.document if self.pass_name == "render" else None

    def agreement(self) -> dict[str, bool]:
        """Field agreement of the live (served) answer with what the shadow engine itself produced; a run
        that produced nothing (timeout, error) disagrees on every field."""
        shadow = self.shadow
        agreement: dict[str, bool] = {}
        if shadow.extract is None:
            agreement.update(dict.fromkeys(extract_agreement({}, {}), False))
        else:
            agreement.update(extract_agreement(self.live_extract, shadow.extract))
        if self.pass_name == "render":
            if shadow.render is None:
                agreement.update(dict.fromkeys(render_agreement({}, {}), False))
            else:
                agreement.update(render_agreement(self.live_render, shadow.render))
        return agreement

    def schema_valid(self) -> bool:
        """Whether the shadow engine's own document of the pass exists and passes the contract."""
        shadow = self.shadow
        own = shadow.render if self.pass_name == "render" else shadow.extract
        if own is None:
            return False
        if shadow.own_valid is not None:
            return shadow.own_valid
        problem = render_problem(own) if self.pass_name == "render" else extract_problem(own)
        return problem is None

    def as_record(self) -> dict[str, Any]:
        """The stored record (the store redacts it before writing)."""
        live, shadow, render = self.live, self.shadow, self.pass_name == "render"
        live_extract, live_render, turn = self.live_extract, self.live_render, live.turn
        return {
            "kind": RECORD_KIND,
            "ts": _now_iso(),
            "request_id": self.request_id,
            "pass": self.pass_name,
            "live_engine": live.engine,
            "shadow_engine": self.shadow_engine,
            "turn": {"event_type": turn.get("event_type", "user_message"),
                     "event_payload": turn.get("event_payload", {}),
                     "slot_state": turn.get("slot_state", {})},
            "live_extract": live_extract,
            "live_render": live_render,
            "shadow_extract": shadow.extract,
            "shadow_render": shadow.render,
            "chosen": "live",
            "agreement": self.agreement(),
            "schema_valid": self.schema_valid(),
            "live_latency_ms": live.latency_ms,
            "shadow_latency_ms": round(shadow.pass_seconds * 1000.0, 1),
            "shadow_total_ms": round(shadow.total_seconds * 1000.0, 1),
            "fell_back": shadow.fell_back,
            "fallback_reason": shadow.reason if shadow.fell_back else None,
            "shadow_extract_fell_back": shadow.extract_fell_back if render else None,
            "live_fallback_used": live.fallback_used,
            "error": None if shadow.error is None else shadow.error[:ERROR_MAX],
            "live_widget_types": widget_types(live_render) if render else None,
            "shadow_widget_types": widget_types(shadow.render) if render else None,
            "class": turn_class(live_extract) if isinstance(live_extract, dict) else "unknown|none",
        }
