"""A real Prometheus (Debian's ``prometheus`` package) scrapes the app; the shipped Grafana queries run on it."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import free_socket

REPO = Path(__file__).resolve().parents[1]
P95_QUERY = "histogram_quantile(0.95, sum(rate(travel_slm_request_duration_seconds_bucket[1m])) by (le))"

pytestmark = pytest.mark.slow


def _prometheus() -> str:
    path = shutil.which("prometheus")
    if path is None:
        pytest.skip("the prometheus binary is not installed (Debian package: prometheus)")
    return path


def _query(base: str, expr: str) -> dict[str, Any]:
    r = httpx.get(base + "/api/v1/query", params={"query": expr}, timeout=10)
    body = r.json()
    assert r.status_code == 200 and body["status"] == "success", (expr, body)
    return body["data"]


def _grafana_exprs() -> list[str]:
    dash = json.loads((REPO / "deploy/grafana/travel-slm-dashboard.json").read_text(encoding="utf-8"))
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    # what Grafana substitutes before it sends a query
    return [e.replace("$__rate_interval", "1m").replace('job=~"$job"', 'job=~".*"') for e in exprs]


def test_prometheus_scrapes_the_app_and_computes_p95(live_server: Any, tmp_path: Path) -> None:
    binary = _prometheus()
    url = live_server({"shadow": {"enabled": True, "engine": "deterministic",
                                  "store": f"sqlite:///{tmp_path}/shadow.db"}})
    target = url.removeprefix("http://")
    sock = free_socket()
    prom_port = sock.getsockname()[1]
    sock.close()
    config = tmp_path / "prometheus.yml"
    scrape = (REPO / "deploy/prometheus/prometheus.yml").read_text(encoding="utf-8")
    scrape = scrape.replace("127.0.0.1:8000", target)
    scrape = re.sub(r"scrape_interval: \d+s", "scrape_interval: 1s", scrape)
    config.write_text(scrape, encoding="utf-8")
    proc = subprocess.Popen(
        [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{prom_port}", "--log.level=warn"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    base = f"http://127.0.0.1:{prom_port}"
    stop = threading.Event()

    def traffic() -> None:  # keep requests flowing so that rate() over [1m] has increments
        turn = {"event_type": "user_message", "event_payload": {"text": "hotels in Paris"}, "slot_state": {}}
        with httpx.Client(base_url=url, timeout=10) as client:
            while not stop.is_set():
                client.post("/extract", json={"turn": turn})
                client.post("/render", json={"turn": turn})
                time.sleep(0.02)

    worker = threading.Thread(target=traffic, daemon=True)
    worker.start()
    try:
        deadline = time.monotonic() + 90
        value: float | None = None
        while time.monotonic() < deadline and value is None:
            if proc.poll() is not None:
                pytest.fail(f"prometheus exited: {proc.stdout.read() if proc.stdout else ''}")
            try:
                result = _query(base, P95_QUERY)["result"]
            except httpx.HTTPError:
                result = []
            if result and result[0]["value"][1] not in ("NaN", "+Inf"):
                value = float(result[0]["value"][1])
            else:
                time.sleep(0.5)
        assert value is not None, "histogram_quantile(0.95, ...) never returned a value"
        assert 0.0 < value < 30.0
        targets = httpx.get(base + "/api/v1/targets", timeout=10).json()["data"]["activeTargets"]
        assert [t["health"] for t in targets] == ["up"]
        # every query of the shipped Grafana dashboard is valid PromQL against the real series
        exprs = _grafana_exprs()
        assert len(exprs) >= 10
        answered = {e: _query(base, e)["result"] for e in exprs}
        p95 = next(e for e in exprs if e.startswith("histogram_quantile(0.95, sum by (le, pass, engine) (rate("
                                                      "travel_slm_request_duration_seconds_bucket"))
        assert {(r["metric"]["pass"], r["metric"]["engine"]) for r in answered[p95]} == {
            ("extract", "deterministic"), ("render", "deterministic")}
        agreement = next(e for e in exprs if "shadow_agreement_total" in e)
        assert {r["metric"]["field"] for r in answered[agreement]} >= {"tool_match", "widget_type_match"}
    finally:
        stop.set()
        worker.join(timeout=10)
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
