"""Optional OpenTelemetry traces (``tracing.enabled``): a server span per HTTP request, a child span per pass.

Off by default. Off, the application creates no tracer and imports nothing from OpenTelemetry: the request-context
middleware and the pass runner each test one ``is None`` per request, and the packages need not be installed
(``pip install 'travel-slm[tracing]'`` installs ``opentelemetry-sdk`` and
``opentelemetry-exporter-otlp-proto-http``; :class:`core.settings.TracingSettings` refuses ``enabled`` without
them, as a one-line config error).

On, each application has its own :class:`~opentelemetry.sdk.trace.TracerProvider` (never the global one, so
two apps in one process do not mix), with a parent-based ratio sampler (``tracing.sample_ratio``) and a batch
processor exporting OTLP over HTTP/protobuf to ``tracing.otlp_endpoint`` (unset: the exporter's own default,
which reads ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_ENDPOINT``, then
``http://localhost:4318/v1/traces``; headers such as an auth token come from ``OTEL_EXPORTER_OTLP_HEADERS``).
Export runs on the processor's thread, never on the request path; an unreachable collector loses spans, not
requests.

Spans (no user text, no keys; names and attributes from a closed set):

- ``{METHOD} {route}`` (kind SERVER; ``{METHOD}`` alone for a path that is not a route): ``http.request.method``,
  ``http.route``, ``http.response.status_code``, ``travel_slm.request_id`` and, on a pass endpoint,
  ``travel_slm.pass`` / ``.engine`` / ``.fallback_reason``. A W3C ``traceparent`` header makes it a child of
  the caller's span. Status ERROR on a 5xx or an exception.
- ``pass extract`` / ``pass render`` (kind INTERNAL, a child of the server span): the attributes of
  :meth:`engines.fallback.Served.trace_attributes` (engine, adapter, model, fallback, ``schema_valid``, latency,
  and ``gen_ai.usage.input_tokens`` / ``output_tokens`` where the engine counted tokens).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, MutableMapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from core.settings import TracingSettings

INSTRUMENTATION = "travel_slm"


class Tracing:
    """One application's tracer provider and tracer (built only when ``tracing.enabled``)."""

    def __init__(self, settings: TracingSettings, *, version: str = "") -> None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
        from opentelemetry.trace import SpanKind, Status, StatusCode
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        attributes = {"service.name": settings.service_name}
        if version:
            attributes["service.version"] = version
        self.provider = TracerProvider(resource=Resource.create(attributes),
                                       sampler=ParentBased(TraceIdRatioBased(settings.sample_ratio)))
        self.provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=settings.otlp_endpoint)))
        self.tracer = self.provider.get_tracer(INSTRUMENTATION, version or None)
        self._propagator = TraceContextTextMapPropagator()
        self._server = SpanKind.SERVER
        self._error = Status(StatusCode.ERROR)

    @contextlib.contextmanager
    def request_span(self, scope: MutableMapping[str, Any]) -> Iterator[Any]:
        """The server span of one HTTP request, current while the request runs; :meth:`finish` names it."""
        carrier = {key.decode("latin-1"): value.decode("latin-1") for key, value in scope.get("headers", ())
                   if key in (b"traceparent", b"tracestate")}
        parent = self._propagator.extract(carrier) if carrier else None
        method = str(scope.get("method") or "HTTP")
        with self.tracer.start_as_current_span(method, context=parent, kind=self._server,
                                               attributes={"http.request.method": method}) as span:
            yield span

    def finish(self, span: Any, method: str, route: str | None, status: int, ctx: dict[str, Any]) -> None:
        """Name the server span after its route and record the answer (called before the span ends)."""
        if not span.is_recording():  # sampled out
            return
        if route is not None:
            span.update_name(f"{method} {route}")
            span.set_attribute("http.route", route)
        span.set_attribute("http.response.status_code", status)
        span.set_attribute("travel_slm.request_id", str(ctx.get("request_id") or ""))
        for key in ("pass", "engine", "fallback_reason"):
            value = ctx.get(key)
            if value is not None:
                span.set_attribute(f"travel_slm.{key}", str(value))
        if status >= 500:
            span.set_status(self._error)

    def shutdown(self) -> None:
        """Export what is buffered and stop (blocking: call it off the event loop)."""
        self.provider.shutdown()


def build(settings: TracingSettings, version: str = "") -> Tracing | None:
    """The application's tracing, or None when ``tracing.enabled`` is false (nothing imported then)."""
    return Tracing(settings, version=version) if settings.enabled else None
