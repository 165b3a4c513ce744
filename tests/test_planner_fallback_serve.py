"""``fallback.serve``: ``error`` answers 503 (OpenAI error shape, the reason in ``error.code`` and
``X-Fallback-Reason``) on every fallback reason, on every pass endpoint; ``oracle`` (the default) serves
the deterministic answer as before. Also ``llm_contract.fallback_detail``, the access log, ``travel-slm
predict``'s stderr, and the request deadline header (``X-Request-Timeout-Ms``).

The failing engine is the real ``openai`` engine against small scripted HTTP upstreams."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from engines.deterministic.extract import extract as oracle_extract
from engines.deterministic.render import render as oracle_render
from tests.conftest import REPO, completion

TURN = {"event_type": "user_message", "event_payload": {"text": "hotels in Paris for 2 adults"},
        "slot_state": {"check_in_date": "2026-05-01", "check_out_date": "2026-05-04"}}
EXTRACTION = oracle_extract(TURN)
SCHEMA_INVALID = {"slot_updates": {"nights": "three"}, "tool_requests": [], "render_intent": {"kind": "summary"}}
OUT_OF_VOCAB = {"slot_updates": {}, "tool_requests": [{"tool": "mcp/amadeus.search_hotels", "arguments": {}}],
                "render_intent": {"kind": "show_hotels"}}
BAD_WIDGET = {"bot_message": "x", "widgets": [{"schema_version": 1, "widget_type": "hologram", "variant": "default",
                                               "payload": {}}]}

Reply = tuple[int, Any, float]


def _reply(pass_doc: dict[str, Any]) -> Callable[[dict[str, Any]], Reply]:
    def answer(body: dict[str, Any]) -> Reply:
        return 200, completion(json.dumps(pass_doc)), 0.0
    return answer


def _per_pass(extract_doc: Any, render_doc: Any, **kw: Any) -> Callable[[dict[str, Any]], Reply]:
    def answer(body: dict[str, Any]) -> Reply:
        is_render = body.get("model") == "travel-render"
        doc = render_doc if is_render else extract_doc
        return 200, completion(doc if isinstance(doc, str) else json.dumps(doc), **kw), 0.0
    return answer


#: reason -> (upstream behaviour, extra settings, X-Engine header)
CASES: dict[str, tuple[Callable[[dict[str, Any]], Reply], dict[str, Any], str | None]] = {
    "error": (lambda body: (500, {"error": {"message": "upstream exploded", "type": "server_error"}}, 0.0), {}, None),
    "timeout": (lambda body: (200, completion(json.dumps(EXTRACTION)), 1.0),
                {"openai": {"timeout_ms_extract": 150, "timeout_ms_render": 150}}, None),
    "invalid_json": (_per_pass("{not json at all", "[1, 2"), {}, None),
    "schema_invalid": (_per_pass(SCHEMA_INVALID, {"bot_message": "x", "widgets": []}), {}, None),
    "truncated": (_per_pass('{"slot_updates": {"region": {"label": "Par', '{"bot_message": "Her',
                            finish_reason="length"), {}, None),
    "out_of_vocab": (_per_pass(OUT_OF_VOCAB, BAD_WIDGET), {}, None),
    "unavailable": (_reply(EXTRACTION), {}, "slm"),  # the slm engine is not configured on this server
    "circuit_open": (lambda body: (503, {"error": {"message": "overloaded"}}, 0.0),
                     {"fallback": {"failure_threshold": 1, "cooldown_s": 60}}, None),
}


def _settings(base_url: str, serve: str, extra: dict[str, Any]) -> dict[str, Any]:
    extra = json.loads(json.dumps(extra))
    return {"extraction_engine": "openai", "render_engine": "openai",
            "openai": {"base_url": base_url, "model_extract": "travel-extract", "model_render": "travel-render",
                       **extra.pop("openai", {})},
            "fallback": {"serve": serve, "failure_threshold": 1000, **extra.pop("fallback", {})}, **extra}


def _prime(base: str, reason: str, headers: dict[str, str], path: str, body: dict[str, Any]) -> None:
    if reason == "circuit_open":  # one failure opens the circuit (threshold 1); the next call skips the engine
        httpx.post(base + path, json=body, headers=headers, timeout=10)


def _check_503(r: httpx.Response, reason: str, pass_: str) -> None:
    assert r.status_code == 503, r.text
    assert r.headers["X-Fallback-Reason"] == reason
    error = r.json()["error"]
    assert set(error) >= {"message", "type", "param", "code"}
    assert error["code"] == reason and error["fallback_reason"] == reason and error["type"] == "server_error"
    assert error["pass"] == pass_
    detail = error["fallback_detail"]
    assert isinstance(detail, str) and detail and "\n" not in detail and len(detail) <= 300


@pytest.mark.parametrize("reason", list(CASES))
def test_serve_error_is_503_with_the_reason(live_server: Any, scripted_upstream: Any, reason: str) -> None:
    answer, extra, engine = CASES[reason]
    headers = {"X-Engine": engine} if engine else {}
    with scripted_upstream(answer) as up:
        base = live_server(_settings(up.base_url, "error", extra))
        _prime(base, reason, headers, "/extract", {"turn": TURN})
        _check_503(httpx.post(base + "/extract", json={"turn": TURN}, headers=headers, timeout=10), reason, "extract")
        _check_503(httpx.post(base + "/extract_turn/", json={"turn": TURN}, headers=headers, timeout=10), reason,
                   "extract")

        render_body = {"turn": TURN, "extraction": EXTRACTION}
        _prime(base, reason, headers, "/render", render_body)
        _check_503(httpx.post(base + "/render", json=render_body, headers=headers, timeout=10), reason, "render")
        # without an extraction the extract pass runs first: its fallback is the one reported
        _check_503(httpx.post(base + "/render", json={"turn": TURN}, headers=headers, timeout=10), reason, "extract")

        from openai import APIStatusError, OpenAI

        client = OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0)
        with pytest.raises(APIStatusError) as info:
            client.chat.completions.create(model="travel-extract", messages=[{"role": "user",
                                                                              "content": json.dumps(TURN)}],
                                           extra_headers=headers)
        assert info.value.status_code == 503 and info.value.code == reason
        assert info.value.response.headers["X-Fallback-Reason"] == reason
        # a 503 is a request outcome like any other
        metrics = httpx.get(base + "/metrics").text
        assert any(ln.startswith("travel_slm_requests_total{") and 'status="503"' in ln for ln in metrics.splitlines())


@pytest.mark.parametrize("reason", list(CASES))
def test_serve_oracle_is_unchanged(live_server: Any, scripted_upstream: Any, reason: str) -> None:
    answer, extra, engine = CASES[reason]
    headers = {"X-Engine": engine} if engine else {}
    with scripted_upstream(answer) as up:
        base = live_server(_settings(up.base_url, "oracle", extra))
        _prime(base, reason, headers, "/extract", {"turn": TURN})
        r = httpx.post(base + "/extract", json={"turn": TURN}, headers=headers, timeout=10)
        assert r.status_code == 200 and r.headers["X-Fallback-Reason"] == reason
        body = r.json()
        assert body["extract"] == EXTRACTION
        contract = body["llm_contract"]
        assert contract["fallback_used"] is True and contract["fallback_reason"] == reason
        assert isinstance(contract["fallback_detail"], str) and "\n" not in contract["fallback_detail"]

        _prime(base, reason, headers, "/render", {"turn": TURN, "extraction": EXTRACTION})
        r = httpx.post(base + "/render", json={"turn": TURN, "extraction": EXTRACTION}, headers=headers, timeout=10)
        assert r.status_code == 200
        assert r.json()["render"] == oracle_render(TURN, EXTRACTION)
        assert r.json()["llm_contract"]["fallback_reason"] == reason


def test_default_is_oracle_and_a_healthy_engine_is_served_under_error(live_server: Any, scripted_upstream: Any) -> None:
    from core.settings import load_settings

    assert load_settings().fallback.serve == "oracle"
    with scripted_upstream(_per_pass(EXTRACTION, oracle_render(TURN, EXTRACTION))) as up:
        base = live_server(_settings(up.base_url, "error", {}))
        r = httpx.post(base + "/render", json={"turn": TURN}, timeout=10)
        assert r.status_code == 200 and r.headers["X-Fallback-Reason"] == "none"
        assert r.json()["llm_contract"] == {**r.json()["llm_contract"], "engine": "openai", "fallback_used": False,
                                            "fallback_detail": None}


def test_fallback_detail_is_redacted_and_in_the_access_log(live_server: Any, scripted_upstream: Any,
                                                           caplog: Any) -> None:
    leaked = "call me on +1 415 555 0100 or mail alex@example.com, key sk-test-SECRETSECRET"

    def answer(body: dict[str, Any]) -> Reply:
        return 200, completion("{not json " + leaked), 0.0

    with scripted_upstream(answer) as up:
        base = live_server(_settings(up.base_url, "oracle", {}), env={"OPENAI_API_KEY": "sk-test-SECRETSECRET"})
        with caplog.at_level(logging.INFO, logger="travel_slm.access"):
            r = httpx.post(base + "/extract", json={"turn": TURN}, headers={"X-Request-Id": "detail-1"}, timeout=10)
            time.sleep(0.1)
    detail = r.json()["llm_contract"]["fallback_detail"]
    assert r.json()["llm_contract"]["fallback_reason"] == "invalid_json" and detail
    records = [rec for rec in caplog.records if rec.name == "travel_slm.access"
               and getattr(rec, "request_id", None) == "detail-1"]
    assert records and records[0].fallback_detail == detail and records[0].fallback_reason == "invalid_json"
    for text in (detail, json.dumps(records[0].__dict__, default=str)):
        assert "alex@example.com" not in text and "555 0100" not in text and "SECRETSECRET" not in text


# --- the request deadline ---------------------------------------------------------------------------------


def _slow(delay: float) -> Callable[[dict[str, Any]], Reply]:
    return lambda body: (200, completion(json.dumps(EXTRACTION)), delay)


@pytest.mark.parametrize("serve", ["oracle", "error"])
def test_the_pass_ends_before_the_callers_deadline(live_server: Any, scripted_upstream: Any, serve: str) -> None:
    """The planner's 2-in-20 case: client timeout == server pass timeout. With the header the pass is cut
    at the caller's deadline less the margin, not at the (longer) pass timeout: the answer is a 200
    fallback, or the 503 under serve=error, saying so. Asserted on what the server reports, not on the
    wall clock of this (possibly busy) machine."""
    with scripted_upstream(_slow(3.0)) as up:
        base = live_server(_settings(up.base_url, serve, {"openai": {"timeout_ms_extract": 2500}}))
        r = httpx.post(base + "/extract", json={"turn": TURN}, headers={"X-Request-Timeout-Ms": "1000"},
                       timeout=30)
    assert r.headers["X-Fallback-Reason"] == "timeout"
    # 1000 ms budget, margin max(deadline_margin_ms, 10%): the pass had at most 900 ms, never the 2500 ms timeout
    if serve == "error":
        assert r.status_code == 503
        detail = r.json()["error"]["fallback_detail"]
    else:
        assert r.status_code == 200
        detail = r.json()["llm_contract"]["fallback_detail"]
        assert r.json()["extract"] == EXTRACTION
    assert "request deadline" in detail and "exceeded 2500 ms" not in detail, detail
    left = int(detail.split("request deadline (")[1].split(" ms left")[0])
    assert 0 <= left <= 900, detail


def test_without_the_header_the_pass_timeout_alone_applies(live_server: Any, scripted_upstream: Any) -> None:
    with scripted_upstream(_slow(0.3)) as up:
        base = live_server(_settings(up.base_url, "oracle", {"openai": {"timeout_ms_extract": 2000}}))
        r = httpx.post(base + "/extract", json={"turn": TURN}, timeout=5)
        assert r.json()["llm_contract"]["fallback_used"] is False
        # the same slow answer with a budget it cannot meet: cut at the deadline, not the pass timeout
        r = httpx.post(base + "/extract", json={"turn": TURN}, headers={"X-Request-Timeout-Ms": "200"}, timeout=5)
        assert r.json()["llm_contract"]["fallback_reason"] == "timeout"


def test_passes_cut_by_callers_deadlines_do_not_open_the_breaker(live_server: Any, scripted_upstream: Any) -> None:
    """A caller's short budget is the caller's: four passes cut at their deadline leave the breaker closed
    (it opens after three engine failures), so the next caller is served by the engine, not circuit_open."""
    with scripted_upstream(_slow(0.4)) as up:
        base = live_server(_settings(up.base_url, "oracle", {"openai": {"timeout_ms_extract": 5000},
                                                             "fallback": {"failure_threshold": 3}}))
        for _ in range(4):
            r = httpx.post(base + "/extract", json={"turn": TURN}, headers={"X-Request-Timeout-Ms": "150"}, timeout=10)
            assert r.headers["X-Fallback-Reason"] == "timeout" and "request deadline" in \
                r.json()["llm_contract"]["fallback_detail"]
        r = httpx.post(base + "/extract", json={"turn": TURN}, timeout=10)
        assert r.json()["llm_contract"]["fallback_used"] is False, r.json()["llm_contract"]


@pytest.mark.parametrize("value", ["soon", "0", "-5", "1e12"])
def test_a_bad_deadline_header_is_400_naming_it(default_server: str, value: str) -> None:
    r = httpx.post(default_server + "/extract", json={"turn": TURN}, headers={"X-Request-Timeout-Ms": value})
    assert r.status_code == 400 and "X-Request-Timeout-Ms" in r.json()["detail"]


def test_the_deterministic_engine_ignores_the_deadline(default_server: str) -> None:
    r = httpx.post(default_server + "/render", json={"turn": TURN}, headers={"X-Request-Timeout-Ms": "1"})
    assert r.status_code == 200 and r.json()["llm_contract"]["fallback_used"] is False


# --- travel-slm predict -------------------------------------------------------------------------------------


def _predict(base_url: str, serve: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "TRAVEL_SLM_OPENAI__BASE_URL": base_url,
           "TRAVEL_SLM_OPENAI__MODEL_EXTRACT": "travel-extract", "TRAVEL_SLM_FALLBACK__SERVE": serve}
    return subprocess.run([sys.executable, "-m", "server.cli", "predict", "--pass", "extract", "--engine", "openai"],
                          input=json.dumps(TURN), capture_output=True, text=True, cwd=REPO, env=env, timeout=120,
                          check=False)


def test_predict_reports_the_fallback_on_stderr(scripted_upstream: Any) -> None:
    answer = CASES["schema_invalid"][0]
    with scripted_upstream(answer) as up:
        oracle = _predict(up.base_url, "oracle")
        error = _predict(up.base_url, "error")
    assert oracle.returncode == 0 and json.loads(oracle.stdout) == EXTRACTION
    assert "extract pass fell back (schema_invalid): " in oracle.stderr and "nights" in oracle.stderr
    assert error.returncode == 1 and error.stdout == ""
    assert "extract pass fell back (schema_invalid)" in error.stderr
