"""OpenTelemetry traces (issue 12, item 6): a server span per request, a child span per pass, exported over
OTLP/HTTP; off by default, and then nothing of OpenTelemetry is imported or built.

Real components: real uvicorn servers, the SDK's own :class:`InMemorySpanExporter` added to the app's real
tracer provider, the real OTLP/HTTP exporter posting protobuf to a real local receiver (decoded with the
OTLP protobuf classes), and the openai engine against a real local upstream (token counts, fallbacks).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

pytest.importorskip("opentelemetry.sdk.trace", reason="tracing extra not installed (pip install -e '.[tracing]')")
pytest.importorskip("opentelemetry.exporter.otlp.proto.http.trace_exporter")

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from tests.conftest import REPO, ScriptedUpstream, ThreadServer, answer_lifespan, completion

TURN = {"event_type": "user_message", "event_payload": {"text": "hotels in Lisbon secret-user-text-7781"},
        "slot_state": {}}
USER_TEXT = "secret-user-text-7781"


class OtlpReceiver:
    """A real OTLP/HTTP traces endpoint: decodes each posted ``ExportTraceServiceRequest``."""

    def __init__(self) -> None:
        self.requests: list[ExportTraceServiceRequest] = []

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            await self._app(scope, receive, send)

        self.server = ThreadServer(app)

    async def _app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await answer_lifespan(receive, send)
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        status = 404
        if scope["path"] == "/v1/traces" and scope["method"] == "POST":
            request = ExportTraceServiceRequest()
            request.ParseFromString(body)
            self.requests.append(request)
            status = 200
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/x-protobuf")]})
        await send({"type": "http.response.body", "body": b""})

    def spans(self) -> list[tuple[dict[str, Any], Any]]:
        """(resource attributes, span) of every span received."""
        out = []
        for request in self.requests:
            for resource_spans in request.resource_spans:
                resource = {kv.key: kv.value.string_value for kv in resource_spans.resource.attributes}
                for scope_spans in resource_spans.scope_spans:
                    out.extend((resource, span) for span in scope_spans.spans)
        return out


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    rec = OtlpReceiver()
    rec.server.start()
    try:
        yield rec
    finally:
        rec.server.stop()


@pytest.fixture
def traced(receiver: OtlpReceiver, live_server: Any) -> Any:
    """Start a traced server; returns (base URL, the app, its in-memory exporter). The receiver is set up
    first, so it is torn down after the servers (whose shutdown flushes their spans to it)."""

    def start(env: dict[str, str | None] | None = None, **overrides: Any) -> tuple[str, Any, InMemorySpanExporter]:
        tracing = {"enabled": True, "otlp_endpoint": receiver.server.base_url + "/v1/traces",
                   "service_name": "travel-slm-test", **overrides.pop("tracing", {})}
        url = live_server({"tracing": tracing, **overrides}, env=env)
        app = live_server.apps[url]
        memory = InMemorySpanExporter()
        app.state.tracing.provider.add_span_processor(SimpleSpanProcessor(memory))
        return url, app, memory

    return start


def _by_name(spans: Any) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for span in spans:
        out.setdefault(span.name, []).append(span)
    return out


def test_a_request_is_a_server_span_with_a_child_span_per_pass(traced: Any) -> None:
    url, _app, memory = traced()
    r = httpx.post(url + "/extract", json={"turn": TURN}, headers={"X-Request-Id": "trace-test-1"})
    assert r.status_code == 200
    spans = _by_name(memory.get_finished_spans())
    (server,) = spans["POST /extract"]
    (child,) = spans["pass extract"]
    assert server.kind == SpanKind.SERVER and child.kind == SpanKind.INTERNAL
    assert child.parent is not None and child.parent.span_id == server.context.span_id
    assert child.context.trace_id == server.context.trace_id
    assert server.attributes["http.request.method"] == "POST"
    assert server.attributes["http.route"] == "/extract"
    assert server.attributes["http.response.status_code"] == 200
    assert server.attributes["travel_slm.request_id"] == "trace-test-1"
    assert server.attributes["travel_slm.pass"] == "extract"
    assert server.attributes["travel_slm.engine"] == "deterministic"
    assert child.attributes["travel_slm.engine"] == "deterministic"
    assert child.attributes["travel_slm.adapter"] == "none" and child.attributes["travel_slm.model"] == "oracle"
    assert child.attributes["travel_slm.schema_valid"] is True
    assert child.attributes["travel_slm.fallback_used"] is False
    assert "travel_slm.fallback_reason" not in child.attributes
    assert "gen_ai.usage.input_tokens" not in child.attributes  # the oracle counts no tokens
    assert server.start_time <= child.start_time <= child.end_time <= server.end_time
    assert server.resource.attributes["service.name"] == "travel-slm-test"


def test_pass_spans_carry_tokens_and_the_fallback_reason(traced: Any) -> None:
    """The openai engine against a real upstream: one served pass with usage, one that falls back."""
    from engines.deterministic.extract import extract

    answers = iter([json.dumps(extract(TURN)), "not json"])

    def handler(body: dict[str, Any]) -> tuple[int, Any, float]:
        answer = completion(next(answers))
        answer["usage"] = {"prompt_tokens": 321, "completion_tokens": 45, "total_tokens": 366}
        return 200, answer, 0.0

    with ScriptedUpstream(handler) as upstream:
        url, _app, memory = traced(extraction_engine="openai", openai={"base_url": upstream.base_url},
                                   env={"OPENAI_API_KEY": "sk-test-tracing"})
        assert httpx.post(url + "/extract", json={"turn": TURN}).json()["llm_contract"]["fallback_used"] is False
        fell = httpx.post(url + "/extract", json={"turn": TURN}).json()["llm_contract"]
        assert fell["fallback_reason"] == "invalid_json"
    served, fallback = sorted(_by_name(memory.get_finished_spans())["pass extract"], key=lambda s: s.start_time)
    assert served.attributes["travel_slm.engine"] == "openai"
    assert served.attributes["travel_slm.adapter"] == "http"
    assert served.attributes["gen_ai.usage.input_tokens"] == 321
    assert served.attributes["gen_ai.usage.output_tokens"] == 45
    assert served.attributes["travel_slm.fallback_used"] is False
    assert fallback.attributes["travel_slm.fallback_used"] is True
    assert fallback.attributes["travel_slm.fallback_reason"] == "invalid_json"
    assert fallback.attributes["travel_slm.schema_valid"] is True  # the oracle's document was served
    servers = [s for s in memory.get_finished_spans() if s.name == "POST /extract"]
    assert servers[-1].attributes["travel_slm.fallback_reason"] == "invalid_json"


def test_render_and_a_caller_traceparent(traced: Any) -> None:
    url, _app, memory = traced()
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    headers = {"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"}
    assert httpx.post(url + "/render", json={"turn": TURN}, headers=headers).status_code == 200
    spans = _by_name(memory.get_finished_spans())
    (server,) = spans["POST /render"]
    (child,) = spans["pass render"]
    assert format(server.context.trace_id, "032x") == trace_id  # the caller's trace goes on
    assert server.parent is not None and format(server.parent.span_id, "016x") == "00f067aa0ba902b7"
    assert child.parent.span_id == server.context.span_id
    assert child.attributes["travel_slm.pass"] == "render"


def test_errors_unknown_paths_and_no_user_text(traced: Any) -> None:
    url, _app, memory = traced()
    assert httpx.post(url + "/extract", json={"turn": {"event_payload": 7}}).status_code == 422
    assert httpx.get(url + f"/no/such/{USER_TEXT}").status_code == 404
    assert httpx.head(url + "/healthz").status_code == 200
    spans = memory.get_finished_spans()
    names = [s.name for s in spans]
    assert "POST /extract" in names and "GET" in names  # a path that is no route is not a span name
    assert "HEAD /healthz" in names  # the probe's own method, though it is answered by the GET route
    bad = next(s for s in spans if s.name == "POST /extract")
    assert bad.attributes["http.response.status_code"] == 422
    assert bad.status.status_code != StatusCode.ERROR  # a client error is not the server's
    dumped = "".join(s.to_json() for s in spans)
    assert USER_TEXT not in dumped and "Lisbon" not in dumped


def test_spans_are_exported_over_otlp_http(traced: Any, receiver: OtlpReceiver, live_server: Any) -> None:
    url, _app, _memory = traced()
    for _ in range(3):
        assert httpx.post(url + "/extract", json={"turn": TURN}).status_code == 200
    live_server.stop(url)  # the lifespan's shutdown flushes the batch processor
    spans = receiver.spans()
    names = sorted(span.name for _resource, span in spans)
    assert names.count("POST /extract") == 3 and names.count("pass extract") == 3
    resource = spans[0][0]
    assert resource["service.name"] == "travel-slm-test" and resource["service.version"]
    child = next(span for _r, span in spans if span.name == "pass extract")
    attrs = {kv.key: kv.value for kv in child.attributes}
    assert attrs["travel_slm.engine"].string_value == "deterministic"
    assert attrs["travel_slm.schema_valid"].bool_value is True


def test_sample_ratio_zero_records_nothing(traced: Any, receiver: OtlpReceiver) -> None:
    url, _app, memory = traced(tracing={"sample_ratio": 0.0})
    assert httpx.post(url + "/extract", json={"turn": TURN}).status_code == 200
    assert memory.get_finished_spans() == ()


def test_tracing_is_off_by_default_with_nothing_built(default_server: str, live_server: Any) -> None:
    from core.settings import Settings

    assert Settings().tracing.enabled is False
    url = live_server()
    app = live_server.apps[url]
    assert app.state.tracing is None and app.state.runner.tracer is None
    # and off, nothing of OpenTelemetry is even imported (a fresh interpreter, the real app and a request)
    code = ("import sys, asyncio, httpx\n"
            "from server.app import create_app\n"
            "from core.settings import load_settings\n"
            "app = create_app(load_settings())\n"
            "async def go():\n"
            "    async with app.router.lifespan_context(app):\n"
            "        t = httpx.ASGITransport(app=app)\n"
            "        async with httpx.AsyncClient(transport=t, base_url='http://x') as c:\n"
            "            r = await c.post('/extract', json={'turn': {'event_payload': {'text': 'hi'}}})\n"
            "            assert r.status_code == 200, r.text\n"
            "asyncio.run(go())\n"
            "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "[]"


def test_tracing_without_the_packages(tmp_path: Any) -> None:
    """Off, the server runs without OpenTelemetry installed; on, the config error names the extra (one line)."""
    blocker = ("import sys\n"
               "for name in ('opentelemetry', 'opentelemetry.sdk', 'opentelemetry.exporter'):\n"
               "    sys.modules[name] = None  # as if not installed\n")
    off = blocker + ("from server.app import create_app\nfrom core.settings import load_settings\n"
                     "app = create_app(load_settings())\nprint('built', app.state.tracing)\n")
    proc = subprocess.run([sys.executable, "-c", off], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "built None", proc.stderr[-2000:]
    on = blocker + ("import sys\nfrom server.cli import main\n"
                    "sys.argv = ['travel-slm', 'serve', '--port', '0']\nsys.exit(main())\n")
    proc = subprocess.run([sys.executable, "-c", on], capture_output=True, text=True, cwd=REPO, timeout=300,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "TRAVEL_SLM_TRACING__ENABLED": "true"})
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "tracing" in lines[0] and "opentelemetry-sdk" in lines[0] and "travel-slm[tracing]" in lines[0]


def test_tracing_settings_are_validated() -> None:
    from core.settings import ConfigFileError, load_settings

    for bad in ({"sample_ratio": 2}, {"otlp_endpoint": "collector:4318"}, {"service_name": ""}):
        with pytest.raises(ConfigFileError, match="tracing"):
            load_settings(tracing=bad)


async def test_no_span_without_a_tracer_in_the_pass_runner() -> None:
    """The pass runner with ``tracer=None`` serves as before (the runner is shared by commands and tests)."""
    from engines.fallback import PassRunner

    runner = PassRunner({})
    assert runner.tracer is None
    served = await asyncio.wait_for(runner.extract(TURN, "deterministic"), 30)
    assert served.schema_valid and served.trace_attributes()["travel_slm.engine"] == "deterministic"
