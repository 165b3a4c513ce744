"""The server's shadow hook: with ``shadow.enabled`` every answered pass is handed to the shadow runner after
the response; shadow metrics land in the app's registry; with shadow off the live answer is unchanged."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from engines.shadow.store import iter_records

TURN = {"event_type": "user_message", "event_payload": {"text": "flights to Miami, my email is a@b.example"},
        "slot_state": {}}


def _shadow_runs(base: str) -> dict[tuple[str, str], float]:
    out: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(httpx.get(base + "/metrics").text):
        if family.name == "travel_slm_shadow_runs":
            for s in family.samples:
                if s.name.endswith("_total"):
                    out[(s.labels["pass"], s.labels["outcome"])] = s.value
    return out


def test_shadow_runs_after_live_answers(live_server: Any, tmp_path: Any) -> None:
    store = f"sqlite:///{tmp_path / 'shadow.db'}"
    off = live_server()
    base = live_server({"shadow": {"enabled": True, "engine": "deterministic", "store": store}})
    app = live_server.apps[base]
    assert app.state.shadow is not None and live_server.apps[off].state.shadow is None

    live = httpx.post(base + "/extract", json={"turn": TURN}, headers={"X-Request-ID": "req-shadow-1"})
    assert live.json() == {**httpx.post(off + "/extract", json={"turn": TURN}).json(),
                           "latency_ms": live.json()["latency_ms"]}
    httpx.post(base + "/render", json={"turn": TURN})
    httpx.post(base + "/v1/chat/completions", json={"model": "travel-extract", "messages": [
        {"role": "user", "content": json.dumps(TURN)}]})

    deadline = time.monotonic() + 20
    runs: dict[tuple[str, str], float] = {}
    while time.monotonic() < deadline:
        runs = _shadow_runs(base)
        if runs.get(("extract", "compared"), 0) >= 2 and runs.get(("render", "compared"), 0) >= 1:
            break
        time.sleep(0.05)
    assert runs.get(("extract", "compared")) == 2 and runs.get(("render", "compared")) == 1, runs

    live_server.stop(base)  # the lifespan closes the runner, which flushes the store
    records = list(iter_records(store))
    assert len(records) == 3
    first = next(r for r in records if r["request_id"] == "req-shadow-1")
    assert first["pass"] == "extract" and first["live_engine"] == "deterministic"
    assert "a@b.example" not in json.dumps(records)  # redacted before storing
