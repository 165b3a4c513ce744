"""Shadow mode through the real app on a real uvicorn server: isolation, saturation, counts, redaction,
the report endpoint, /v1/stats, and the dashboard and HTML report in headless Chromium."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.settings import load_settings
from engines.base import Engine
from engines.shadow.report import _ms, fmt_rate
from engines.shadow.store import read_store
from server.app import create_app
from tests.conftest import ThreadServer
from tests.reference import all_records, require_reference
from tests.test_shadow_engines import CrashingEngine, FailingEngine, GatedEngine, SleepyEngine


class App:
    def __init__(self, url: str, app: Any, server: ThreadServer, store: str) -> None:
        self.url, self.app, self.server, self.store = url, app, server, store

    @property
    def shadow(self) -> Any:
        return self.app.state.shadow


@pytest.fixture
def start_app(tmp_path: Path) -> Iterator[Callable[..., App]]:
    """A real app with shadow settings and, optionally, a test engine registered as the shadow engine."""
    running: list[ThreadServer] = []
    engines: list[Engine] = []

    def start(shadow_engine: Engine | None = None, *, enabled: bool = True, name: str = "s", **shadow: Any) -> App:
        store = f"sqlite:///{tmp_path}/{name}.db"
        conf = {"enabled": enabled, "engine": "slm" if shadow_engine is not None else "deterministic",
                "store": store, "timeout_ms": 60_000, "max_inflight": 1000, **shadow}
        settings = load_settings(shadow=conf, fallback={"failure_threshold": 10_000})
        app = create_app(settings)
        if shadow_engine is not None:
            engines.append(shadow_engine)
            app.state.runner.engines["slm"] = shadow_engine  # before the lifespan starts the shadow runner
        server = ThreadServer(app)
        running.append(server)
        return App(server.start(), app, server, store)

    yield start
    for engine in engines:  # a failed test may leave a gate closed: let the runs end before shutdown
        if isinstance(engine, GatedEngine):
            engine.gate.set()
    for server in running:
        server.stop()


def _turns(n: int) -> list[dict[str, Any]]:
    require_reference()
    records = all_records()
    step = max(1, len(records) // n)
    return [r["input"] for r in records[::step][:n]]


def _strip(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k != "latency_ms"}


async def _planner_turns(url: str, turns: list[dict[str, Any]], concurrency: int = 8) -> list[tuple[dict, dict]]:
    """An extract and a render for each turn, as the planner sends them; returns the bodies."""
    sem = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=30.0) as client:
        async def one(turn: dict[str, Any]) -> tuple[dict, dict]:
            async with sem:
                ex = await client.post("/extract", json={"turn": turn})
                assert ex.status_code == 200, ex.text
                rd = await client.post("/render", json={"turn": turn, "extraction": ex.json()["extract"]})
                assert rd.status_code == 200, rd.text
                return ex.json(), rd.json()
        return await asyncio.gather(*(one(t) for t in turns))


async def _until(predicate: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    """Wait for something that happens after the response (background submit); not a speed check."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        await asyncio.sleep(0.01)


def _metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


# -- isolation -------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["slow", "failing", "crashing"])
async def test_live_responses_are_identical_and_do_not_wait(start_app: Callable[..., App], kind: str) -> None:
    turns = _turns(24)
    off = start_app(enabled=False, name="off")
    baseline = await _planner_turns(off.url, turns)

    engine = {"slow": GatedEngine, "failing": FailingEngine, "crashing": CrashingEngine}[kind]()
    on = start_app(engine, name="on")
    answers = await _planner_turns(on.url, turns)
    for (b_ex, b_rd), (a_ex, a_rd) in zip(baseline, answers, strict=True):
        assert _strip(a_ex) == _strip(b_ex) and _strip(a_rd) == _strip(b_rd)
    await _until(lambda: on.shadow.counts["submitted"] == 2 * len(turns), "the background submits")
    if kind == "slow":
        # every live answer arrived while every shadow run was still held at its gate
        assert isinstance(engine, GatedEngine)
        # a submitted run counts as in flight once its task starts (just after the submit is counted)
        await _until(lambda: on.shadow.inflight == 2 * len(turns), "every shadow run to start")
        assert on.shadow.counts["dropped"] == 0 and on.shadow.store.written == 0
        engine.gate.set()
    report = httpx.get(on.url + "/v1/shadow/report", params={"wait": "true"}, timeout=30).json()
    assert report["records"] == 2 * len(turns)
    assert report["passes"]["extract"]["records"] == report["passes"]["render"]["records"] == len(turns)
    if kind == "slow":
        assert report["passes"]["render"]["agreement"]["widget_type_match"]["rate"] == 1.0
        assert report["passes"]["render"]["fell_back"] == 0
    else:
        assert report["passes"]["extract"]["fell_back"] == report["passes"]["render"]["fell_back"] == len(turns)
        assert report["passes"]["extract"]["agreement"]["tool_match"]["match"] == 0
        assert not report["gate"]["passed"]


async def test_a_shadow_slower_than_its_timeout_is_recorded_as_fell_back(start_app: Callable[..., App]) -> None:
    on = start_app(SleepyEngine(), timeout_ms=40)
    turns = _turns(6)
    await _planner_turns(on.url, turns)
    report = httpx.get(on.url + "/v1/shadow/report", params={"wait": "true"}, timeout=30).json()
    assert report["records"] == 12
    assert report["passes"]["extract"]["fallback_reasons"] == {"timeout": 6}
    assert report["passes"]["render"]["fallback_reasons"] == {"timeout": 6}
    metrics = httpx.get(on.url + "/metrics").text
    assert _metric(metrics, "travel_slm_shadow_runs_total", outcome="fell_back") == 12


# -- saturation ------------------------------------------------------------------------------------


async def test_saturation_drops_are_counted_and_live_never_fails(start_app: Callable[..., App]) -> None:
    engine = GatedEngine()
    on = start_app(engine, max_inflight=4, passes=["extract"])
    turn = _turns(1)[0]
    n = 80
    async with httpx.AsyncClient(base_url=on.url, timeout=30.0) as client:
        answers = await asyncio.gather(*(client.post("/extract", json={"turn": turn}) for _ in range(n)))
    assert [a.status_code for a in answers] == [200] * n
    assert len({json.dumps(_strip(a.json()), sort_keys=True) for a in answers}) == 1
    await _until(lambda: on.shadow.counts["submitted"] == n, "the background submits")
    assert on.shadow.inflight == 4 and on.shadow.max_inflight_seen == 4
    assert on.shadow.counts["dropped"] == n - 4
    metrics = httpx.get(on.url + "/metrics").text
    assert _metric(metrics, "travel_slm_shadow_runs_total", outcome="dropped") == n - 4
    engine.gate.set()
    report = httpx.get(on.url + "/v1/shadow/report", params={"wait": "true"}, timeout=30).json()
    assert report["records"] == 4 and report["drops"] == n - 4
    assert report["passes"]["extract"]["dropped"] == n - 4


# -- counts, report, stats over the reference corpora -------------------------------------------------


async def test_report_counts_match_the_requests_sent(start_app: Callable[..., App]) -> None:
    turns = _turns(150)
    on = start_app()  # deterministic shadow of the deterministic live engine
    await _planner_turns(on.url, turns)
    await _until(lambda: on.shadow.counts["submitted"] == 2 * len(turns), "the background submits")
    report = httpx.get(on.url + "/v1/shadow/report", params={"wait": "true", "min_turns": 1}, timeout=30).json()
    assert report["records"] == 300 and report["drops"] == 0
    for p in ("extract", "render"):
        s = report["passes"][p]
        assert s["records"] == s["compared"] == 150
        assert all(fr["match"] == fr["total"] == 150 for fr in s["agreement"].values())
    assert sum(c["records"] for c in report["classes"] if c["pass"] == "render") == 150
    assert report["gate"]["passed"], report["gate"]["reasons"]
    # the default 500 turns per class fails, and says which classes are short
    strict = httpx.get(on.url + "/v1/shadow/report", timeout=30).json()
    assert not strict["gate"]["passed"]
    assert all("needs >= 500" in reason for reason in strict["gate"]["reasons"])
    # the live figures agree with the store
    stats = httpx.get(on.url + "/v1/stats").json()
    assert stats["shadow"]["enabled"] is True
    assert stats["requests"]["by_pass"] == {"extract": 150, "render": 150}
    for p in ("extract", "render"):
        assert stats["shadow"]["runs"][p]["compared"] == 150
        for field, fr in report["passes"][p]["agreement"].items():
            assert stats["shadow"]["agreement"][p][field]["match"] == fr["match"]
            assert stats["shadow"]["agreement"][p][field]["total"] == fr["total"]
    bad = httpx.get(on.url + "/v1/shadow/report", params={"since": "yesterday-ish"})
    assert bad.status_code == 422


async def test_pii_in_user_text_never_reaches_the_store_and_shutdown_flushes(
        start_app: Callable[..., App], tmp_path: Path) -> None:
    on = start_app(name="pii")
    secrets = ["olivia.traveller@example.org", "+44 20 7946 0958", "4111 1111 1111 1111", "378282246310005"]
    turns = [{"event_type": "user_message", "event_payload": {"text": f"hotels in Paris, reach me at {s}"},
              "slot_state": {"traveller_note": f"contact {s}"}} for s in secrets]
    await _planner_turns(on.url, turns * 5)
    await _until(lambda: on.shadow.counts["submitted"] == 40, "the background submits")
    on.server.stop()  # the lifespan closes the shadow runner: in-flight runs finish, the store flushes
    blob = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("pii.db"))
    for secret in secrets:
        assert secret.encode() not in blob and secret.replace(" ", "").encode() not in blob
    records = read_store(on.store).records
    assert len(records) == 40
    texts = {r["turn"]["event_payload"]["text"] for r in records}
    assert texts == {f"hotels in Paris, reach me at [REDACTED_{k}]" for k in ("EMAIL", "PHONE", "CARD")}


# -- browsers ----------------------------------------------------------------------------------------


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("headless Chromium is not installed (Debian package: chromium)")


def _dump_dom(url: str, budget_ms: int = 6000) -> str:
    proc = subprocess.run(
        [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--no-first-run", "--disable-extensions", f"--virtual-time-budget={budget_ms}", "--dump-dom", url],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def _keyed(dom: str) -> dict[str, str]:
    return {k: v.strip() for k, v in re.findall(r'data-key="([^"]+)"[^>]*>([^<]*)<', dom)}


def _pct_close(shown: str, rate: float | None) -> bool:
    return rate is not None and shown.endswith("%") and abs(float(shown[:-1]) - rate * 100) <= 0.051


async def test_dashboard_in_chromium_shows_the_servers_figures(start_app: Callable[..., App]) -> None:
    _chromium()
    on = start_app()
    await _planner_turns(on.url, _turns(30))
    await _until(lambda: on.shadow.counts["submitted"] == 60, "the background submits")
    await on.shadow.flush()
    page = httpx.get(on.url + "/dashboard")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert not re.search(r'(src|href)="(https?:)?//', page.text), "the dashboard must not load external assets"
    dom = await asyncio.to_thread(_dump_dom, on.url + "/dashboard")
    stats = httpx.get(on.url + "/v1/stats").json()
    shown = _keyed(dom)
    assert 'data-loaded="1"' in dom, dom[-3000:]
    assert shown["requests.total"] == str(stats["requests"]["total"]) == "60"
    assert shown["fallbacks.total"] == str(stats["fallbacks"]["total"])
    assert shown["errors.total"] == str(stats["errors"]["total"])
    for p, engines in stats["latency"].items():
        for e, figures in engines.items():
            key = f"latency.{p}.{e}."
            assert shown[key + "count"] == str(figures["count"])
            assert float(shown[key + "p50_ms"]) == pytest.approx(figures["p50_ms"])
            assert float(shown[key + "p95_ms"]) == pytest.approx(figures["p95_ms"])
    assert stats["shadow"]["agreement"]
    for p, fields in stats["shadow"]["agreement"].items():
        assert shown[f"shadow.runs.{p}.compared"] == str(stats["shadow"]["runs"][p]["compared"])
        for field, fr in fields.items():
            assert shown[f"shadow.agreement.{p}.{field}"] == f"{fr['match']}/{fr['total']}"
            assert _pct_close(shown[f"shadow.agreement.{p}.{field}.rate"], fr["rate"])


async def test_html_report_in_chromium_shows_the_json_figures(start_app: Callable[..., App], tmp_path: Path) -> None:
    _chromium()
    engine = GatedEngine(wrong=True)  # real disagreements, so the figures are not all 100%
    engine.gate.set()
    on = start_app(engine)
    await _planner_turns(on.url, _turns(40))
    await _until(lambda: on.shadow.counts["submitted"] == 80, "the background submits")
    report = httpx.get(on.url + "/v1/shadow/report", params={"wait": "true", "min_turns": 3}, timeout=30).json()
    html_page = httpx.get(on.url + "/v1/shadow/report", params={"format": "html", "min_turns": 3}).text
    assert "<svg" in html_page and not re.search(r'(src|href)="(https?:)?//', html_page)
    assert "<script" not in html_page
    path = tmp_path / "report.html"
    path.write_text(html_page, encoding="utf-8")
    dom = await asyncio.to_thread(_dump_dom, path.as_uri(), 500)
    shown = _keyed(dom)
    assert shown["records"] == str(report["records"]) == "80"
    assert shown["gate.passed"] == ("PASS" if report["gate"]["passed"] else "FAIL") == "FAIL"
    from engines.shadow.report import FieldRate

    for p, s in report["passes"].items():
        assert shown[f"passes.{p}.records"] == str(s["records"])
        assert shown[f"passes.{p}.schema_valid"] == fmt_rate(FieldRate(**s["schema_valid"]))
        assert shown[f"passes.{p}.shadow_latency_ms.p95"] == _ms(s["shadow_latency_ms"]["p95"])
        assert shown[f"passes.{p}.live_latency_ms.p50"] == _ms(s["live_latency_ms"]["p50"])
        for field, fr in s["agreement"].items():
            assert shown[f"passes.{p}.agreement.{field}"] == fmt_rate(FieldRate(**fr))
    assert report["passes"]["extract"]["agreement"]["render_intent_match"]["rate"] < 1.0
    for c in report["classes"]:
        key = f"classes.{c['pass']}.{c['class']}"
        assert shown[key + ".records"] == str(c["records"])
        for field, fr in c["agreement"].items():
            assert shown[f"{key}.{field}"] == fmt_rate(FieldRate(**fr))
    for reason in report["gate"]["reasons"][:100]:
        assert reason.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;") in dom



def test_each_operations_route_is_served_once() -> None:
    """/v1/stats and /dashboard (server.routes_stats) and /v1/shadow/report (server.routes_shadow): each route
    once in the app, with its one tag, whichever module the app includes them from."""
    app = create_app(load_settings())
    paths = [route.path for route in app.routes if route.path in ("/v1/stats", "/dashboard", "/v1/shadow/report")]
    assert sorted(paths) == ["/dashboard", "/v1/shadow/report", "/v1/stats"]
    spec = app.openapi()["paths"]
    assert [spec[p]["get"]["tags"] for p in sorted(paths)] == [["operations"]] * 3
