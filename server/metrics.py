"""Prometheus metrics (service.md section 6), one registry per application.

Every label value goes through a bounded set: passes, engines, adapters, outcomes, reasons, HTTP
statuses and agreement fields are closed vocabularies, and anything else becomes ``other``. No id,
no text and no secret ever becomes a label.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from contracts.planner import RULE_IDS, RULES, InputNote
from engines.agreement import FIELDS as AGREEMENT_FIELDS
from engines.fallback import CircuitBreaker, Served

PREFIX = "travel_slm_"

#: Latency buckets from 0.5 ms to 30 s, about 1.5x apart: fine enough for p50/p95 at every scale.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.004, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03,
    0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.65, 0.8, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0,
    20.0, 30.0,
)
#: Per-token grammar mask time: microseconds to tens of milliseconds.
MASK_BUCKETS: tuple[float, ...] = (
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
)
#: Grammar compilation: milliseconds to a minute.
COMPILE_BUCKETS: tuple[float, ...] = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

PASSES = frozenset({"extract", "render"})
ENGINES = frozenset({"deterministic", "slm", "openai"})
ADAPTERS = frozenset({"none", "auto", "mlx", "vllm", "transformers", "http"})
OUTCOMES = frozenset({"ok", "fallback", "invalid"})
FALLBACK_REASONS = frozenset(
    {"error", "timeout", "invalid_json", "schema_invalid", "truncated", "out_of_vocab", "unavailable", "circuit_open"}
)
NOTE_ACTIONS = frozenset({"mapped", "dropped", "defaulted"})
SHADOW_OUTCOMES = frozenset({"compared", "fell_back", "dropped"})
STORE_ERRORS = frozenset({"open", "write", "writer", "writer_restart", "retention"})
LOSS_CAUSES = frozenset({"write_failed", "store_unavailable", "writer_error", "unserialisable"})
HTTP_STATUSES = frozenset({"200", "400", "401", "404", "405", "408", "413", "415", "422", "431", "500", "503"})
#: ``travel_slm_circuit_state`` values (:attr:`engines.fallback.CircuitBreaker.state`); alerts compare with them.
CIRCUIT_STATES: dict[str, int] = {"closed": 0, "half_open": 1, "open": 2}


def _bounded(value: Any, allowed: Iterable[str], default: str = "other") -> str:
    text = str(value) if value is not None else "none"
    return text if text in allowed else default


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

    def describe(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(self.NAME, self.HELP, labels=["engine", "pass"])

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(self.NAME, self.HELP, labels=["engine", "pass"])
        breakers = self.source() if self.source is not None else {}
        for (engine, pass_), breaker in sorted(breakers.items()):
            state = CIRCUIT_STATES.get(breaker.state, CIRCUIT_STATES["open"])
            family.add_metric([_bounded(engine, ENGINES), _bounded(pass_, PASSES)], float(state))
        yield family


class Metrics:
    """All metrics of the service, registered in a private :class:`CollectorRegistry`.

    The pass runner calls :meth:`observe_served` for every served pass (it is a ``PassObserver``);
    the HTTP layer calls :meth:`request_finished`; the shadow runner calls :meth:`shadow_run`,
    :meth:`shadow_agreement` and :meth:`shadow_duration`; the slm engine may call
    :meth:`grammar_compile` and :meth:`mask_time` (or report them in ``PassOutput.extra``).
    """

    def __init__(self) -> None:
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
            PREFIX + "schema_invalid", "Engine outputs that failed the contract (schema, envelope or payload).",
            ["pass", "engine"], registry=r,
        )
        self.input_notes_total = Counter(
            PREFIX + "input_notes", "Request input the server mapped or dropped to read it (live planner shapes), "
            "by rule of contracts.planner.RULES.", ["pass", "rule", "action"], registry=r,
        )
        self.inflight = Gauge(PREFIX + "inflight", "Pass requests being answered now.", registry=r)
        self.engine_ready = Gauge(
            PREFIX + "engine_ready", "1 when the configured engine is loaded and ready.", ["engine"], registry=r,
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
        # registered when the shadow store first reports: without shadow mode the series is absent (a gauge
        # exposed at its initial 0 would read as a store fault and fire TravelSlmShadowStoreFault)
        self.shadow_store_up_gauge = Gauge(
            PREFIX + "shadow_store_up", "1 while the shadow store takes writes, 0 after a fault until it recovers.",
            registry=None,
        )
        self._store_up_registered = False
        self.circuits = CircuitStateCollector()
        r.register(self.circuits)
        # process_* (CPU seconds, resident memory, open fds, start time): read from /proc at scrape time on
        # Linux, nothing elsewhere
        ProcessCollector(registry=r)
        self._lock = threading.Lock()

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
        self.request_duration.labels(pass_, engine, outcome).observe(max(served.latency_ms, 0.0) / 1000.0)
        if served.fallback_used:
            self.fallbacks.labels(pass_, engine, _bounded(served.fallback_reason, FALLBACK_REASONS)).inc()
        if served.fallback_reason in ("schema_invalid", "out_of_vocab") or not served.schema_valid:
            self.schema_invalid.labels(pass_, engine).inc()
        if engine in ("slm", "openai"):
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

    # --- HTTP layer ---------------------------------------------------------------------------------

    def request_finished(self, pass_: str | None, engine: str | None, status: int) -> None:
        self.requests.labels(
            _bounded(pass_, PASSES, "none"), _bounded(engine, ENGINES, "none"), _bounded(str(status), HTTP_STATUSES)
        ).inc()

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

    # --- slm engine ----------------------------------------------------------------------------------

    def grammar_compile(self, pass_: str, adapter: str, seconds: float) -> None:
        self.grammar_compile_seconds.labels(_bounded(pass_, PASSES), _bounded(adapter, ADAPTERS)).observe(seconds)

    def mask_time(self, pass_: str, adapter: str, seconds: float) -> None:
        self.mask_seconds.labels(_bounded(pass_, PASSES), _bounded(adapter, ADAPTERS)).observe(seconds)

    # --- shadow --------------------------------------------------------------------------------------

    def shadow_run(self, pass_: str, outcome: str) -> None:
        """``outcome``: ``compared``, ``fell_back`` or ``dropped``."""
        self.shadow_runs.labels(_bounded(pass_, PASSES), _bounded(outcome, SHADOW_OUTCOMES)).inc()

    def shadow_agreement(self, pass_: str, field: str, match: bool) -> None:
        self.shadow_agreements.labels(
            _bounded(pass_, PASSES), _bounded(field, AGREEMENT_FIELDS), "match" if match else "mismatch"
        ).inc()

    def shadow_duration(self, pass_: str, engine: str, seconds: float) -> None:
        self.shadow_durations.labels(_bounded(pass_, PASSES), _bounded(engine, ENGINES)).observe(max(seconds, 0.0))

    def shadow_store_error(self, kind: str) -> None:
        self.shadow_store_errors.labels(_bounded(kind, STORE_ERRORS)).inc()

    def shadow_lost(self, pass_: str, cause: str, n: int) -> None:
        self.shadow_records_lost.labels(_bounded(pass_, PASSES), _bounded(cause, LOSS_CAUSES)).inc(max(n, 0))

    def shadow_store_up(self, up: bool) -> None:
        with self._lock:
            self.shadow_store_up_gauge.set(1.0 if up else 0.0)
            if not self._store_up_registered:
                self.registry.register(self.shadow_store_up_gauge)
                self._store_up_registered = True

    # --- exposition and summaries -------------------------------------------------------------------

    def render(self) -> tuple[bytes, str]:
        """``(body, content type)`` of the Prometheus text exposition."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def latency_summary(self) -> dict[str, dict[str, dict[str, float | int | None]]]:
        """``{pass: {engine: {count, p50_ms, p95_ms, fallback, fallback_rate}}}`` from the histograms.

        Quantiles are interpolated inside buckets, as ``histogram_quantile`` does; the dashboard
        reads this.
        """
        buckets: dict[tuple[str, str], dict[float, float]] = {}
        counts: dict[tuple[str, str], float] = {}
        fallback: dict[tuple[str, str], float] = {}
        for metric in self.request_duration.collect():
            for sample in metric.samples:
                key = (sample.labels.get("pass", ""), sample.labels.get("engine", ""))
                if sample.name.endswith("_bucket"):
                    le = float(sample.labels["le"])
                    per = buckets.setdefault(key, {})
                    per[le] = per.get(le, 0.0) + sample.value
                elif sample.name.endswith("_count"):
                    counts[key] = counts.get(key, 0.0) + sample.value
                    if sample.labels.get("outcome") == "fallback":
                        fallback[key] = fallback.get(key, 0.0) + sample.value
        out: dict[str, dict[str, dict[str, float | int | None]]] = {}
        for key, per in buckets.items():
            total = counts.get(key, 0.0)
            ordered = sorted(per.items())
            fb = fallback.get(key, 0.0)
            out.setdefault(key[0], {})[key[1]] = {
                "count": int(total),
                "p50_ms": _quantile(ordered, 0.50, total),
                "p95_ms": _quantile(ordered, 0.95, total),
                "fallback": int(fb),
                "fallback_rate": (fb / total) if total else None,
            }
        return out


def _quantile(ordered: list[tuple[float, float]], q: float, total: float) -> float | None:
    """Linear interpolation inside the bucket that holds rank ``q * total`` (milliseconds)."""
    if total <= 0:
        return None
    rank = q * total
    prev_le, prev_count = 0.0, 0.0
    for le, cumulative in ordered:
        if cumulative >= rank:
            if le == float("inf"):
                return round(prev_le * 1000.0, 3)
            width = cumulative - prev_count
            frac = (rank - prev_count) / width if width > 0 else 1.0
            return round((prev_le + (le - prev_le) * frac) * 1000.0, 3)
        prev_le, prev_count = le, cumulative
    return round(prev_le * 1000.0, 3)
