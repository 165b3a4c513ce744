"""Issue 11, findings 7 and 8: a shadow store fault degrades shadow mode only (the live side serves, the
fault shows in /healthz, a metric and the log), and records lost to a full disk are counted as losses in
the report, /v1/stats and the metrics."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from engines.shadow.store import ShadowStore, read_store
from tests.conftest import REPO, free_socket

TURN = {"event_type": "user_message", "event_payload": {"text": "hotels in Paris for 2 adults"}, "slot_state": {}}


def _wait(cond: Any, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout  # a hang guard, not a timing assertion
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _corrupt(path: Path) -> None:
    path.write_bytes(b"this is not an SQLite database at all\n" * 300)


def _truncated(path: Path) -> None:
    store = ShadowStore(f"sqlite:///{path}")
    store.start()
    for i in range(400):
        store.append({"kind": "slm_shadow_comparison", "ts": time.time(), "pass": "extract", "request_id": f"r{i}",
                      "turn": {"event_payload": {"text": "x" * 500}}, "agreement": {}})
    store.close()
    size = path.stat().st_size
    with path.open("r+b") as handle:
        handle.truncate(size // 3)


def _parent_is_a_file(path: Path) -> None:
    path.parent.parent.mkdir(parents=True, exist_ok=True)
    path.parent.write_text("a file where the store's folder should be")


def _read_only_place(path: Path) -> None:
    """A folder that cannot be created: /proc is read-only even for root (as a read-only root filesystem)."""


FAULTS = {
    "corrupt": (_corrupt, None),
    "truncated": (_truncated, None),
    "parent_is_a_file": (_parent_is_a_file, None),
    "read_only": (_read_only_place, "/proc/travel-slm-shadow/shadow.db"),
}


def _metric(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_a_store_fault_degrades_shadow_only(live_server: Any, tmp_path: Path, fault: str,
                                            caplog: pytest.LogCaptureFixture) -> None:
    make, fixed = FAULTS[fault]
    path = Path(fixed) if fixed else tmp_path / "store" / "shadow.db"
    if not fixed:
        path.parent.mkdir(parents=True, exist_ok=True)
    if fault == "parent_is_a_file":
        path = tmp_path / "dir" / "file" / "shadow.db"
    make(path)
    base = live_server({"shadow": {"enabled": True, "engine": "deterministic", "store": f"sqlite:///{path}"}})
    shadow = live_server.apps[base].state.shadow
    _wait(lambda: shadow.store.state != "new", "the store to try its file")
    for _ in range(10):
        r = httpx.post(base + "/extract", json={"turn": TURN}, timeout=30)
        assert r.status_code == 200 and r.json()["llm_contract"]["engine"] == "deterministic"
    health = httpx.get(base + "/healthz", timeout=30)
    assert health.status_code == 200 and health.json()["ok"] is True
    store = health.json()["shadow_store"]
    assert store["state"] == "failed" and store["error"], store
    _wait(lambda: shadow.store.lost_total == 10, "the ten runs to be counted as lost")
    metrics = httpx.get(base + "/metrics", timeout=30).text
    assert _metric(metrics, 'travel_slm_shadow_store_errors_total{kind="open"}') >= 1
    assert _metric(metrics, "travel_slm_shadow_store_up ") == 0
    assert _metric(metrics, 'travel_slm_shadow_records_lost_total{cause="store_unavailable",pass="extract"}') == 10
    report = httpx.get(base + "/v1/shadow/report", timeout=60)
    assert report.status_code in (200, 503) and report.status_code != 500
    if report.status_code == 200:
        assert report.json()["lost"] == 10
    assert any("shadow store cannot be opened" in rec.getMessage() for rec in caplog.records)


def test_a_store_recovers_when_its_folder_becomes_usable(tmp_path: Path) -> None:
    blocker = tmp_path / "state"
    blocker.write_text("a file, not a folder")
    url = f"sqlite:///{blocker}/shadow.db"
    store = ShadowStore(url, retry_s=0.1)
    store.start()
    _wait(lambda: store.state == "failed", "the open to fail")
    assert store.append({"kind": "slm_shadow_comparison", "ts": time.time(), "pass": "render", "agreement": {}})
    _wait(lambda: store.lost_total == 1, "the record to be counted as lost")
    blocker.unlink()
    blocker.mkdir()
    _wait(lambda: store.state == "ok", "the store to open once the folder exists")
    store.append({"kind": "slm_shadow_comparison", "ts": time.time(), "pass": "render", "agreement": {}})
    store.close()
    assert len(read_store(url).records) == 1
    with sqlite3.connect(blocker / "shadow.db") as conn:  # the earlier loss is persisted once it can be
        assert conn.execute("SELECT pass, SUM(n) FROM shadow_losses GROUP BY pass").fetchall() == [("render", 1)]


_SERVE_LIMITED = """
import resource, sys
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))  # every file this process writes stops at the limit
from server.cli import main
sys.exit(main(sys.argv[2:]))
"""


def test_a_full_disk_counts_every_lost_record(tmp_path: Path) -> None:
    """A real full-disk error (EFBIG past RLIMIT_FSIZE, SQLite's 'database or disk is full'), not a mock."""
    sock = free_socket()
    port = sock.getsockname()[1]
    sock.close()
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1",
           "TRAVEL_SLM_SHADOW__ENABLED": "true", "TRAVEL_SLM_SHADOW__ENGINE": "deterministic",
           "TRAVEL_SLM_SHADOW__STORE": f"sqlite:///{tmp_path}/shadow.db", "TRAVEL_SLM_LOG_LEVEL": "warning"}
    proc = subprocess.Popen([sys.executable, "-c", _SERVE_LIMITED, str(160 * 1024), "serve", "--host", "127.0.0.1",
                             "--port", str(port)], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    n = 200
    try:
        def up() -> bool:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            try:
                return httpx.get(base + "/healthz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        _wait(up, "the server to start")
        with httpx.Client(timeout=30) as client:
            for i in range(n):
                turn = {**TURN, "event_payload": {"text": f"hotels in Paris for 2 adults, trip {i} " + "x" * 400}}
                assert client.post(base + "/extract", json={"turn": turn}).status_code == 200

            def finished() -> bool:
                runner = client.get(base + "/v1/stats").json()["shadow"]["runner"]
                return runner["compared"] + runner["fell_back"] == n
            _wait(finished, "the shadow runs")
            report = client.get(base + "/v1/shadow/report", params={"wait": "true"}).json()
            stats = client.get(base + "/v1/stats").json()["shadow"]["runner"]
            metrics = client.get(base + "/metrics").text
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert report["lost"] > 0, report
    assert report["records"] + report["lost"] == n, (report["records"], report["lost"])
    assert stats["store_lost"] == report["lost"] and stats["store"]["write_errors"] > 0
    assert _metric(metrics, 'travel_slm_shadow_records_lost_total{cause="write_failed",pass="extract"}') == report[
        "lost"]
    assert _metric(metrics, 'travel_slm_shadow_store_errors_total{kind="write"}') >= 1
    assert json.dumps(report)  # the report itself still answered
