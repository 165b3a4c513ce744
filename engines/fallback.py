"""Serving a pass: run the live engine, validate after decoding, fall back to the oracle.

Every non-deterministic engine goes through :class:`PassRunner`. A pass falls back to the
deterministic output on ``error``, ``timeout``, ``invalid_json``, ``schema_invalid``,
``truncated``, ``out_of_vocab``, ``unavailable`` or ``circuit_open`` (docs/engines.md §5), and a
per-engine, per-pass circuit breaker skips an engine for a cooldown after consecutive failures.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from contracts.planner import normalise_tool_summary
from contracts.validation import extract_problem, render_problem, slot_state_problems
from contracts.vocab import CONTRACT_VERSION, PASSES
from engines.base import Engine, EngineError, PassOutput
from engines.deterministic.engine import DeterministicEngine
from engines.deterministic.fixtures import fixture
from engines.deterministic.render import merged_slot

if TYPE_CHECKING:
    from core.settings import Settings

log = logging.getLogger("travel_slm.fallback")

#: How a :class:`PassRunner` built from the settings (:meth:`PassRunner.from_settings`) bounds a model pass and
#: when it stops asking a failing engine; each caller names its own:
#:
#: - ``serve`` (the app, ``travel-slm predict``, ``travel-slm eval``): each model pass is bounded by its engine's
#:   pass timeout (``slm.timeout_ms_*``, ``openai.timeout_ms_*``), and a circuit breaker per engine and pass
#:   (``fallback.failure_threshold``, ``fallback.cooldown_s``) skips an engine that keeps failing;
#: - ``shadow`` (the shadow runner): the breaker of ``serve``, no pass timeout (the shadow runner gives each
#:   pass its own deadline, ``shadow.timeout_ms``, which is the engine's budget: a pass cut there counts toward
#:   the breaker, whereas under ``serve`` a deadline is the caller's own budget and does not);
#: - ``measure`` (benchmarks): the pass timeouts of ``serve``, no breaker (every turn reaches the engine).
PassPolicy = Literal["serve", "shadow", "measure"]
PASS_POLICIES: tuple[PassPolicy, ...] = ("serve", "shadow", "measure")


def pass_timeouts_ms(settings: Settings) -> dict[tuple[str, str], float]:
    """``(engine, pass) -> ms``: the pass timeout of every model engine (``slm.timeout_ms_*``, ``openai.timeout_ms_*``)."""
    return {(engine, p): float(section.timeout_ms(p))
            for engine, section in (("slm", settings.slm), ("openai", settings.openai))
            for p in PASSES}


class CircuitBreaker:
    """Closed -> open after ``threshold`` consecutive failures; half-open after ``cooldown_s``.

    In half-open state one trial call is let through: success closes, failure re-opens, and a call that
    ends without a verdict (cancelled, or failed for a reason that is not the engine's, see
    :meth:`release`) hands the trial to the next call instead of leaving the breaker open for good.
    """

    def __init__(self, threshold: int = 3, cooldown_s: float = 5.0, clock: Callable[[], float] = time.monotonic):
        self.threshold = threshold
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._trial_in_flight = False

    @property
    def state(self) -> str:
        if self._opened_at is None:
            return "closed"
        return "half_open" if self._clock() - self._opened_at >= self.cooldown_s else "open"

    def allow(self) -> bool:
        state = self.state
        if state == "closed":
            return True
        if state == "half_open" and not self._trial_in_flight:
            self._trial_in_flight = True
            return True
        return False

    def record_success(self) -> None:
        self._failures = 0
        self._opened_at = None
        self._trial_in_flight = False

    def release(self) -> None:
        """The allowed call ended without saying anything about the engine: no failure, no success."""
        self._trial_in_flight = False

    def record_failure(self) -> None:
        self._failures += 1
        if self._trial_in_flight or self._failures >= self.threshold:
            self._opened_at = self._clock()
        self._trial_in_flight = False


@dataclass
class Served:
    """One served pass: the document the caller gets, and how it came to be."""

    pass_name: str
    document: dict[str, Any]
    engine: str
    adapter: str
    model: str
    fallback_used: bool = False
    fallback_reason: str | None = None
    latency_ms: float = 0.0
    #: the same wall time, unrounded (the latency histogram resolves microseconds)
    latency_s: float = 0.0
    schema_valid: bool = True
    error: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    time_to_first_token_s: float | None = None
    engine_document: Any = None
    """What the engine itself produced (possibly invalid), for evaluation and shadow records."""
    extra: dict[str, Any] = field(default_factory=dict)

    def llm_contract(self) -> dict[str, Any]:
        return {"engine": self.engine, "adapter": self.adapter, "model": self.model,
                "fallback_used": self.fallback_used, "fallback_reason": self.fallback_reason,
                "contract_version": CONTRACT_VERSION}

    def trace_attributes(self) -> dict[str, str | bool | int | float]:
        """The attributes of the pass's trace span: how it was served, never what it said. Token counts
        (OpenTelemetry's ``gen_ai.usage.*``) only where the engine counted tokens."""
        attributes: dict[str, str | bool | int | float] = {
            "travel_slm.pass": self.pass_name, "travel_slm.engine": self.engine,
            "travel_slm.adapter": self.adapter, "travel_slm.model": self.model,
            "travel_slm.fallback_used": self.fallback_used, "travel_slm.schema_valid": self.schema_valid,
            "travel_slm.latency_ms": self.latency_ms,
        }
        if self.fallback_reason is not None:
            attributes["travel_slm.fallback_reason"] = self.fallback_reason
        if self.prompt_tokens or self.completion_tokens:
            attributes["gen_ai.usage.input_tokens"] = self.prompt_tokens
            attributes["gen_ai.usage.output_tokens"] = self.completion_tokens
        return attributes


PassObserver = Callable[[Served], None]


def resolve_tool_summary(turn: dict[str, Any], extraction: dict[str, Any], given: dict[str, Any] | None) -> dict[str, Any]:
    """Body ``tool_summary``, then ``turn.tool_summary``, then the oracle's fixture (for every engine).

    A given summary may be ours (``{ok, tool, data}``) or the planner's ``tool_result`` (cards at the top
    level): both become the internal shape (:func:`contracts.planner.normalise_tool_summary`, idempotent).
    """
    if given is not None:
        return normalise_tool_summary(given)
    if isinstance(turn.get("tool_summary"), dict):
        return normalise_tool_summary(turn["tool_summary"])
    return fixture(extraction, merged_slot(turn, extraction))


class PassRunner:
    """Runs passes on named engines with validation, timeouts, circuit breakers and fallback."""

    def __init__(
        self,
        engines: dict[str, Engine],
        *,
        timeouts_ms: Mapping[tuple[str, str], float] | None = None,
        failure_threshold: int = 3,
        cooldown_s: float = 5.0,
        circuit_breaker: bool = True,
        deadline_is_engine_budget: bool = False,
        observers: list[PassObserver] | None = None,
        clock: Callable[[], float] = time.monotonic,
        tracer: Any = None,
    ) -> None:
        """``timeouts_ms``: ``(engine, pass) -> ms`` (none: no pass timeout); ``circuit_breaker``: False asks the
        engine on every pass, however often it fails. ``tracer``: an OpenTelemetry tracer (``server.tracing``);
        each pass is then a span, a child of the current one, carrying :meth:`Served.trace_attributes`. None
        (tracing off): no span, no cost. ``deadline_is_engine_budget``: a pass cut at its ``deadline`` counts toward
        the breaker (the shadow runner's own limit); by default a deadline is the caller's budget and does not.
        Built from the settings: :meth:`from_settings`."""
        self.tracer = tracer
        self.deadline_is_engine_budget = deadline_is_engine_budget
        self.engines = dict(engines)
        self.oracle: Engine = self.engines.setdefault("deterministic", DeterministicEngine())
        self.timeouts_ms = dict(timeouts_ms or {})
        self.breakers = {
            (name, p): CircuitBreaker(failure_threshold, cooldown_s, clock)
            for name in self.engines
            if name != "deterministic"
            for p in PASSES
        } if circuit_breaker else {}
        self.observers = list(observers or [])

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        engines: dict[str, Engine],
        *,
        policy: PassPolicy,
        timeouts_ms: Mapping[tuple[str, str], float] | None = None,
        observers: list[PassObserver] | None = None,
        clock: Callable[[], float] = time.monotonic,
        tracer: Any = None,
    ) -> PassRunner:
        """The runner of ``engines`` under ``settings`` and ``policy`` (:data:`PassPolicy`: ``serve``, ``shadow``
        or ``measure``). ``timeouts_ms`` replaces the settings' pass timeouts (a benchmark's own limit; not
        with ``shadow``); ``observers``, ``clock`` and ``tracer`` as in the constructor."""
        if policy not in PASS_POLICIES:
            raise ValueError(f"unknown pass policy {policy!r}: expected one of {', '.join(PASS_POLICIES)}")
        if policy == "shadow" and timeouts_ms is not None:
            raise ValueError("the shadow policy has no pass timeout: the shadow runner sets each pass's deadline")
        if timeouts_ms is None and policy != "shadow":
            timeouts_ms = pass_timeouts_ms(settings)
        return cls(engines, timeouts_ms=timeouts_ms, failure_threshold=settings.fallback.failure_threshold,
                   cooldown_s=settings.fallback.cooldown_s, circuit_breaker=policy != "measure",
                   deadline_is_engine_budget=policy == "shadow",
                   observers=observers, clock=clock, tracer=tracer)

    def engine(self, name: str) -> Engine:
        try:
            return self.engines[name]
        except KeyError:
            raise EngineError("unavailable", f"engine {name!r} is not configured") from None

    async def extract(self, turn: dict[str, Any], engine: str, *, deadline: float | None = None) -> Served:
        """``deadline``: a ``time.monotonic()`` instant the pass must end by (the caller's own deadline
        less a margin); a model engine then gets ``min(pass timeout, time left)`` and falls back with
        ``timeout`` when it runs past it, or at once when no time is left."""
        return await self._serve("extract", engine, turn, None, None, deadline)

    async def render(
        self, turn: dict[str, Any], extraction: dict[str, Any], tool_summary: dict[str, Any] | None, engine: str,
        *, deadline: float | None = None,
    ) -> Served:
        summary = resolve_tool_summary(turn, extraction, tool_summary)
        return await self._serve("render", engine, turn, extraction, summary, deadline)

    async def _call(self, eng: Engine, pass_name: str, turn: dict[str, Any], extraction: Any, summary: Any) -> PassOutput:
        if pass_name == "extract":
            return await eng.extract(turn)
        return await eng.render(turn, extraction, summary)

    async def _serve(
        self, pass_name: str, engine_name: str, turn: dict[str, Any], extraction: Any, summary: Any,
        deadline: float | None = None,
    ) -> Served:
        if self.tracer is None:
            return await self._serve_pass(pass_name, engine_name, turn, extraction, summary, deadline)
        with self.tracer.start_as_current_span(f"pass {pass_name}") as span:
            served = await self._serve_pass(pass_name, engine_name, turn, extraction, summary, deadline)
            if span.is_recording():
                span.set_attributes(served.trace_attributes())
            return served

    async def _serve_pass(
        self, pass_name: str, engine_name: str, turn: dict[str, Any], extraction: Any, summary: Any,
        deadline: float | None = None,
    ) -> Served:
        start = time.perf_counter()
        eng = self.engines.get(engine_name)
        served: Served
        if engine_name == "deterministic" or eng is self.oracle:
            out = await self._call(self.oracle, pass_name, turn, extraction, summary)
            served = Served(pass_name, out.document, "deterministic", self.oracle.adapter, self.oracle.model,
                            engine_document=out.document)
            problem = self._problem(pass_name, out.document)
            if problem:  # the oracle must never serve an invalid document; surface it loudly
                served.schema_valid = False
                served.error = problem[1][:300]
                log.error("deterministic output failed validation", extra={"pass": pass_name, "reason": problem[0]})
        else:
            served = await self._serve_model(pass_name, engine_name, eng, turn, extraction, summary, deadline)
        if not served.schema_valid:  # only ever the oracle's document: a client's bad input, or a defect?
            cause = await self._invalid_cause(pass_name, turn, extraction, summary)
            served.extra = {**(served.extra or {}), "invalid_cause": cause}
        served.latency_s = time.perf_counter() - start
        served.latency_ms = round(served.latency_s * 1000.0, 1)
        for observer in self.observers:
            try:
                observer(served)
            except Exception:  # an observer (metrics) never breaks serving
                log.exception("pass observer failed")
        return served

    async def _invalid_cause(self, pass_name: str, turn: dict[str, Any], extraction: Any, summary: Any) -> str:
        """``input`` when the oracle's invalid document only echoes slot values the contract refuses (the same
        turn without those slots gives a valid document), else ``oracle`` (a defect: the critical alert)."""
        slot_state = turn.get("slot_state")
        bad = {loc.split(".")[0] for loc in slot_state_problems(slot_state)}
        if not bad or not isinstance(slot_state, dict):
            return "oracle"
        cleaned = {**turn, "slot_state": {k: v for k, v in slot_state.items() if k not in bad}}
        try:
            out = await self._call(self.oracle, pass_name, cleaned, extraction, summary)
        except Exception:
            return "oracle"
        return "input" if self._problem(pass_name, out.document) is None else "oracle"

    @staticmethod
    def _problem(pass_name: str, document: Any) -> tuple[str, str] | None:
        return extract_problem(document) if pass_name == "extract" else render_problem(document)

    async def _serve_model(
        self, pass_name: str, engine_name: str, eng: Engine | None, turn: dict[str, Any], extraction: Any,
        summary: Any, deadline: float | None = None,
    ) -> Served:
        adapter = eng.adapter if eng else "none"
        model = eng.model_for(pass_name) if eng else "none"
        breaker = self.breakers.get((engine_name, pass_name))
        reason: str | None = None
        error: str | None = None
        out: PassOutput | None = None
        if eng is None:
            reason, error = "unavailable", f"engine {engine_name!r} is not configured"
        elif not eng.readiness()[0]:
            reason, error = "unavailable", eng.readiness()[1]
        elif breaker is not None and not breaker.allow():
            reason, error = "circuit_open", f"circuit open for {engine_name}/{pass_name}"
        else:
            timeout_ms = self.timeouts_ms.get((engine_name, pass_name))
            by_deadline = False
            engine_fault = True  # whether a failure says something about the engine (counts toward the breaker)
            if deadline is not None:
                left_ms = (deadline - time.monotonic()) * 1000.0
                if timeout_ms is None or left_ms < timeout_ms:
                    timeout_ms, by_deadline = max(left_ms, 0.0), True
            try:
                if by_deadline and timeout_ms is not None and timeout_ms <= 0:
                    raise TimeoutError
                call = self._call(eng, pass_name, turn, extraction, summary)
                out = await (asyncio.wait_for(call, timeout_ms / 1000.0) if timeout_ms is not None else call)
            except TimeoutError:
                reason, error = "timeout", (
                    f"{engine_name} {pass_name} stopped at the request deadline ({timeout_ms:.0f} ms left)"
                    if by_deadline else f"{engine_name} {pass_name} exceeded {timeout_ms:.0f} ms")
                # a pass cut by the caller's own budget (X-Request-Timeout-Ms) says nothing about the engine:
                # callers with short budgets must not open the breaker for everyone else (the shadow runner's
                # deadline is the engine's own budget, and counts)
                engine_fault = self.deadline_is_engine_budget or not by_deadline
            except EngineError as exc:
                reason, error = exc.reason, exc.message
                # e.g. the openai engine's ClientInputError: the request could not be sent as given, or the
                # upstream refused it with a 4xx: the caller's input, not an upstream failure
                engine_fault = bool(getattr(exc, "counts_toward_breaker", True))
            except asyncio.CancelledError:
                if breaker is not None:
                    breaker.release()
                raise
            except Exception as exc:
                reason, error = "error", f"{type(exc).__name__}: {exc}"
            if out is not None and reason is None:
                if out.finish_reason == "length":
                    reason, error = "truncated", "length stop before the document was complete"
                elif not isinstance(out.document, dict):
                    reason, error = "invalid_json", "the output is not a JSON object"
                else:
                    problem = self._problem(pass_name, out.document)
                    if problem:
                        reason, error = problem
            if breaker is not None:
                if reason is None:
                    breaker.record_success()
                elif reason not in ("unavailable", "circuit_open") and engine_fault:
                    breaker.record_failure()
                else:
                    breaker.release()

        if reason is None and out is not None:
            return Served(pass_name, out.document, engine_name, adapter, model, engine_document=out.document,
                          prompt_tokens=out.prompt_tokens, completion_tokens=out.completion_tokens,
                          time_to_first_token_s=out.time_to_first_token_s, extra=out.extra)

        fallback = await self._call(self.oracle, pass_name, turn, extraction, summary)
        log.warning("fallback", extra={"pass": pass_name, "engine": engine_name, "reason": reason})
        return Served(
            pass_name, fallback.document, engine_name, adapter, model, fallback_used=True, fallback_reason=reason,
            schema_valid=self._problem(pass_name, fallback.document) is None,
            error=(error or "")[:300], engine_document=out.document if out else None,
            prompt_tokens=out.prompt_tokens if out else 0, completion_tokens=out.completion_tokens if out else 0,
            time_to_first_token_s=out.time_to_first_token_s if out else None,
        )
