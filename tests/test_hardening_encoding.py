"""Issue 11, findings 1 to 3: a lone surrogate in user text breaks nothing (store, logs, answers, streams,
the openai engine); only upstream-caused failures count toward the circuit breaker; the shadow breaker
opens on a hanging upstream and closes again once it recovers."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.settings import load_settings
from engines.deterministic.extract import extract as oracle_extract
from engines.fallback import PassRunner
from engines.openai_engine import OpenAIEngine
from engines.shadow.redact import redact_record
from engines.shadow.runner import ShadowRunner
from engines.shadow.store import ShadowStore, read_store
from server.logs import JsonFormatter
from tests.conftest import completion

LONE = "\ud800"  # half an emoji, as a JavaScript client sends it
TEXT = f"hotels in Paris {LONE} for 2 adults"
TURN = {"event_type": "user_message", "event_payload": {"text": TEXT}, "slot_state": {}}
ECHO_TURN = {"event_type": "user_message", "event_payload": {"text": "hotels please"},
             "slot_state": {"region": {"label": f"Pa{LONE}ris", "kind": "city"}}}  # echoed in the answers


def _post(url: str, body: Any) -> httpx.Response:
    # the JSON text a JavaScript client sends: the surrogate as a \ud800 escape
    return httpx.post(url, content=json.dumps(body), headers={"content-type": "application/json"}, timeout=60)


def _wait(cond: Any, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout  # a hang guard, not a timing assertion
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_lone_surrogate_is_served_echoed_streamed_and_stored(live_server: Any, tmp_path: Path) -> None:
    store = tmp_path / "shadow.db"
    base = live_server({"shadow": {"enabled": True, "engine": "deterministic", "store": f"sqlite:///{store}"}})
    app = live_server.apps[base]
    for path, body in (("/extract", {"turn": ECHO_TURN}), ("/render", {"turn": ECHO_TURN}),
                       ("/extract", {"turn": TURN})):
        r = _post(base + path, body)
        assert r.status_code == 200, r.text
        assert f"Pa{LONE}ris" in json.dumps(r.json(), ensure_ascii=False) or path == "/extract"
    render = _post(base + "/render", {"turn": ECHO_TURN}).json()["render"]
    assert any(f"Pa{LONE}ris" in json.dumps(w, ensure_ascii=False) for w in render["widgets"])  # a faithful echo
    chat = {"model": "travel-render", "messages": [{"role": "user", "content": json.dumps({"turn": ECHO_TURN})}]}
    r = _post(base + "/v1/chat/completions", chat)
    assert r.status_code == 200 and LONE in json.loads(r.json()["choices"][0]["message"]["content"])["widgets"][0][
        "payload"]["title"]
    streamed = httpx.post(base + "/v1/chat/completions", content=json.dumps({**chat, "stream": True}),
                          headers={"content-type": "application/json"}, timeout=60)
    assert streamed.status_code == 200 and streamed.text.rstrip().endswith("data: [DONE]")
    parts = [json.loads(line[6:]) for line in streamed.text.splitlines() if line.startswith("data: {")]
    content = "".join(p["choices"][0]["delta"].get("content") or "" for p in parts if p["choices"])
    assert json.loads(content)["widgets"][0]["payload"]["title"] == f"Hotels in Pa{LONE}ris"

    # the store's writer survived: every later run is stored
    for i in range(50):
        assert _post(base + "/extract", {"turn": {**TURN, "event_payload": {"text": f"hotels in Rome {i}"}}}
                     ).status_code == 200
    shadow = app.state.shadow
    _wait(lambda: shadow.counts["compared"] + shadow.counts["fell_back"] == 56, "the shadow runs")
    assert shadow.store.flush(30)
    records = read_store(f"sqlite:///{store}").records
    assert len(records) == 56
    assert any(LONE in json.dumps(r["turn"], ensure_ascii=False) for r in records)  # kept, as an escape
    health = httpx.get(base + "/healthz").json()["shadow_store"]
    assert health["state"] == "ok" and health["lost_total"] == 0 and health["writer_alive"]


def test_store_writer_keeps_writing_after_a_surrogate_record(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/s.db"
    store = ShadowStore(url, redactor=redact_record)
    store.start()
    rec = {"kind": "slm_shadow_comparison", "ts": time.time(), "pass": "extract", "request_id": "r0",
           "turn": {"event_payload": {"text": TEXT}}, "agreement": {}}
    store.append(rec)
    for i in range(1, 51):
        store.append({**rec, "request_id": f"r{i}", "turn": {"event_payload": {"text": "fine"}}})
    assert store.flush(30)
    store.close()
    assert [r["request_id"] for r in read_store(url).records] == [f"r{i}" for i in range(51)]
    with sqlite3.connect(tmp_path / "s.db") as conn:  # the file holds valid UTF-8 JSON text
        raw = conn.execute("SELECT record FROM shadow_records ORDER BY id LIMIT 1").fetchone()[0]
    assert "\\ud800" in raw and json.loads(raw)["turn"]["event_payload"]["text"] == TEXT
    assert store.lost_total == 0 and store.health()["state"] == "closed"


def test_log_lines_with_a_surrogate_encode_and_tracebacks_keep_the_error_line() -> None:
    formatter = JsonFormatter()

    def deep(n: int) -> None:
        if n == 0:
            raise ValueError("the real error line")
        deep(n - 1)

    try:
        deep(150)  # a traceback far longer than any clip
    except ValueError:
        import sys

        exc_info = sys.exc_info()
    record = logging.LogRecord("t", logging.ERROR, __file__, 1, f"msg {LONE}", None, exc_info)
    record.detail = f"detail {LONE}"
    line = formatter.format(record)
    line.encode("utf-8")  # never a UnicodeEncodeError in the handler
    entry = json.loads(line)
    assert entry["msg"] == f"msg {LONE}" and entry["detail"] == f"detail {LONE}"
    assert entry["exc"].rstrip().endswith("ValueError: the real error line")


# -- the openai engine and the breaker ---------------------------------------------------------------


def _runner(base_url: str, **fallback: Any) -> tuple[PassRunner, OpenAIEngine]:
    settings = load_settings(openai={"base_url": base_url, "model_extract": "m", "model_render": "m"},
                             fallback=fallback or {})
    engine = OpenAIEngine(settings.openai)
    runner = PassRunner({"openai": engine}, failure_threshold=3, cooldown_s=settings.fallback.cooldown_s)
    return runner, engine


def test_surrogate_text_reaches_the_upstream_and_client_faults_never_open_the_breaker(scripted_upstream: Any
                                                                                      ) -> None:
    seen: list[str] = []

    def answer(body: dict[str, Any]) -> tuple[int, Any, float]:
        turn = json.loads(body["messages"][-1]["content"])
        seen.append(turn["event_payload"]["text"])
        if "refuse" in turn["event_payload"]["text"]:  # the upstream refuses this input (a client fault)
            return 400, {"error": {"message": "invalid input", "type": "invalid_request_error"}}, 0.0
        return 200, completion(json.dumps(oracle_extract(turn))), 0.0

    async def scenario(base_url: str) -> None:
        runner, engine = _runner(base_url)
        await engine.start()
        try:
            for _ in range(5):  # the same text, five times: sent, answered, never a breaker failure
                served = await runner.extract(TURN, "openai")
                assert not served.fallback_used, served.error
            refused = {**TURN, "event_payload": {"text": f"refuse {LONE}"}}
            for _ in range(5):
                served = await runner.extract(refused, "openai")
                assert served.fallback_reason == "error" and "HTTP 400" in (served.error or "")
            assert runner.breakers[("openai", "extract")].state == "closed"
            assert not (await runner.extract(TURN, "openai")).fallback_used
        finally:
            await engine.aclose()

    with scripted_upstream(answer) as up:
        asyncio.run(scenario(up.base_url))
    assert seen.count(TEXT) == 6 and len(seen) == 11  # every call reached the upstream


def test_upstream_failures_still_open_the_breaker(scripted_upstream: Any) -> None:
    def answer(body: dict[str, Any]) -> tuple[int, Any, float]:
        return 503, {"error": {"message": "overloaded"}}, 0.0

    async def scenario(base_url: str) -> list[str | None]:
        runner, engine = _runner(base_url, cooldown_s=60)
        await engine.start()
        try:
            return [(await runner.extract(TURN, "openai")).fallback_reason for _ in range(5)]
        finally:
            await engine.aclose()

    with scripted_upstream(answer) as up:
        reasons = asyncio.run(scenario(up.base_url))
    assert reasons == ["error"] * 3 + ["circuit_open"] * 2


def test_shadow_breaker_opens_on_a_hanging_upstream_and_recovers(scripted_upstream: Any, tmp_path: Path) -> None:
    state = {"hang": True}

    def answer(body: dict[str, Any]) -> tuple[int, Any, float]:
        turn = json.loads(body["messages"][-1]["content"])
        return 200, completion(json.dumps(oracle_extract(turn))), (10.0 if state["hang"] else 0.0)

    async def run_once(shadow: ShadowRunner, live: PassRunner, i: int) -> dict[str, Any]:
        served = await live.extract(TURN, "deterministic")
        assert shadow.submit("extract", f"r{i}", TURN, served)
        await shadow.flush(30)
        return read_store(shadow.settings.store).records[-1]

    async def scenario(base_url: str) -> tuple[list[str | None], list[str | None]]:
        settings = load_settings(
            openai={"base_url": base_url, "model_extract": "m", "model_render": "m"},
            fallback={"failure_threshold": 3, "cooldown_s": 0.3},
            shadow={"enabled": True, "engine": "openai", "passes": ["extract"], "timeout_ms": 150,
                    "store": f"sqlite:///{tmp_path}/s.db"})
        live = PassRunner({})
        shadow = ShadowRunner(settings, live)
        await shadow.start()
        try:
            hanging = [(await run_once(shadow, live, i))["fallback_reason"] for i in range(5)]
            # half-open trials while the upstream still hangs: each times out and re-opens the breaker
            for i in range(2):
                await asyncio.sleep(0.35)
                assert (await run_once(shadow, live, 10 + i))["fallback_reason"] == "timeout"
            state["hang"] = False
            after: list[str | None] = []
            for i in range(40):  # hang guard: the breaker must close again within its cooldowns
                await asyncio.sleep(0.35)
                after.append((await run_once(shadow, live, 20 + i))["fallback_reason"])
                if after[-3:] == [None, None, None]:
                    break
            return hanging, after
        finally:
            await shadow.close()

    with scripted_upstream(answer) as up:
        hanging, after = asyncio.run(scenario(up.base_url))
    assert hanging == ["timeout"] * 3 + ["circuit_open"] * 2
    assert after[-3:] == [None, None, None], after


@pytest.mark.parametrize("cap_kib", [4])
def test_upstream_answer_over_the_byte_cap_falls_back(scripted_upstream: Any, cap_kib: int) -> None:
    def answer(body: dict[str, Any]) -> tuple[int, Any, float]:  # finding 10: a huge answer, cut at the cap
        return 200, completion(json.dumps({"slot_updates": {}, "pad": "x" * (256 * 1024)})), 0.0

    async def scenario(base_url: str) -> Any:
        settings = load_settings(openai={"base_url": base_url, "max_response_bytes": cap_kib * 1024})
        engine = OpenAIEngine(settings.openai)
        await engine.start()
        try:
            return await PassRunner({"openai": engine}).extract(TURN, "openai")
        finally:
            await engine.aclose()

    with scripted_upstream(answer) as up:
        served = asyncio.run(scenario(up.base_url))
    assert served.fallback_used and served.fallback_reason == "truncated"
    assert "exceeds the cap" in (served.error or "")
