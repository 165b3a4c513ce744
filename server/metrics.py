"""Prometheus metrics (docs/metrics.md), one registry per application, and the rolling windows of
``/v1/stats``.

Every label value goes through a bounded set: passes, engines, adapters, outcomes, reasons, HTTP
statuses and agreement fields are closed vocabularies, and anything else becomes ``other``. No id,
no text and no secret ever becomes a label.

Several workers (``travel-slm serve --workers N``) use prometheus-client's multiprocess mode: with
``PROMETHEUS_MULTIPROC_DIR`` set before the process imports prometheus-client, every worker writes its
counters and histograms to files there and :meth:`Metrics.render` aggregates them all
(``MultiProcessCollector``). The rolling windows, the latency sketches and ``/v1/stats`` stay per worker.
"""

from __future__ import annotations

import math
import os
import re
import threading
import time
from collections import Counter as Tally
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, ClassVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from contracts import vocab
from contracts.planner import RULE_IDS, RULES, InputNote
from engines.agreement import FIELDS as AGREEMENT_FIELDS
from engines.fallback import CircuitBreaker, Served
from engines.shadow.report import GATE_TARGETS, P95_TARGET_MS, SCHEMA_TARGET

PREFIX = "travel_slm_"

#: Latency buckets from 1 us to 60 s: 1-2.5-5 steps up to 0.5 s (the deterministic path takes microseconds,
#: a bucket of 0.5 ms and up read its p50 as 0.25 ms), then finer steps around the model timeouts (0.8 s is
#: the slm timeout and the p95 alerts' threshold) up to tens of seconds.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.000001, 0.0000025, 0.000005, 0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005,
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.8,
    1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 60.0,
)
#: Per-token grammar mask time: microseconds to tens of milliseconds.
MASK_BUCKETS: tuple[float, ...] = (
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
)
#: Grammar compilation: milliseconds to a minute.
COMPILE_BUCKETS: tuple[float, ...] = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

PASSES = frozenset(vocab.PASSES)
ENGINES = frozenset(vocab.ENGINES)
MODEL_ENGINES = ENGINES - {"deterministic"}
ADAPTERS = frozenset({"none", "auto", "mlx", "vllm", "transformers", "http"})
OUTCOMES = frozenset({"ok", "fallback", "invalid"})
FALLBACK_REASONS = frozenset(vocab.FALLBACK_REASONS)
NOTE_ACTIONS = frozenset({"mapped", "dropped", "defaulted"})
SHADOW_OUTCOMES = frozenset({"compared", "fell_back", "dropped"})
STORE_ERRORS = frozenset({"open", "write", "writer", "writer_restart", "retention"})
LOSS_CAUSES = frozenset({"write_failed", "store_unavailable", "writer_error", "unserialisable"})
HTTP_STATUSES = frozenset({"200", "400", "401", "404", "405", "408", "413", "415", "422", "431", "500", "503"})
#: ``travel_slm_schema_invalid_total{cause}``: ``model``: a model engine's output failed the contract (the pass
#: fell back); ``input``: the served (oracle) document failed the contract because the request carried values
#: the contract refuses, echoed by the oracle (a client fault: ``served.extra["invalid_cause"] == "input"``);
#: ``oracle``: the oracle served an invalid document from valid input, a defect (the critical alert).
INVALID_CAUSES = frozenset({"model", "input", "oracle"})
#: ``travel_slm_circuit_state`` values (:attr:`engines.fallback.CircuitBreaker.state`); alerts compare with them.
CIRCUIT_STATES: dict[str, int] = {"closed": 0, "half_open": 1, "open": 2}
CIRCUIT_NAMES: dict[int, str] = {v: k for k, v in CIRCUIT_STATES.items()}


def _bounded(value: Any, allowed: Iterable[str], default: str = "other") -> str:
    text = str(value) if value is not None else "none"
    return text if text in allowed else default


def multiprocess_dir() -> str | None:
    """The folder of prometheus-client's multiprocess mode, or ``None`` (one process).

    prometheus-client reads the variable when it is first imported: :mod:`server.serve_command` sets it
    before it starts the workers.
    """
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


#: set by ``travel-slm serve --workers N`` in its workers' environment: the supervisor's pid, whose process
#: metrics ``/metrics`` exposes (the pod's main process: its start time changes only when the pod restarts)
SUPERVISOR_PID_ENV = "_TRAVEL_SLM_SUPERVISOR_PID"


def _process_pid() -> int | str:
    text = os.environ.get(SUPERVISOR_PID_ENV, "")
    return int(text) if text.isdigit() else "self"


BreakerSource = Callable[[], Mapping[tuple[str, str], CircuitBreaker]]


class CircuitStateCollector(Collector):
    """``travel_slm_circuit_state{engine, pass}``, read from the pass runner's breakers at scrape time.

    The breaker's state depends on the clock (open turns half-open after the cooldown without any call),
    so it is read when Prometheus scrapes rather than pushed on transitions. Unknown states read as open.
    """

    NAME = PREFIX + "circuit_state"
    HELP = "Circuit breaker of a model engine and pass: 0 closed, 1 half-open (one trial call allowed), 2 open."

    def __init__(self) -> None:
        self.source: BreakerSource | None = None

    def states(self) -> dict[tuple[str, str], int]:
        """``{(engine, pass): state code}`` now."""
        breakers = self.source() if self.source is not None else {}
        return {(_bounded(engine, ENGINES), _bounded(pass_, PASSES)):
                CIRCUIT_STATES.get(b.state, CIRCUIT_STATES["open"]) for (engine, pass_), b in sorted(breakers.items())}

    def describe(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(self.NAME, self.HELP, labels=["engine", "pass"])

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(self.NAME, self.HELP, labels=["engine", "pass"])
        for (engine, pass_), state in self.states().items():
            family.add_metric([engine, pass_], float(state))
        yield family


# -- latency sketch and rolling windows -------------------------------------------------------------------


def nearest_rank(q_percent: float, n: int) -> int:
    """The 1-based rank of the ``q_percent`` percentile of ``n`` values: the formula of
    :func:`core.stats.percentile`, which the shadow report and ``travel-slm eval`` use."""
    return max(1, math.ceil(q_percent / 100.0 * n))


class LatencySketch:
    """Latencies in bounded memory, with quantiles within :attr:`RELATIVE_ERROR` of the exact figure.

    Values fall into log-spaced bins (DDSketch's mapping: bin ``i`` holds ``(MIN_S * g**(i-1), MIN_S * g**i]``
    with ``g = (1 + e) / (1 - e)``), and each bin keeps its count, smallest and largest value; values at or
    under ``MIN_S`` share bin 0 and values over ``MAX_S`` (a day) the top bin, so a sketch never holds more than
    about 2,750 bins whatever it counts.

    :meth:`quantile` is the shadow report's definition: the nearest-rank percentile (an observed value, no
    interpolation across a histogram bucket), located in its bin and interpolated by rank between that bin's
    smallest and largest value. The answer always lies within the bin's observed range, so it is within
    ``RELATIVE_ERROR`` of the exact nearest-rank value, and exact when the bin holds one distinct value.
    """

    RELATIVE_ERROR = 0.005
    MIN_S = 1e-7
    MAX_S = 86400.0
    _LOG_GAMMA = math.log((1 + RELATIVE_ERROR) / (1 - RELATIVE_ERROR))

    __slots__ = ("bins", "count")

    def __init__(self) -> None:
        self.bins: dict[int, list[float]] = {}  # index -> [count, min, max]
        self.count = 0

    @classmethod
    def index(cls, seconds: float) -> int:
        if seconds <= cls.MIN_S:
            return 0
        return max(1, math.ceil(math.log(min(seconds, cls.MAX_S) / cls.MIN_S) / cls._LOG_GAMMA))

    def add(self, seconds: float) -> None:
        if not math.isfinite(seconds):
            return
        seconds = max(seconds, 0.0)
        i = self.index(seconds)
        b = self.bins.get(i)
        if b is None:
            self.bins[i] = [1, seconds, seconds]
        else:
            b[0] += 1
            if seconds < b[1]:
                b[1] = seconds
            elif seconds > b[2]:
                b[2] = seconds
        self.count += 1

    def merge(self, other: LatencySketch) -> None:
        for i, (c, lo, hi) in other.bins.items():
            b = self.bins.get(i)
            if b is None:
                self.bins[i] = [c, lo, hi]
            else:
                b[0] += c
                b[1] = min(b[1], lo)
                b[2] = max(b[2], hi)
        self.count += other.count

    def quantile(self, q_percent: float) -> float | None:
        """Seconds; ``None`` when empty."""
        if self.count <= 0:
            return None
        rank = nearest_rank(q_percent, self.count)
        cumulative = 0
        for i in sorted(self.bins):
            c, lo, hi = self.bins[i]
            if cumulative + c >= rank:
                if c <= 1 or hi <= lo:
                    return lo
                return lo + (hi - lo) * (rank - cumulative - 1) / (c - 1)
            cumulative += int(c)
        return None  # unreachable: the counts add up to self.count

    def figures(self) -> dict[str, Any]:
        return {"count": self.count, "p50_ms": _ms(self.quantile(50)), "p95_ms": _ms(self.quantile(95))}


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 3)


LatencyKey = tuple[str, str, str]  # (kind: live|shadow, pass, engine)


class _Slot:
    __slots__ = ("circuits", "counts", "latency", "start")

    def __init__(self, start: float) -> None:
        self.start = start
        self.latency: dict[LatencyKey, LatencySketch] = {}
        self.counts: Tally[tuple[str, ...]] = Tally()
        self.circuits: dict[tuple[str, str], int] = {}


class _Ring:
    """At most ``size`` slots of ``step_s`` seconds, the newest last; older slots are dropped."""

    def __init__(self, step_s: int, size: int) -> None:
        self.step_s = step_s
        self.size = size
        self.slots: deque[_Slot] = deque()

    def _start(self, now: float) -> float:
        return math.floor(now / self.step_s) * self.step_s

    def expire(self, now: float) -> None:
        oldest = self._start(now) - (self.size - 1) * self.step_s
        while self.slots and self.slots[0].start < oldest:
            self.slots.popleft()

    def current(self, now: float) -> _Slot:
        start = self._start(now)
        if not self.slots or self.slots[-1].start < start:
            self.slots.append(_Slot(start))
            self.expire(now)
        return self.slots[-1]  # a clock that went back keeps counting in the newest slot

    def recent(self, now: float, n: int) -> list[_Slot]:
        """The slots of the last ``n`` steps, the current (partial) one included."""
        start = self._start(now)
        lowest = start - (n - 1) * self.step_s
        return [s for s in self.slots if lowest <= s.start <= start]


class RollingWindows:
    """Rolling figures of the last minute, 5 minutes and hour, in bounded memory.

    Two rings of slots: 5 s slots over 5 minutes (the ``1m`` and ``5m`` windows and the 5-minute series) and
    1 min slots over an hour (the ``1h`` window and its series). A slot holds a :class:`LatencySketch` per
    kind (live, shadow), pass and engine, counters (requests by status, served passes, fallbacks by reason,
    shadow runs by outcome) and the highest circuit state seen. Every key is a bounded label value, so the
    memory is bounded by slots x keys x sketch bins whatever the traffic.

    Rates are per second over the whole window (``span_s``); ``covered_s`` says how much of the window the
    process has lived.
    """

    FINE_STEP_S = 5
    COARSE_STEP_S = 60
    #: window name -> (ring, number of slots)
    WINDOWS: ClassVar[dict[str, tuple[str, int]]] = {"1m": ("fine", 12), "5m": ("fine", 60), "1h": ("coarse", 60)}
    SPANS_S: ClassVar[dict[str, int]] = {"1m": 60, "5m": 300, "1h": 3600}

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.started = clock()
        self.rings = {"fine": _Ring(self.FINE_STEP_S, 60), "coarse": _Ring(self.COARSE_STEP_S, 60)}
        self._lock = threading.Lock()

    # -- recording ----------------------------------------------------------------------------------------

    def latency(self, kind: str, pass_: str, engine: str, seconds: float) -> None:
        now = self.clock()
        with self._lock:
            for ring in self.rings.values():
                slot = ring.current(now)
                sketch = slot.latency.get((kind, pass_, engine))
                if sketch is None:
                    sketch = slot.latency[(kind, pass_, engine)] = LatencySketch()
                sketch.add(seconds)

    def count(self, *key: str, n: int = 1) -> None:
        now = self.clock()
        with self._lock:
            for ring in self.rings.values():
                ring.current(now).counts[key] += n

    def circuits(self, states: Mapping[tuple[str, str], int]) -> None:
        """Note circuit states (``{(engine, pass): code}``) seen now; a slot keeps the highest."""
        if not states:
            return
        now = self.clock()
        with self._lock:
            for ring in self.rings.values():
                held = ring.current(now).circuits
                for key, state in states.items():
                    if state > held.get(key, -1):
                        held[key] = state

    # -- reading -------------------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """``{"now", "windows": {"1m"|"5m"|"1h": figures}, "series": {"5m"|"1h": {step_s, points}}}``."""
        now = self.clock()
        with self._lock:
            for ring in self.rings.values():
                ring.expire(now)
            windows = {name: self._summary(self.rings[ring].recent(now, n), self.SPANS_S[name], now)
                       for name, (ring, n) in self.WINDOWS.items()}
            series = {"5m": self._series(self.rings["fine"]), "1h": self._series(self.rings["coarse"])}
        return {"now": now, "windows": windows, "series": series}

    def _summary(self, slots: list[_Slot], span_s: int, now: float) -> dict[str, Any]:
        sketches: dict[LatencyKey, LatencySketch] = {}
        counts: Tally[tuple[str, ...]] = Tally()
        circuits: dict[tuple[str, str], int] = {}
        for slot in slots:
            for key, sketch in slot.latency.items():
                sketches.setdefault(key, LatencySketch()).merge(sketch)
            counts.update(slot.counts)
            for key, state in slot.circuits.items():
                circuits[key] = max(state, circuits.get(key, -1))
        out = _figures(sketches, counts, span_s)
        out["circuits"] = {f"{e}/{p}": CIRCUIT_NAMES.get(s, "open") for (e, p), s in sorted(circuits.items())}
        out["span_s"] = span_s
        out["covered_s"] = round(min(float(span_s), max(now - self.started, 0.0)), 1)
        return out

    def _series(self, ring: _Ring) -> dict[str, Any]:
        points = []
        for slot in ring.slots:
            statuses = {k[1]: v for k, v in slot.counts.items() if k[0] == "status"}
            points.append({
                "t": slot.start,
                "requests": sum(statuses.values()),
                "errors": sum(v for s, v in statuses.items() if s.startswith("5")),
                "client_errors": sum(v for s, v in statuses.items() if s.startswith("4")),
                "served": sum(v for k, v in slot.counts.items() if k[0] == "served"),
                "fallbacks": sum(v for k, v in slot.counts.items() if k[0] == "fallback"),
                "latency": {f"{p}/{e}": [_ms(s.quantile(50)), _ms(s.quantile(95))]
                            for (kind, p, e), s in sorted(slot.latency.items()) if kind == "live"},
                "shadow_latency": {f"{p}/{e}": [_ms(s.quantile(50)), _ms(s.quantile(95))]
                                   for (kind, p, e), s in sorted(slot.latency.items()) if kind == "shadow"},
                "circuits": {f"{e}/{p}": s for (e, p), s in sorted(slot.circuits.items())},
            })
        return {"step_s": ring.step_s, "points": points}


def _figures(sketches: Mapping[LatencyKey, LatencySketch], counts: Mapping[tuple[str, ...], int],
             span_s: float) -> dict[str, Any]:
    """The figures of one window from its merged sketches and counters."""

    def rate(n: float) -> float:
        return round(n / span_s, 4)

    served: dict[tuple[str, str], int] = {}
    fallback_pe: dict[tuple[str, str], int] = {}
    by_reason: dict[str, int] = {}
    by_status: dict[str, int] = {}
    shadow_runs: dict[str, dict[str, int]] = {}
    for key, n in counts.items():
        if key[0] == "status":
            by_status[key[1]] = by_status.get(key[1], 0) + n
        elif key[0] == "served":
            served[(key[1], key[2])] = served.get((key[1], key[2]), 0) + n
        elif key[0] == "fallback":
            fallback_pe[(key[1], key[2])] = fallback_pe.get((key[1], key[2]), 0) + n
            by_reason[key[3]] = by_reason.get(key[3], 0) + n
        elif key[0] == "shadow_run":
            runs = shadow_runs.setdefault(key[1], {"compared": 0, "fell_back": 0, "dropped": 0})
            runs[key[2]] = runs.get(key[2], 0) + n
    latency: dict[str, dict[str, Any]] = {}
    shadow_latency: dict[str, dict[str, Any]] = {}
    for (kind, p, e), sketch in sorted(sketches.items()):
        fig = sketch.figures()
        if kind == "live":
            fb = fallback_pe.get((p, e), 0)
            fig.update(fallback=fb, fallback_share=(fb / sketch.count) if sketch.count else None)
            latency.setdefault(p, {})[e] = fig
        else:
            shadow_latency.setdefault(p, {})[e] = fig
    requests = sum(by_status.values())
    errors = {s: n for s, n in sorted(by_status.items()) if s.startswith("5")}
    client = {s: n for s, n in sorted(by_status.items()) if s.startswith("4")}
    passes = sum(served.values())
    fallbacks = sum(by_reason.values())
    return {
        "latency": latency,
        "requests": {"total": requests, "rate": rate(requests), "by_status": dict(sorted(by_status.items()))},
        "errors": {"total": sum(errors.values()), "rate": rate(sum(errors.values())),
                   "share": (sum(errors.values()) / requests) if requests else None, "by_status": errors},
        "client_errors": {"total": sum(client.values()), "rate": rate(sum(client.values())), "by_status": client},
        "passes_served": passes,
        "fallbacks": {"total": fallbacks, "rate": rate(fallbacks), "share": (fallbacks / passes) if passes else None,
                      "by_reason": {r: {"count": n, "rate": rate(n)} for r, n in sorted(by_reason.items())}},
        "shadow": {"latency": shadow_latency, "runs": dict(sorted(shadow_runs.items()))},
    }


class Metrics:
    """All metrics of the service, registered in a private :class:`CollectorRegistry`.

    The pass runner calls :meth:`observe_served` for every served pass (it is a ``PassObserver``);
    the HTTP layer calls :meth:`request_finished`; the shadow runner calls :meth:`shadow_run`,
    :meth:`shadow_agreement` and :meth:`shadow_duration`; the slm engine may call
    :meth:`grammar_compile` and :meth:`mask_time` (or report them in ``PassOutput.extra``).

    Beside the Prometheus metrics it keeps :attr:`windows` (:class:`RollingWindows`) and cumulative
    :class:`LatencySketch` es per pass and engine, which ``/v1/stats`` and the dashboard read: their p50/p95
    use the shadow report's nearest-rank definition.
    """

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self.multiprocess = multiprocess_dir() is not None
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.request_duration = Histogram(
            PREFIX + "request_duration_seconds", "Wall time of one served pass.",
            ["pass", "engine", "outcome"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.requests = Counter(
            PREFIX + "requests", "Pass requests answered over HTTP, by final status code.",
            ["pass", "engine", "status"], registry=r,
        )
        self.fallbacks = Counter(
            PREFIX + "fallback", "Passes answered with the deterministic output instead of the engine's.",
            ["pass", "engine", "reason"], registry=r,
        )
        self.schema_invalid = Counter(
            PREFIX + "schema_invalid", "Outputs that failed the contract (schema, envelope or payload), by cause: "
            "model (a model engine's output; the pass fell back), input (the oracle echoed request values the "
            "contract refuses: a client fault), oracle (the oracle failed on valid input: a defect).",
            ["pass", "engine", "cause"], registry=r,
        )
        self.input_notes_total = Counter(
            PREFIX + "input_notes", "Request input the server mapped or dropped to read it (live planner shapes), "
            "by rule of contracts.planner.RULES.", ["pass", "rule", "action"], registry=r,
        )
        self.inflight = Gauge(PREFIX + "inflight", "Pass requests being answered now.", registry=r,
                              multiprocess_mode="livesum")
        self.engine_ready = Gauge(
            PREFIX + "engine_ready", "1 when the configured engine is loaded and ready (several workers: in every "
            "live worker).", ["engine"], registry=r, multiprocess_mode="livemin",
        )
        # SLM
        self.generated_tokens = Counter(
            PREFIX + "generated_tokens", "Tokens generated by model engines.", ["pass", "adapter"], registry=r,
        )
        self.time_to_first_token = Histogram(
            PREFIX + "time_to_first_token_seconds", "Time from request to the first generated token.",
            ["pass", "adapter"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.grammar_compile_seconds = Histogram(
            PREFIX + "grammar_compile_seconds", "Time to compile one pass grammar.",
            ["pass", "adapter"], buckets=COMPILE_BUCKETS, registry=r,
        )
        self.mask_seconds = Histogram(
            PREFIX + "mask_seconds", "Per-token grammar mask time.", ["pass", "adapter"], buckets=MASK_BUCKETS,
            registry=r,
        )
        # Shadow
        self.shadow_runs = Counter(
            PREFIX + "shadow_runs", "Shadow runs by outcome.", ["pass", "outcome"], registry=r,
        )
        self.shadow_agreements = Counter(
            PREFIX + "shadow_agreement", "Field agreement between the shadow and the live answer.",
            ["pass", "field", "result"], registry=r,
        )
        self.shadow_durations = Histogram(
            PREFIX + "shadow_duration_seconds", "Wall time of one shadow run.", ["pass", "engine"],
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self.shadow_store_errors = Counter(
            PREFIX + "shadow_store_errors", "Shadow store faults by kind (open: the file cannot be opened; write: "
            "a batch failed, e.g. a full disk; writer: the writer loop failed and reconnected; writer_restart: "
            "the writer thread was found dead and restarted; retention).", ["kind"], registry=r,
        )
        self.shadow_records_lost = Counter(
            PREFIX + "shadow_records_lost", "Finished shadow runs whose record could not be stored, by cause.",
            ["pass", "cause"], registry=r,
        )
        # made when the shadow store first reports: without shadow mode the series is absent (a gauge
        # exposed at its initial 0 would read as a store fault and fire TravelSlmShadowStoreFault; in
        # multiprocess mode merely making it writes that 0 to the worker's file)
        self.shadow_store_up_gauge: Gauge | None = None
        self.circuits = CircuitStateCollector()
        # several workers: a custom collector runs only in the worker that is scraped, so each worker writes its
        # breakers' states to a livemax gauge (refreshed by every pass it serves and every scrape it answers)
        self._circuit_gauge: Gauge | None = None
        if self.multiprocess:
            self._circuit_gauge = Gauge(self.circuits.NAME, self.circuits.HELP, ["engine", "pass"], registry=r,
                                        multiprocess_mode="livemax")
        else:
            r.register(self.circuits)
            # process_* (CPU seconds, resident memory, open fds, start time): read from /proc at scrape time on
            # Linux, nothing elsewhere
            ProcessCollector(registry=r)
        self._lock = threading.Lock()
        self.windows = RollingWindows(clock)
        self._totals: dict[LatencyKey, LatencySketch] = {}

    # --- pass runner -------------------------------------------------------------------------------

    def observe_served(self, served: Served) -> None:
        """``PassObserver``: one served pass (live or fallback)."""
        pass_ = _bounded(served.pass_name, PASSES)
        engine = _bounded(served.engine, ENGINES)
        if served.fallback_used:
            outcome = "fallback"
        elif not served.schema_valid:
            outcome = "invalid"
        else:
            outcome = "ok"
        # the unrounded duration when the runner gives it (latency_ms is rounded to 0.1 ms for the response,
        # which reads the deterministic path's microseconds as 0.0)
        raw = getattr(served, "latency_s", None)
        seconds = raw if isinstance(raw, float) and raw > 0 else max(served.latency_ms, 0.0) / 1000.0
        self.request_duration.labels(pass_, engine, outcome).observe(seconds)
        self._latency("live", pass_, engine, seconds)
        self.windows.count("served", pass_, engine)
        if served.fallback_used:
            reason = _bounded(served.fallback_reason, FALLBACK_REASONS)
            self.fallbacks.labels(pass_, engine, reason).inc()
            self.windows.count("fallback", pass_, engine, reason)
        if engine in MODEL_ENGINES and served.fallback_reason in ("schema_invalid", "out_of_vocab"):
            self.schema_invalid.labels(pass_, engine, "model").inc()
        if not served.schema_valid:
            extra = served.extra if isinstance(served.extra, dict) else {}
            # unclassified: counted as a defect, so that nothing that may be one goes unseen
            cause = _bounded(extra.get("invalid_cause"), ("input", "oracle"), "oracle")
            self.schema_invalid.labels(pass_, engine, cause).inc()
        if engine in MODEL_ENGINES:
            self._note_circuits()
            adapter = _bounded(served.adapter, ADAPTERS)
            if served.completion_tokens > 0:
                self.generated_tokens.labels(pass_, adapter).inc(served.completion_tokens)
            if served.time_to_first_token_s is not None:
                self.time_to_first_token.labels(pass_, adapter).observe(served.time_to_first_token_s)
            extra = served.extra if isinstance(served.extra, dict) else {}
            mask = extra.get("mask_seconds")
            if isinstance(mask, int | float) and not isinstance(mask, bool) and mask >= 0:
                # a total over the generation (adapters.base.Generation.mask_seconds): observe the per-token mean
                steps = extra.get("model_steps") or served.completion_tokens
                steps = steps if isinstance(steps, int) and steps > 0 else 1
                self.mask_seconds.labels(pass_, adapter).observe(float(mask) / steps)
            elif isinstance(mask, list):
                for value in mask[:4096]:
                    if isinstance(value, int | float):
                        self.mask_seconds.labels(pass_, adapter).observe(float(value))

    def _latency(self, kind: str, pass_: str, engine: str, seconds: float) -> None:
        self.windows.latency(kind, pass_, engine, seconds)
        with self._lock:
            sketch = self._totals.get((kind, pass_, engine))
            if sketch is None:
                sketch = self._totals[(kind, pass_, engine)] = LatencySketch()
            sketch.add(seconds)

    def _note_circuits(self) -> dict[tuple[str, str], int]:
        """The breakers' states now, noted in the windows (and the multiprocess gauge)."""
        try:
            states = self.circuits.states()
        except Exception:  # a breaker source never breaks serving
            return {}
        self.windows.circuits(states)
        if self._circuit_gauge is not None:
            for (engine, pass_), state in states.items():
                self._circuit_gauge.labels(engine, pass_).set(float(state))
        return states

    # --- HTTP layer ---------------------------------------------------------------------------------

    def request_finished(self, pass_: str | None, engine: str | None, status: int) -> None:
        code = _bounded(str(status), HTTP_STATUSES)
        self.requests.labels(_bounded(pass_, PASSES, "none"), _bounded(engine, ENGINES, "none"), code).inc()
        self.windows.count("status", code)

    def input_notes(self, pass_: str, notes: Iterable[InputNote]) -> None:
        """One increment per applied mapping rule (``rule`` is a :data:`contracts.planner.RULES` id)."""
        for note in notes:
            rule = _bounded(note.rule, RULE_IDS)
            action = RULES[rule].action if rule in RULES else _bounded(note.action, NOTE_ACTIONS)
            self.input_notes_total.labels(_bounded(pass_, PASSES), rule, action).inc()

    def set_engine_ready(self, engine: str, ready: bool) -> None:
        self.engine_ready.labels(_bounded(engine, ENGINES)).set(1.0 if ready else 0.0)

    def watch_circuits(self, breakers: Mapping[tuple[str, str], CircuitBreaker] | BreakerSource) -> None:
        """Expose these breakers (``{(engine, pass): breaker}``, e.g. ``PassRunner.breakers``) as
        ``travel_slm_circuit_state``; a callable is called at every scrape."""
        self.circuits.source = breakers if callable(breakers) else (lambda: breakers)
        if self.multiprocess:
            self._note_circuits()

    def circuit_states(self) -> dict[tuple[str, str], str]:
        """``{(engine, pass): "closed" | "half_open" | "open"}`` now (also noted in the windows)."""
        return {key: CIRCUIT_NAMES.get(code, "open") for key, code in self._note_circuits().items()}

    # --- slm engine ----------------------------------------------------------------------------------

    def grammar_compile(self, pass_: str, adapter: str, seconds: float) -> None:
        self.grammar_compile_seconds.labels(_bounded(pass_, PASSES), _bounded(adapter, ADAPTERS)).observe(seconds)

    def mask_time(self, pass_: str, adapter: str, seconds: float) -> None:
        self.mask_seconds.labels(_bounded(pass_, PASSES), _bounded(adapter, ADAPTERS)).observe(seconds)

    # --- shadow --------------------------------------------------------------------------------------

    def shadow_run(self, pass_: str, outcome: str) -> None:
        """``outcome``: ``compared``, ``fell_back`` or ``dropped``."""
        p, o = _bounded(pass_, PASSES), _bounded(outcome, SHADOW_OUTCOMES)
        self.shadow_runs.labels(p, o).inc()
        self.windows.count("shadow_run", p, o)

    def shadow_agreement(self, pass_: str, field: str, match: bool) -> None:
        self.shadow_agreements.labels(
            _bounded(pass_, PASSES), _bounded(field, AGREEMENT_FIELDS), "match" if match else "mismatch"
        ).inc()

    def shadow_duration(self, pass_: str, engine: str, seconds: float) -> None:
        """The shadow pass's wall time: the ``shadow_latency_ms`` of its record (the report's figure)."""
        p, e, s = _bounded(pass_, PASSES), _bounded(engine, ENGINES), max(seconds, 0.0)
        self.shadow_durations.labels(p, e).observe(s)
        self._latency("shadow", p, e, s)

    def shadow_store_error(self, kind: str) -> None:
        self.shadow_store_errors.labels(_bounded(kind, STORE_ERRORS)).inc()

    def shadow_lost(self, pass_: str, cause: str, n: int) -> None:
        self.shadow_records_lost.labels(_bounded(pass_, PASSES), _bounded(cause, LOSS_CAUSES)).inc(max(n, 0))

    def shadow_store_up(self, up: bool) -> None:
        with self._lock:
            if self.shadow_store_up_gauge is None:
                self.shadow_store_up_gauge = Gauge(
                    PREFIX + "shadow_store_up", "1 while the shadow store takes writes, 0 after a fault until it "
                    "recovers (several workers: the lowest of the live workers).", registry=self.registry,
                    multiprocess_mode="livemin",
                )
            self.shadow_store_up_gauge.set(1.0 if up else 0.0)

    # --- exposition and summaries -------------------------------------------------------------------

    def exposition_registry(self) -> Any:
        """What ``/metrics`` exposes: this registry, or with several workers every worker's files aggregated,
        the circuit states of every live worker, and the process metrics of the supervisor (the pod's main
        process: its start time changes only when the pod restarts)."""
        if not self.multiprocess:
            return self.registry
        from prometheus_client import multiprocess

        path = multiprocess_dir()
        _forget_dead_workers(path)
        self._note_circuits()
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=path)
        ProcessCollector(registry=registry, pid=_process_pid)
        return registry

    def render(self) -> tuple[bytes, str]:
        """``(body, content type)`` of the Prometheus text exposition."""
        return generate_latest(self.exposition_registry()), CONTENT_TYPE_LATEST

    def latency_totals(self, kind: str = "live") -> dict[str, dict[str, dict[str, Any]]]:
        """``{pass: {engine: {count, p50_ms, p95_ms}}}`` since start (this process), nearest-rank."""
        with self._lock:
            items = sorted((k, s.figures()) for k, s in self._totals.items() if k[0] == kind)
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for (_kind, p, e), fig in items:
            out.setdefault(p, {})[e] = fig
        return out

    def collect_stats(self) -> dict[str, Any]:
        """The figures since the process started, as ``/v1/stats`` and the dashboard show them: counts from this
        registry (this process), p50/p95 from the latency sketches (nearest-rank, the shadow report's definition),
        the shadow agreement against the gate targets."""
        lat_buckets: dict[tuple[str, str], dict[float, float]] = {}
        lat_count: dict[tuple[str, str], float] = {}
        lat_sum: dict[tuple[str, str], float] = {}
        outcomes: dict[tuple[str, str], dict[str, float]] = {}
        requests: dict[tuple[str, str, str], float] = {}
        fallbacks: dict[tuple[str, str, str], float] = {}
        schema_invalid: dict[str, float] = {}
        shadow_runs: dict[tuple[str, str], float] = {}
        shadow_agree: dict[tuple[str, str, str], float] = {}
        inflight = 0.0
        for family in self.registry.collect():
            for s in family.samples:
                name, lab, v = s.name, s.labels, float(s.value)
                if name == PREFIX + "request_duration_seconds_bucket":
                    per = lat_buckets.setdefault((lab.get("pass", ""), lab.get("engine", "")), {})
                    le = float(lab["le"])
                    per[le] = per.get(le, 0.0) + v
                elif name == PREFIX + "request_duration_seconds_count":
                    key = (lab.get("pass", ""), lab.get("engine", ""))
                    lat_count[key] = lat_count.get(key, 0.0) + v
                    out = outcomes.setdefault(key, {})
                    out[lab.get("outcome", "")] = out.get(lab.get("outcome", ""), 0.0) + v
                elif name == PREFIX + "request_duration_seconds_sum":
                    key = (lab.get("pass", ""), lab.get("engine", ""))
                    lat_sum[key] = lat_sum.get(key, 0.0) + v
                elif name == PREFIX + "requests_total":
                    key3 = (lab.get("pass", ""), lab.get("engine", ""), lab.get("status", ""))
                    requests[key3] = requests.get(key3, 0.0) + v
                elif name == PREFIX + "fallback_total":
                    key3 = (lab.get("pass", ""), lab.get("engine", ""), lab.get("reason", ""))
                    fallbacks[key3] = fallbacks.get(key3, 0.0) + v
                elif name == PREFIX + "schema_invalid_total":
                    cause = lab.get("cause", "")
                    schema_invalid[cause] = schema_invalid.get(cause, 0.0) + v
                elif name == PREFIX + "inflight":
                    inflight += v
                elif name == PREFIX + "shadow_runs_total":
                    shadow_runs[(lab.get("pass", ""), lab.get("outcome", ""))] = v
                elif name == PREFIX + "shadow_agreement_total":
                    shadow_agree[(lab.get("pass", ""), lab.get("field", ""), lab.get("result", ""))] = v

        quantiles = self.latency_totals("live")
        latency: dict[str, dict[str, dict[str, Any]]] = {}
        for (p, e), per in sorted(lat_buckets.items()):
            cum = sorted(per.items())
            count = lat_count.get((p, e), 0.0)
            if count <= 0:
                continue
            fb = outcomes.get((p, e), {}).get("fallback", 0.0)
            q = quantiles.get(p, {}).get(e, {})
            latency.setdefault(p, {})[e] = {
                "count": int(count),
                "p50_ms": q.get("p50_ms"),
                "p95_ms": q.get("p95_ms"),
                "mean_ms": round(lat_sum.get((p, e), 0.0) / count * 1000.0, 3),
                "fallback": int(fb),
                "fallback_rate": fb / count,
                "buckets": [[("+Inf" if math.isinf(le) else le), int(c)] for le, c in cum],
            }

        by_status: dict[str, int] = {}
        by_pass: dict[str, int] = {}
        for (p, _e, status), v in requests.items():
            by_status[status] = by_status.get(status, 0) + int(v)
            by_pass[p] = by_pass.get(p, 0) + int(v)
        total_requests = sum(by_status.values())
        errors = sum(n for st, n in by_status.items() if st.startswith("5"))
        client_errors = sum(n for st, n in by_status.items() if st.startswith("4"))

        fb_reason: dict[str, int] = {}
        fb_pass: dict[str, int] = {}
        for (p, _e, reason), v in fallbacks.items():
            fb_reason[reason] = fb_reason.get(reason, 0) + int(v)
            fb_pass[p] = fb_pass.get(p, 0) + int(v)
        served = int(sum(lat_count.values()))
        fb_total = sum(fb_reason.values())

        runs: dict[str, dict[str, int]] = {}
        for (p, outcome), v in shadow_runs.items():
            runs.setdefault(p, {"compared": 0, "fell_back": 0, "dropped": 0})[outcome] = int(v)
        agreement: dict[str, dict[str, dict[str, Any]]] = {}
        for p in sorted({k[0] for k in shadow_agree}):
            for field in AGREEMENT_FIELDS:
                match = int(shadow_agree.get((p, field, "match"), 0.0))
                total = match + int(shadow_agree.get((p, field, "mismatch"), 0.0))
                if total:
                    target = GATE_TARGETS.get(field)
                    agreement.setdefault(p, {})[field] = {
                        "match": match, "total": total, "rate": match / total, "target": target,
                        "meets_target": None if target is None else match / total >= target,
                    }
        return {
            "latency": latency,
            "requests": {"total": total_requests, "by_status": dict(sorted(by_status.items())),
                         "by_pass": dict(sorted(by_pass.items()))},
            "errors": {"total": errors, "client_total": client_errors,
                       "rate": (errors / total_requests) if total_requests else None},
            "passes_served": served,
            "fallbacks": {"total": fb_total, "by_reason": dict(sorted(fb_reason.items())),
                          "by_pass": dict(sorted(fb_pass.items())),
                          "rate": (fb_total / served) if served else None},
            "schema_invalid": {"total": int(sum(schema_invalid.values())),
                               "by_cause": {k: int(v) for k, v in sorted(schema_invalid.items()) if v}},
            "inflight": int(inflight),
            "shadow": {"runs": runs, "agreement": agreement, "latency": self.latency_totals("shadow"),
                       "gate_targets": {"agreement": dict(GATE_TARGETS), "schema_validity": SCHEMA_TARGET,
                                        "p95_ms": P95_TARGET_MS}},
        }


_LIVE_GAUGE_FILE = re.compile(r"^gauge_live\w+?_(\d+)\.db$")


def _forget_dead_workers(path: str | None) -> None:
    """Drop the live-gauge files of workers that are gone (a restarted worker has a new pid), as
    ``prometheus_client.multiprocess.mark_process_dead`` would if the supervisor called it."""
    from prometheus_client import multiprocess

    if not path:
        return
    try:
        names = os.listdir(path)
    except OSError:
        return
    for pid in {int(m.group(1)) for m in map(_LIVE_GAUGE_FILE.match, names) if m}:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            multiprocess.mark_process_dead(pid, path)
        except OSError:
            pass  # alive, owned by someone else
