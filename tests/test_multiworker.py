"""``travel-slm serve --workers N`` (issue 11, item 11): real worker processes behind uvicorn's supervisor, metrics
in prometheus-client's multiprocess mode.

Under plain ``uvicorn --workers 2`` each scrape read one worker's registry, so ``/metrics`` alternated between
the workers' counts (395 <-> 605 for 1,000 requests). Here every scrape, whichever worker answers it, shows
exactly the requests sent; the folder of a previous start does not leak into the counts; gauges and the
process metrics read the same from every worker.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ProcessServer
from tests.test_metrics import _families, _value

TURN = {"event_type": "user_message", "event_payload": {"text": "flights to Miami"}, "slot_state": {}}
N = 40
SCRAPES = 12


def _scrape(base: str) -> dict[str, Any]:
    # a fresh connection each time, so that the scrapes land on either worker
    r = httpx.get(base + "/metrics", headers={"Connection": "close"}, timeout=30)
    assert r.status_code == 200, r.text
    return _families(r.text)


def _per_worker_totals(base: str, attempts: int = 300) -> dict[int, int]:
    """``{pid: requests.total}`` from ``/v1/stats`` (per worker) over fresh connections until both answered."""
    seen: dict[int, int] = {}
    for _ in range(attempts):
        body = httpx.get(base + "/v1/stats", headers={"Connection": "close"}, timeout=30).json()
        assert body["worker"]["multiprocess"] is True
        seen[body["worker"]["pid"]] = body["requests"]["total"]
        if len(seen) == 2:
            break
    return seen


def _start(args: list[str], env: dict[str, str | None]) -> ProcessServer:
    server = ProcessServer(["--log-level", "warning", *args], env=env)
    server.start()
    return server


def test_metrics_count_every_request_across_workers(tmp_path: Path) -> None:
    prom = tmp_path / "prom"
    prom.mkdir()
    # the files of an earlier start in the folder the operator gave: 1,000 requests that this start never served
    from prometheus_client.mmap_dict import MmapedDict, mmap_key

    stale = MmapedDict(str(prom / "counter_4242.db"))
    stale.write_value(mmap_key("travel_slm_requests", "travel_slm_requests_total", ["pass", "engine", "status"],
                               ["extract", "deterministic", "200"], "stale"), 1000.0, 0.0)
    stale.close()

    server = _start(["--workers", "2"], {"PROMETHEUS_MULTIPROC_DIR": str(prom)})
    try:
        base = server.base_url
        for _ in range(N):
            r = httpx.post(base + "/extract", json={"turn": TURN}, headers={"Connection": "close"}, timeout=30)
            assert r.status_code == 200
        for _ in range(SCRAPES):
            fams = _scrape(base)
            assert _value(fams, "travel_slm_requests", "travel_slm_requests_total", **{"pass": "extract"}) == N
            hist = "travel_slm_request_duration_seconds"
            assert _value(fams, hist, hist + "_count", **{"pass": "extract", "engine": "deterministic"}) == N
            buckets = [s for s in fams[hist].samples if s.name == hist + "_bucket" and s.labels["le"] == "+Inf"
                       and s.labels["pass"] == "extract"]
            assert sum(s.value for s in buckets) == N
            # a gauge with a multiprocess mode: one series (livesum), not one per pid
            inflight = [s for s in fams["travel_slm_inflight"].samples]
            assert [s.value for s in inflight] == [0.0] and "pid" not in inflight[0].labels
        per_worker = _per_worker_totals(base)
        assert len(per_worker) == 2, f"only one worker answered {per_worker}"
        assert sum(per_worker.values()) == N and all(0 < n < N for n in per_worker.values()), per_worker
    finally:
        server.stop()
    assert server.proc.returncode == 0, server.stderr[-2000:]
    assert not (prom / "counter_4242.db").exists()


def test_circuit_state_and_process_metrics_agree_across_workers(tmp_path: Path) -> None:
    """Each worker has its own breaker; the circuit-state gauge (livemax) reads open from every scrape once
    the workers' breakers opened, and process_* are the supervisor's (a scrape of another worker is no
    restart for TravelSlmRestarting). The temporary metrics folder goes away with the server."""
    env: dict[str, str | None] = {
        "PROMETHEUS_MULTIPROC_DIR": None, "TMPDIR": str(tmp_path),
        "TRAVEL_SLM_EXTRACTION_ENGINE": "openai", "TRAVEL_SLM_OPENAI__BASE_URL": "http://127.0.0.1:9/v1",
        "TRAVEL_SLM_FALLBACK__FAILURE_THRESHOLD": "1", "TRAVEL_SLM_FALLBACK__COOLDOWN_S": "3600",
    }
    server = _start(["--workers", "2"], env)
    try:
        base = server.base_url
        made = [p.name for p in tmp_path.iterdir() if p.name.startswith("travel-slm-metrics-")]
        assert len(made) == 1, made
        reasons = []
        for _ in range(N):
            r = httpx.post(base + "/extract", json={"turn": TURN}, headers={"Connection": "close"}, timeout=30)
            reasons.append(r.json()["llm_contract"]["fallback_reason"])
        assert set(reasons) <= {"error", "circuit_open"} and reasons.count("error") <= 2  # one per worker at most
        per_worker = _per_worker_totals(base)
        assert len(per_worker) == 2, f"only one worker answered {per_worker}"
        starts = set()
        for _ in range(SCRAPES):
            fams = _scrape(base)
            fb = "travel_slm_fallback"
            assert _value(fams, fb, fb + "_total", **{"pass": "extract", "engine": "openai"}) == N
            states = {(s.labels["engine"], s.labels["pass"]): s.value for s in fams["travel_slm_circuit_state"].samples}
            assert states[("openai", "extract")] == 2.0 and states[("openai", "render")] == 0.0
            starts.add(_value(fams, "process_start_time_seconds", "process_start_time_seconds"))
        assert len(starts) == 1 and 0 < starts.pop() <= time.time()
    finally:
        server.stop()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("travel-slm-metrics-")]


def test_workers_must_be_positive() -> None:
    import subprocess
    import sys

    from tests.conftest import REPO

    out = subprocess.run([sys.executable, "-m", "server.cli", "serve", "--workers", "0"], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "--workers: must be at least 1, got 0" in out.stderr


@pytest.mark.parametrize("argv", [["serve", "--help"]])
def test_serve_help_documents_workers(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    from server.cli import main

    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--workers N" in text and "PROMETHEUS_MULTIPROC_DIR" in text and "per worker" in text
