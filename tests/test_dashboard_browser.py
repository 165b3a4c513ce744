"""The dashboard in headless Chromium (issue 12, item 4), driven over the DevTools protocol on a pipe.

No sleeps that depend on speed: the test polls attributes the page sets once it has rendered a ``/v1/stats``
answer (``data-loaded``, ``data-renders``) or the shadow report (``data-report``), with a bound that only
catches a hang. The page keeps the ``/v1/stats`` answer it drew (``window.travelSlmStats``): every figure in the
DOM must be that answer's, and that answer must equal the server's own ``/v1/stats`` for every figure that does
not move with the clock.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.settings import load_settings
from engines.base import Engine
from server.app import create_app
from tests.conftest import ThreadServer
from tests.test_shadow_engines import GatedEngine
from tests.test_shadow_http import _chromium

TURNS = [
    {"event_type": "user_message", "event_payload": {"text": t}, "slot_state": {}}
    for t in ("flights to Miami", "hotels in Paris", "things to do in Rome", "hello", "flights from London to Tokyo")
]
KEY = "dashboard-test-key-0001"


class Browser:
    """Chromium with ``--remote-debugging-pipe``: commands on fd 3, answers on fd 4, NUL-terminated JSON."""

    def __init__(self, profile: Path) -> None:
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()
        args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                "--disable-extensions", "--remote-debugging-pipe", f"--user-data-dir={profile}", "about:blank"]
        # the pipe ends become Chromium's fds 3 and 4 (bash: redirections of fds over 9, no preexec_fn in a
        # process with server threads)
        wire = f'exec "$0" "$@" 3<&{to_chrome_r} 4>&{from_chrome_w} {to_chrome_r}<&- {from_chrome_w}>&-'
        self.proc = subprocess.Popen(
            ["bash", "-c", wire, _chromium(), *args], pass_fds=(to_chrome_r, from_chrome_w),
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buffer = b""
        self._next = 0
        self.session: str | None = None

    def send(self, method: str, params: dict[str, Any] | None = None, *, session: bool = True,
             timeout: float = 60.0) -> dict[str, Any]:
        self._next += 1
        message: dict[str, Any] = {"id": self._next, "method": method, "params": params or {}}
        if session and self.session:
            message["sessionId"] = self.session
        os.write(self._to_chrome, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout  # a hang bound, not a speed check
        while True:
            while b"\0" in self._buffer:
                raw, self._buffer = self._buffer.split(b"\0", 1)
                reply = json.loads(raw)
                if reply.get("id") == self._next:
                    if "error" in reply:
                        raise RuntimeError(f"{method}: {reply['error']}")
                    return reply.get("result", {})
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"Chromium did not answer {method}")
            ready, _, _ = select.select([self._from_chrome], [], [], left)
            if ready:
                chunk = os.read(self._from_chrome, 1 << 16)
                if not chunk:
                    raise RuntimeError("Chromium closed its pipe")
                self._buffer += chunk

    def open(self, url: str) -> None:
        target = self.send("Target.createTarget", {"url": "about:blank"}, session=False)["targetId"]
        self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True},
                                 session=False)["sessionId"]
        self.send("Page.enable")
        self.send("Page.navigate", {"url": url})

    def eval(self, expression: str) -> Any:
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                "awaitPromise": True})
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, what: str, timeout: float = 60.0) -> Any:
        """Poll a page expression until it is truthy (the page's own markers); the timeout is a hang bound."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                value = self.eval(expression)
            except RuntimeError:  # the page is between documents (a navigation, a reload)
                value = None
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"gave up waiting for {what}")
            time.sleep(0.05)

    def close(self) -> None:
        with contextlib.suppress(OSError, RuntimeError, TimeoutError):
            self.send("Browser.close", session=False, timeout=10)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_chrome)
        os.close(self._from_chrome)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    _chromium()
    b = Browser(tmp_path / "profile")
    try:
        yield b
    finally:
        b.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Any]:
    """Start a real app: an openai live extract whose upstream refuses connections (fallbacks, an open circuit),
    a shadow engine that disagrees (agreement under its targets), deterministic render."""
    running: list[ThreadServer] = []

    def start(shadow_engine: Engine | None = None, **overrides: Any) -> str:
        settings = load_settings(
            extraction_engine="openai", openai={"base_url": "http://127.0.0.1:9/v1"},
            fallback={"failure_threshold": 2, "cooldown_s": 3600.0},
            shadow={"enabled": True, "engine": "slm", "store": f"sqlite:///{tmp_path}/shadow.db", "timeout_ms": 60_000,
                    "max_inflight": 1000},
            **overrides,
        )
        app = create_app(settings)
        app.state.runner.engines["slm"] = shadow_engine or _wrong_engine()
        srv = ThreadServer(app)
        running.append(srv)
        return srv.start()

    yield start
    for srv in running:
        srv.stop()


def _wrong_engine() -> Engine:
    engine = GatedEngine(wrong=True)
    engine.gate.set()
    return engine


def _traffic(base: str, headers: dict[str, str] | None = None) -> None:
    with httpx.Client(base_url=base, timeout=30, headers=headers or {}) as client:
        for turn in TURNS * 4:
            assert client.post("/extract", json={"turn": turn}).status_code == 200
            assert client.post("/render", json={"turn": turn}).status_code == 200
        assert client.post("/extract", json={"turn": {"event_payload": 1}}).status_code == 422
        report = client.get("/v1/shadow/report", params={"wait": "true"}).json()
    assert report["records"] == 2 * len(TURNS) * 4


def _dom_figures(b: Browser) -> dict[str, str]:
    return b.eval("""(() => { const out = {};
        document.querySelectorAll('[data-key]').forEach(n => { out[n.getAttribute('data-key')] = n.textContent.trim(); });
        return out; })()""")


def _fix(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def _check_figures(shown: dict[str, str], st: dict[str, Any]) -> None:
    """Every figure the page shows is the one of the /v1/stats answer it drew."""
    assert shown["requests.total"] == str(st["requests"]["total"])
    assert shown["fallbacks.total"] == str(st["fallbacks"]["total"])
    assert shown["fallbacks.rate"] == _pct(st["fallbacks"]["rate"])
    assert shown["errors.total"] == str(st["errors"]["total"])
    assert shown["schema_invalid.total"] == str(st["schema_invalid"]["total"])
    for p, engines in st["latency"].items():
        for e, fig in engines.items():
            k = f"latency.{p}.{e}."
            assert shown[k + "count"] == str(fig["count"])
            assert shown[k + "p50_ms"] == _fix(fig["p50_ms"], 3) and shown[k + "p95_ms"] == _fix(fig["p95_ms"], 3)
    for name, w in st["windows"].items():
        k = f"windows.{name}."
        assert shown[k + "requests.total"] == str(w["requests"]["total"])
        assert shown[k + "requests.rate"] == _fix(w["requests"]["rate"], 4)
        assert shown[k + "errors.total"] == str(w["errors"]["total"])
        assert shown[k + "client_errors.total"] == str(w["client_errors"]["total"])
        assert shown[k + "passes_served"] == str(w["passes_served"])
        assert shown[k + "fallbacks.total"] == str(w["fallbacks"]["total"])
        assert shown[k + "fallbacks.share"] == _pct(w["fallbacks"]["share"])
        for reason, fig in w["fallbacks"]["by_reason"].items():
            assert f"{reason} {fig['count']} (" in shown[k + "fallbacks.by_reason"]
        for p, engines in w["latency"].items():
            for e, fig in engines.items():
                assert shown[f"{k}latency.{p}.{e}.p50_ms"] == _fix(fig["p50_ms"], 3)
                assert shown[f"{k}latency.{p}.{e}.p95_ms"] == _fix(fig["p95_ms"], 3)
        for circuit, state in w["circuits"].items():
            assert shown[f"{k}circuits.{circuit}"] == state
    for circuit, state in st["circuits"].items():
        assert shown[f"circuits.{circuit}"] == state
    sh = st["shadow"]
    for p, runs in sh["runs"].items():
        assert shown[f"shadow.runs.{p}.compared"] == str(runs["compared"])
        (engine,) = sh["latency"][p]
        assert shown[f"shadow.latency.{p}.p50_ms"] == _fix(sh["latency"][p][engine]["p50_ms"], 3)
        assert shown[f"shadow.latency.{p}.p95_ms"] == _fix(sh["latency"][p][engine]["p95_ms"], 3)
    for p, fields in sh["agreement"].items():
        for field, fr in fields.items():
            assert shown[f"shadow.agreement.{p}.{field}"] == f"{fr['match']}/{fr['total']}"
            assert shown[f"shadow.agreement.{p}.{field}.rate"] == _pct(fr["rate"])
            assert shown[f"shadow.agreement.{p}.{field}.target"] == ("no target" if fr["target"] is None
                                                                     else _pct(fr["target"]))


#: figures that move with the clock between the page's poll and the test's own call
_CLOCK = {"ts", "uptime_s", "series", "covered_s", "inflight", "runner"}


def _stable(value: Any) -> Any:
    """The figures that cannot move between the page's poll and the test's call (no traffic in between): all but
    the clock's, and the 1 min window (a slow start of Chromium may let its oldest slot expire meanwhile)."""
    if isinstance(value, dict):
        return {k: _stable(v) for k, v in value.items() if k not in _CLOCK and k != "1m"}
    return value


def test_dashboard_shows_the_servers_windows_circuits_and_gate(server: Any, browser: Browser) -> None:
    base = server()
    _traffic(base)
    browser.open(base + "/dashboard")
    browser.wait_for("document.body.getAttribute('data-loaded') === '1' && "
                     "document.body.getAttribute('data-report') === '1'", "the page's first render and report")
    page_stats = browser.eval("window.travelSlmStats")
    shown = _dom_figures(browser)
    _check_figures(shown, page_stats)
    server_stats = httpx.get(base + "/v1/stats").json()
    assert _stable(page_stats) == _stable(server_stats)

    # what the traffic made: an open circuit, fallbacks by reason, a 4xx, disagreement under the targets
    assert server_stats["circuits"]["openai/extract"] == "open" and shown["circuits.openai/extract"] == "open"
    assert shown["windows.1m.circuits.openai/extract"] == "open"
    five = server_stats["windows"]["5m"]
    assert set(five["fallbacks"]["by_reason"]) == {"error", "circuit_open"}
    assert five["client_errors"]["total"] == 1 and five["requests"]["total"] == 2 * len(TURNS) * 4 + 1
    classes = browser.eval("""(() => { const out = {};
        document.querySelectorAll('#shadow-agreement td[data-key$=".rate"]').forEach(n => {
          out[n.getAttribute('data-key')] = n.className; }); return out; })()""")
    agreement = server_stats["shadow"]["agreement"]
    assert classes
    for key, cls in classes.items():
        _, _, p, field, _ = key.split(".")
        fr = agreement[p][field]
        expected = "muted" if fr["target"] is None else ("ok" if fr["rate"] >= fr["target"] else "bad")
        assert cls == expected, (key, fr, cls)
    assert "bad" in classes.values()

    # the gate verdict of the shadow report
    report = httpx.get(base + "/v1/shadow/report").json()
    assert shown["gate.verdict"] == ("PASS" if report["gate"]["passed"] else "FAIL") == "FAIL"
    assert browser.eval("document.querySelectorAll('#gate-reasons li').length") >= 1

    # charts with a time axis drawn from the server's series: they are there on a fresh load (a reload)
    browser.send("Page.reload")
    browser.wait_for("document.body.getAttribute('data-loaded') === '1'", "the render after the reload")
    charts = browser.eval("""(() => ['chart-lat-5m', 'chart-lat-1h', 'chart-rate-5m', 'chart-rate-1h'].map(id => {
        const svg = document.querySelector('#' + id + ' svg');
        return svg ? {lines: svg.querySelectorAll('polyline, circle').length,
                      labels: Array.from(svg.querySelectorAll('text')).map(t => t.textContent)} : null; }))()""")
    assert all(c is not None and c["lines"] >= 1 for c in charts), charts
    for c in charts:
        assert any(len(t) == 5 and t[2] == ":" for t in c["labels"]), c["labels"]  # HH:MM ticks
    assert any("p95 extract/openai" in t for t in charts[0]["labels"])
    _check_figures(_dom_figures(browser), browser.eval("window.travelSlmStats"))


def test_dashboard_with_an_api_key_loads_then_asks_for_the_key(server: Any, browser: Browser) -> None:
    base = server(api_key=KEY)
    auth = {"Authorization": f"Bearer {KEY}"}
    _traffic(base, auth)
    page = httpx.get(base + "/dashboard")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert KEY not in page.text
    for path in ("/v1/stats", "/v1/shadow/report"):
        assert httpx.get(base + path).status_code == 401
        assert httpx.get(base + path, headers=auth).status_code == 200

    browser.open(base + "/dashboard")
    browser.wait_for("document.body.getAttribute('data-auth') === 'needed'", "the key prompt")
    assert browser.eval("getComputedStyle(document.getElementById('auth')).display") == "block"
    assert browser.eval("document.body.getAttribute('data-loaded')") == "0"
    browser.eval(f"document.getElementById('key').value = {json.dumps(KEY)}; "
                 "document.getElementById('auth').requestSubmit(); true")
    browser.wait_for("document.body.getAttribute('data-loaded') === '1' && "
                     "document.body.getAttribute('data-report') === '1'", "the render with the key")
    assert browser.eval("sessionStorage.getItem('travel-slm-key')") == KEY
    assert browser.eval("getComputedStyle(document.getElementById('auth')).display") == "none"
    page_stats = browser.eval("window.travelSlmStats")
    _check_figures(_dom_figures(browser), page_stats)
    assert _stable(page_stats) == _stable(httpx.get(base + "/v1/stats", headers=auth).json())

    # a reload in the same tab uses the stored key at once
    browser.send("Page.reload")
    browser.wait_for("document.body.getAttribute('data-loaded') === '1'", "the render after the reload")
    assert browser.eval("document.body.getAttribute('data-auth')") == "key"
