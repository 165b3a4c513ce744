"""Shadow execution (docs/shadow.md): run a candidate engine beside the live one, compare, store.

The app calls :meth:`ShadowRunner.submit` after a live pass has been answered. ``submit`` is
synchronous, cheap and never raises: it samples and starts a task. The in-flight limit applies when the
task starts: beyond ``max_inflight`` runs that have started and not ended, the run is dropped and counted.
A run that is only waiting for its first event-loop turn holds no engine and no slot; those are bounded
apart (:data:`PENDING_MAX`), so nothing is ever queued without bound. (Admitting at submit time counted
every run spawned in the same loop turn as in flight: under 64 clients a loop turn answers dozens of
requests, so a deterministic shadow that ends on its first turn was dropped for runs that were not
running, issue 11 finding 9.) The task runs the shadow engine under its own timeout (a slower run is recorded as
``fell_back``), renders from the shadow engine's *own* extraction, compares with the functions of
:mod:`engines.agreement` (the same ones ``travel-slm eval`` uses), and hands the record to the
store, whose writer thread redacts and writes it. Nothing here can change, delay or fail a live
response: the live document was already sent, and every failure of the shadow side ends up in a
record, a metric and a log line.

Shadow passes go through a private :class:`~engines.fallback.PassRunner` over the same engine
objects but without the live observers, so shadow traffic never shows up in the live request
metrics, and with circuit breakers of its own.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import time
import uuid
from typing import Any

from core.settings import Settings, ShadowSettings
from engines.base import Engine
from engines.fallback import PassRunner, Served
from engines.shadow.observe import notify
from engines.shadow.record import ERROR_MAX, LiveAnswer, ShadowComparison, ShadowResult
from engines.shadow.redact import redact_record
from engines.shadow.store import ShadowStore

log = logging.getLogger("travel_slm.shadow")

#: beyond the shadow timeout, how long a shadow pass may take before it is cancelled from outside
GUARD_S = 5.0
#: runs spawned and waiting for their first event-loop turn (beyond both this and 2 x max_inflight, a
#: submit is dropped at once); about one per live request answered in the same loop turn
PENDING_MAX = 1024


class _Timeout(Exception):
    pass


def _checked_validity(served: Served) -> bool | None:
    """Whether the engine's own document is schema-valid, when the pass runner has already checked it (a
    served engine document passed its check; the oracle's carries the verdict); None: not checked yet.
    Validating a render document again cost as much as the rest of the comparison."""
    if served.engine_document is None:
        return False
    if not served.fallback_used and served.engine_document is served.document:
        return served.schema_valid
    return None


class ShadowRunner:
    """Runs the shadow engine for sampled live passes and stores comparison records."""

    def __init__(self, settings: Settings | ShadowSettings, runner: PassRunner, metrics: Any = None,
                 *, store: ShadowStore | None = None, rng: random.Random | None = None) -> None:
        self.full_settings: Settings | None = settings if isinstance(settings, Settings) else None
        self.settings: ShadowSettings = settings.shadow if isinstance(settings, Settings) else settings
        self.live_runner = runner
        self.metrics = metrics
        self.engine_name: str = self.settings.engine
        self.store = store or ShadowStore(
            self.settings.store,
            retention_days=self.settings.retention_days,
            retention_max_rows=self.settings.retention_max_rows,
            redactor=functools.partial(redact_record, secrets=self._secrets()),
            listener=metrics,
        )
        self._rng = rng or random.Random()
        self._passes: PassRunner | None = None
        self._owned_engine: Engine | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        #: runs that have started and not ended (the in-flight limit); a task that waits for its first turn,
        #: or whose done callback has not fired yet, holds no slot
        self._running = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._accepting = False
        self.counts: dict[str, int] = {
            "submitted": 0, "sampled_out": 0, "dropped": 0, "started": 0, "compared": 0, "fell_back": 0,
            "internal_errors": 0,
        }
        self.max_inflight_seen = 0

    def _secrets(self) -> tuple[str, ...]:
        """Secrets to scrub from records besides the environment's: this server's API key, which may come
        from a config file rather than ``TRAVEL_SLM_API_KEY``."""
        key = self.full_settings.api_key if self.full_settings is not None else None
        return (key.get_secret_value(),) if key is not None else ()

    # -- lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the store and make sure the shadow engine exists (building it when the app did not)."""
        self._loop = asyncio.get_running_loop()
        engines = dict(self.live_runner.engines)
        if self.engine_name not in engines and self.full_settings is not None:
            from engines.registry import build_engine

            try:
                engine = build_engine(self.engine_name, self.full_settings)
                await engine.start()
                engines[self.engine_name] = engine
                self._owned_engine = engine
            except Exception as exc:  # shadow runs will record fell_back/unavailable
                log.error("shadow engine could not be started",
                          extra={"engine": self.engine_name, "error": f"{type(exc).__name__}: {exc}"[:ERROR_MAX]})
        settings = self.full_settings if self.full_settings is not None else Settings(shadow=self.settings)
        self._passes = PassRunner.from_settings(settings, engines, policy="shadow")
        await asyncio.to_thread(self.store.start)
        self._accepting = True
        log.info("shadow mode on", extra={"engine": self.engine_name, "passes": list(self.settings.passes),
                                          "sample_rate": self.settings.sample_rate,
                                          "max_inflight": self.settings.max_inflight})

    async def close(self, grace_s: float | None = None) -> None:
        """Stop accepting, let in-flight runs finish (each is bounded by its timeout), flush the store."""
        self._accepting = False
        if grace_s is None:
            grace_s = 2 * self.settings.timeout_ms / 1000.0 + 2.0
        pending = [t for t in self._tasks if not t.done()]
        if pending:
            _done, still = await asyncio.wait(pending, timeout=grace_s)
            for task in still:
                task.cancel()
            if still:
                await asyncio.gather(*still, return_exceptions=True)
        await asyncio.to_thread(self.store.close)
        if self._owned_engine is not None:
            try:
                await self._owned_engine.aclose()
            except Exception:
                log.exception("shadow engine close failed")
        log.info("shadow mode off", extra=dict(self.counts))

    @property
    def inflight(self) -> int:
        return self._running

    @property
    def pending(self) -> int:
        """Runs spawned and not ended (started or waiting for their first event-loop turn)."""
        return sum(1 for t in self._tasks if not t.done())

    def stats(self) -> dict[str, Any]:
        return {**self.counts, "inflight": self.inflight, "pending": self.pending,
                "max_inflight": self.settings.max_inflight,
                "max_inflight_seen": self.max_inflight_seen, "store_pending": self.store.pending,
                "store_written": self.store.written, "store_overflowed": self.store.overflowed,
                "store_lost": self.store.lost_total, "store": self.store.health(),
                "engine": self.engine_name, "passes": list(self.settings.passes),
                "sample_rate": self.settings.sample_rate}

    async def flush(self, timeout: float = 10.0) -> bool:
        """Wait for in-flight runs, then for the store to commit what they produced (tests, report)."""
        pending = [t for t in self._tasks if not t.done()]
        if pending:
            await asyncio.wait(pending, timeout=timeout)
        return await asyncio.to_thread(self.store.flush, timeout)

    # -- submit: the only call on the live side ----------------------------------------------------

    def submit(
        self,
        pass_name: str,
        request_id: str | None,
        turn: dict[str, Any],
        live_served: Served,
        live_extraction: dict[str, Any] | None = None,
        tool_summary: dict[str, Any] | None = None,
    ) -> bool:
        """Maybe start a shadow run of ``pass_name`` for an answered live pass. Never blocks, never raises.

        Returns whether a shadow run was handed over (sampled in, its task spawned); it is still dropped when
        it starts while ``max_inflight`` runs are running.
        """
        try:
            if not self._accepting or pass_name not in self.settings.passes:
                return False
            self.counts["submitted"] += 1
            rate = self.settings.sample_rate
            if rate < 1.0 and self._rng.random() >= rate:
                self.counts["sampled_out"] += 1
                return False
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            args = (pass_name, request_id or uuid.uuid4().hex, turn, live_served, live_extraction, tool_summary)
            if running is self._loop:
                return self._spawn(*args)
            if self._loop is None or self._loop.is_closed():
                return False
            self._loop.call_soon_threadsafe(self._spawn_quietly, *args)  # from a worker thread
            return True
        except Exception:
            self.counts["internal_errors"] += 1
            log.exception("shadow submit failed")
            return False

    def _spawn_quietly(self, *args: Any) -> None:
        try:
            self._spawn(*args)
        except Exception:
            self.counts["internal_errors"] += 1
            log.exception("shadow spawn failed")

    def _spawn(self, pass_name: str, request_id: str, turn: dict[str, Any], live_served: Served,
               live_extraction: dict[str, Any] | None, tool_summary: dict[str, Any] | None) -> bool:
        if len(self._tasks) >= max(PENDING_MAX, 2 * self.settings.max_inflight):
            self._drop(pass_name)
            return False
        live = LiveAnswer.of(turn, live_served, live_extraction, tool_summary)
        task = asyncio.get_running_loop().create_task(self._run(pass_name, request_id, live),
                                                      name=f"shadow-{pass_name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    def _drop(self, pass_name: str) -> None:
        self.counts["dropped"] += 1
        self._metric("shadow_run", pass_name, "dropped")
        self.store.record_drop(pass_name)

    # -- the shadow run ------------------------------------------------------------------------------

    async def _pass(self, pass_name: str, turn: dict[str, Any], extraction: dict[str, Any] | None,
                    tool_summary: dict[str, Any] | None) -> Served:
        assert self._passes is not None
        # The shadow timeout is the pass runner's deadline, so that a run past it is a timeout *inside* the
        # runner: it counts toward the shadow circuit breaker (a hanging upstream opens it) and never leaves
        # a half-open trial behind (cancelling the call from outside did both, issue 11 finding 3).
        timeout_s = self.settings.timeout_ms / 1000.0
        deadline = time.monotonic() + timeout_s
        call = (self._passes.extract(turn, self.engine_name, deadline=deadline) if pass_name == "extract"
                else self._passes.render(turn, extraction or {}, tool_summary, self.engine_name, deadline=deadline))
        try:
            # a hang guard only (the deterministic fallback itself never blocks): the runner ends at the deadline.
            # asyncio.timeout runs the pass in this task; wait_for (Python 3.11) wraps it in a task of its own,
            # which costs two more event-loop turns per pass (see _run)
            async with asyncio.timeout(timeout_s + GUARD_S):
                served = await call
        except TimeoutError:
            raise _Timeout(f"shadow {self.engine_name} {pass_name} exceeded {self.settings.timeout_ms} ms") from None
        if served.fallback_used and served.fallback_reason == "timeout":
            served.error = f"shadow {self.engine_name} {pass_name} exceeded {self.settings.timeout_ms} ms"
        return served

    async def _run(self, pass_name: str, request_id: str, live: LiveAnswer) -> None:
        if self._running >= self.settings.max_inflight:
            self._drop(pass_name)
            return
        self._running += 1
        self.counts["started"] += 1
        self.max_inflight_seen = max(self.max_inflight_seen, self._running)
        try:
            await self._compare(pass_name, request_id, live)
        finally:
            self._running -= 1

    async def _compare(self, pass_name: str, request_id: str, live: LiveAnswer) -> None:
        # No yield before the engine is called: the task's first step already runs on a later event-loop turn
        # than the live response that spawned it. Each turn is precious under load: with 64 clients a turn of
        # the loop takes tens of ms, so a run that needed seven turns (a sleep(0), then two wait_for tasks per
        # pass) stayed in flight ~300 ms for well under 1 ms of CPU, and the in-flight limit dropped 93% of
        # the runs (issue 11, finding 9). A deterministic run now ends on the turn it starts.
        shadow = ShadowResult()
        started = time.perf_counter()
        pass_started = started
        try:
            try:
                ex = await self._pass("extract", live.turn, None, None)
                shadow.extract = ex.engine_document
                shadow.extract_fell_back = ex.fallback_used
                if pass_name == "extract":
                    shadow.fell_back, shadow.reason, shadow.error = ex.fallback_used, ex.fallback_reason, ex.error
                    shadow.own_valid = _checked_validity(ex)
                elif ex.fallback_used:
                    shadow.error = f"shadow extract fell back ({ex.fallback_reason}): {ex.error or ''}"
                if pass_name == "render":
                    # the shadow render renders from the shadow engine's own extraction (the served one:
                    # after a shadow extract fallback that is what the pipeline would have rendered from)
                    pass_started = time.perf_counter()
                    rd = await self._pass("render", live.turn, ex.document, live.tool_summary)
                    shadow.render = rd.engine_document
                    shadow.own_valid = _checked_validity(rd)
                    shadow.fell_back, shadow.reason = rd.fallback_used, rd.fallback_reason
                    if rd.fallback_used:
                        shadow.error = rd.error
            except _Timeout as exc:
                shadow.fell_back, shadow.reason, shadow.error = True, "timeout", str(exc)
                if pass_name == "render" and shadow.extract_fell_back is None:
                    shadow.extract_fell_back = True
        except asyncio.CancelledError:
            shadow.fell_back, shadow.reason, shadow.error = True, "cancelled", "shadow run cancelled at shutdown"
        except Exception as exc:  # a crashing engine (or anything else): recorded, never raised
            shadow.fell_back, shadow.reason, shadow.error = True, "error", f"{type(exc).__name__}: {exc}"
        ended = time.perf_counter()
        shadow.pass_seconds, shadow.total_seconds = ended - pass_started, ended - started

        try:
            record = ShadowComparison(pass_name, request_id, self.engine_name, live, shadow).as_record()
        except Exception:
            self.counts["internal_errors"] += 1
            log.exception("shadow record could not be built")
            return
        outcome = "fell_back" if shadow.fell_back else "compared"
        self.counts[outcome] += 1
        self._metric("shadow_run", pass_name, outcome)
        self._metric("shadow_duration", pass_name, self.engine_name, shadow.pass_seconds)
        for field, match in record["agreement"].items():
            self._metric("shadow_agreement", pass_name, field, match)
        if shadow.fell_back:
            log.info("shadow run fell back", extra={"pass": pass_name, "engine": self.engine_name,
                                                    "reason": shadow.reason, "request_id": request_id})
        self.store.append(record)

    def _metric(self, name: str, *args: Any) -> None:
        notify(self.metrics, name, *args)
