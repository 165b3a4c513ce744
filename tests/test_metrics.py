"""``/metrics`` (docs/metrics.md): parsed with prometheus-client's parser; histograms move with traffic."""

from __future__ import annotations

import itertools
import json
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from engines.fallback import Served
from server.metrics import LATENCY_BUCKETS, Metrics

TURN = {"event_type": "user_message", "event_payload": {"text": "flights to Miami"}, "slot_state": {}}


def _families(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def _value(families: dict[str, Any], family: str, sample: str, **labels: str) -> float:
    fam = families.get(family)
    if fam is None:
        return 0.0
    return sum(s.value for s in fam.samples if s.name == sample and all(s.labels.get(k) == v
                                                                       for k, v in labels.items()))


def test_metrics_parse_and_move_with_traffic(live_server: Any) -> None:
    base = live_server()
    before = _families(httpx.get(base + "/metrics").text)
    expected = {
        "travel_slm_request_duration_seconds", "travel_slm_requests", "travel_slm_fallback",
        "travel_slm_schema_invalid", "travel_slm_inflight", "travel_slm_generated_tokens",
        "travel_slm_time_to_first_token_seconds", "travel_slm_grammar_compile_seconds", "travel_slm_mask_seconds",
        "travel_slm_shadow_runs", "travel_slm_shadow_agreement", "travel_slm_shadow_duration_seconds",
    }
    assert expected <= set(before), expected - set(before)
    assert before["travel_slm_request_duration_seconds"].type == "histogram"
    assert before["travel_slm_requests"].type == "counter"
    assert before["travel_slm_inflight"].type == "gauge"

    for _ in range(5):
        assert httpx.post(base + "/extract", json={"turn": TURN}).status_code == 200
    for _ in range(3):
        assert httpx.post(base + "/render", json={"turn": TURN}).status_code == 200  # extract + render passes
    httpx.post(base + "/extract", json={"turn": {"event_payload": 1}})  # 422
    httpx.post(base + "/extract", json={"turn": TURN}, headers={"X-Engine": "slm"})  # fallback: unavailable
    httpx.post(base + "/v1/chat/completions", json={"model": "travel-render", "messages": [
        {"role": "user", "content": json.dumps({"turn": TURN})}]})

    after = _families(httpx.get(base + "/metrics").text)
    hist = "travel_slm_request_duration_seconds"
    ex_count = _value(after, hist, hist + "_count", **{"pass": "extract", "engine": "deterministic", "outcome": "ok"})
    rd_count = _value(after, hist, hist + "_count", **{"pass": "render", "engine": "deterministic", "outcome": "ok"})
    assert ex_count == 5 + 3 + 1  # /extract x5, the extract-first of /render x3, the chat render x1
    assert rd_count == 3 + 1
    assert _value(after, hist, hist + "_sum", **{"pass": "extract"}) > 0
    # cumulative buckets: monotone, and +Inf equals the count
    buckets = sorted((float(s.labels["le"]), s.value) for s in after[hist].samples
                      if s.name == hist + "_bucket" and s.labels["pass"] == "extract"
                      and s.labels["engine"] == "deterministic" and s.labels["outcome"] == "ok")
    assert [b[0] for b in buckets][:-1] == list(LATENCY_BUCKETS) and buckets[-1][0] == float("inf")
    assert all(a[1] <= b[1] for a, b in itertools.pairwise(buckets))
    assert buckets[-1][1] == ex_count

    req = "travel_slm_requests"
    assert _value(after, req, req + "_total", **{"pass": "extract", "status": "200"}) == 6
    assert _value(after, req, req + "_total", **{"pass": "extract", "status": "422"}) == 1
    assert _value(after, req, req + "_total", **{"pass": "render", "engine": "deterministic", "status": "200"}) == 4
    fb = "travel_slm_fallback"
    assert _value(after, fb, fb + "_total", **{"pass": "extract", "engine": "slm", "reason": "unavailable"}) == 1
    assert _value(after, "travel_slm_inflight", "travel_slm_inflight") == 0

    # label values stay in bounded sets
    for family in after.values():
        for sample in family.samples:
            for key, value in sample.labels.items():
                assert len(value) <= 32, (family.name, key, value)
            if "engine" in sample.labels:
                assert sample.labels["engine"] in {"deterministic", "slm", "openai", "none", "other"}


def test_metrics_methods_for_shadow_and_slm() -> None:
    m = Metrics()
    m.shadow_run("extract", "compared")
    m.shadow_run("render", "dropped")
    m.shadow_run("render", "something-unbounded")
    m.shadow_agreement("extract", "tool_match", True)
    m.shadow_agreement("extract", "slot_match", False)
    m.shadow_agreement("extract", "free text field", True)
    m.shadow_duration("extract", "slm", 0.012)
    m.grammar_compile("render", "transformers", 0.4)
    served = Served("extract", {}, "slm", "transformers", "smollm2", completion_tokens=40, time_to_first_token_s=0.02,
                    latency_ms=120.0, extra={"mask_seconds": 0.004, "model_steps": 20})
    m.observe_served(served)
    fams = _families(m.render()[0].decode())
    runs = "travel_slm_shadow_runs"
    assert _value(fams, runs, runs + "_total", **{"pass": "extract", "outcome": "compared"}) == 1
    assert _value(fams, runs, runs + "_total", **{"pass": "render", "outcome": "other"}) == 1
    agr = "travel_slm_shadow_agreement"
    assert _value(fams, agr, agr + "_total", field="tool_match", result="match") == 1
    assert _value(fams, agr, agr + "_total", field="slot_match", result="mismatch") == 1
    assert _value(fams, agr, agr + "_total", field="other") == 1
    dur = "travel_slm_shadow_duration_seconds"
    assert _value(fams, dur, dur + "_count", engine="slm") == 1
    tok = "travel_slm_generated_tokens"
    assert _value(fams, tok, tok + "_total", **{"pass": "extract", "adapter": "transformers"}) == 40
    mask = "travel_slm_mask_seconds"
    assert _value(fams, mask, mask + "_count", adapter="transformers") == 1
    assert abs(_value(fams, mask, mask + "_sum", adapter="transformers") - 0.0002) < 1e-9  # per-token mean
    ttft = "travel_slm_time_to_first_token_seconds"
    assert _value(fams, ttft, ttft + "_count", **{"pass": "extract"}) == 1
    assert _value(fams, "travel_slm_grammar_compile_seconds", "travel_slm_grammar_compile_seconds_count") == 1

    latency = m.collect_stats()["latency"]["extract"]["slm"]  # /v1/stats' figures since start
    assert latency["count"] == 1
    assert latency["p50_ms"] == latency["p95_ms"] == 120.0  # the sketch's nearest rank: the observed value


def test_each_app_has_its_own_registry() -> None:
    a, b = Metrics(), Metrics()
    a.shadow_run("extract", "compared")
    fams = _families(b.render()[0].decode())
    assert _value(fams, "travel_slm_shadow_runs", "travel_slm_shadow_runs_total") == 0


# --- circuit state and process metrics (issue 12, item 5) -------------------------------------------------


def _circuits(base: str) -> dict[tuple[str, str], float]:
    fams = _families(httpx.get(base + "/metrics").text)
    family = fams["travel_slm_circuit_state"]
    assert family.type == "gauge"
    return {(s.labels["engine"], s.labels["pass"]): s.value for s in family.samples}


def test_circuit_state_gauge_follows_the_breaker(live_server: Any, scripted_upstream: Any) -> None:
    """A real openai engine against an upstream that fails, then answers: 0 closed, 2 open, 1 half-open."""
    from engines.deterministic.extract import extract as oracle_extract
    from tests.conftest import completion

    upstream_ok = {"value": False}

    def answer(body: dict[str, Any]) -> tuple[int, Any, float]:
        if not upstream_ok["value"]:
            return 500, {"error": {"message": "upstream down"}}, 0.0
        turn = json.loads(body["messages"][-1]["content"])
        return 200, completion(json.dumps(oracle_extract(turn))), 0.0

    with scripted_upstream(answer) as up:
        def server(cooldown_s: float) -> str:
            return live_server({"extraction_engine": "openai", "openai": {"base_url": up.base_url},
                                "fallback": {"failure_threshold": 2, "cooldown_s": cooldown_s}})

        # open: a cooldown far longer than the test, so the state cannot move on by itself
        base = server(3600.0)
        assert _circuits(base) == {("openai", "extract"): 0, ("openai", "render"): 0}
        for _ in range(2):
            r = httpx.post(base + "/extract", json={"turn": TURN}, timeout=30)
            assert r.json()["llm_contract"]["fallback_reason"] == "error"
        assert _circuits(base) == {("openai", "extract"): 2, ("openai", "render"): 0}
        health = httpx.get(base + "/healthz").json()
        assert health["engines"]["openai"]["circuit"] == {"extract": "open", "render": "closed"}
        r = httpx.post(base + "/extract", json={"turn": TURN}, timeout=30)
        assert r.json()["llm_contract"]["fallback_reason"] == "circuit_open"
        fb = "travel_slm_fallback"
        after = _families(httpx.get(base + "/metrics").text)
        assert _value(after, fb, fb + "_total", **{"pass": "extract", "reason": "circuit_open"}) == 1

        # half-open: no cooldown, so an opened circuit lets the next call try at once; a success closes it
        base = server(0.0)
        for _ in range(2):
            httpx.post(base + "/extract", json={"turn": TURN}, timeout=30)
        assert _circuits(base)[("openai", "extract")] == 1
        upstream_ok["value"] = True
        r = httpx.post(base + "/extract", json={"turn": TURN}, timeout=30)
        assert r.json()["llm_contract"]["fallback_used"] is False
        assert _circuits(base)[("openai", "extract")] == 0


def test_circuit_state_is_absent_without_a_model_engine(default_server: str) -> None:
    assert _circuits(default_server) == {}  # the deterministic engine has no breaker


def test_process_metrics_are_exported(default_server: str) -> None:
    import sys
    import time

    import pytest

    if not sys.platform.startswith("linux"):
        pytest.skip("prometheus-client's process collector reads /proc (Linux only)")
    fams = _families(httpx.get(default_server + "/metrics").text)
    for name in ("process_cpu_seconds", "process_resident_memory_bytes", "process_start_time_seconds",
                 "process_open_fds", "process_max_fds", "process_virtual_memory_bytes"):
        assert name in fams, name
    assert _value(fams, "process_resident_memory_bytes", "process_resident_memory_bytes") > 0
    started = _value(fams, "process_start_time_seconds", "process_start_time_seconds")
    assert 0 < started <= time.time()


def test_shadow_store_up_is_absent_until_the_store_reports() -> None:
    """Without shadow mode there is no store: no series, rather than a 0 that reads as a store fault."""
    m = Metrics()
    assert "travel_slm_shadow_store_up" not in _families(m.render()[0].decode())
    m.shadow_store_up(False)
    fams = _families(m.render()[0].decode())
    assert _value(fams, "travel_slm_shadow_store_up", "travel_slm_shadow_store_up") == 0
    m.shadow_store_up(True)
    fams = _families(m.render()[0].decode())
    assert _value(fams, "travel_slm_shadow_store_up", "travel_slm_shadow_store_up") == 1


# --- latency buckets (issue 11, small HTTP fixes) and invalid input vs oracle defects (issue 11, item 12) ---------


def _histogram_quantile(q: float, cumulative: list[tuple[float, float]]) -> float:
    """Prometheus' histogram_quantile over cumulative (le, count) pairs, as Grafana and the alerts read them."""
    total = cumulative[-1][1]
    rank, prev_le, prev_count = q * total, 0.0, 0.0
    for le, count in cumulative:
        if count >= rank:
            if le == float("inf"):
                return prev_le
            return prev_le + (le - prev_le) * (rank - prev_count) / (count - prev_count)
        prev_le, prev_count = le, count
    return prev_le


def test_latency_histogram_resolves_the_deterministic_path(live_server: Any) -> None:
    """The old buckets started at 0.5 ms: a deterministic pass of microseconds fell in [0, 0.5 ms] and read p50
    0.25 ms. The bucket that holds the histogram's p50 must pin the served passes' own p50 (``latency_ms`` of the
    responses, 0.1 ms steps): at most 2.5x wide and not open towards 0, or under a microsecond when the passes
    round to 0.0 ms, whatever the machine's speed."""
    from core.stats import percentile

    base = live_server()
    served_ms = []
    with httpx.Client(base_url=base, timeout=30) as client:
        for _ in range(120):
            r = client.post("/extract", json={"turn": TURN})
            served_ms.append(r.json()["latency_ms"])
    fams = _families(httpx.get(base + "/metrics").text)
    hist = "travel_slm_request_duration_seconds"
    cumulative = sorted((float(s.labels["le"]), s.value) for s in fams[hist].samples
                        if s.name == hist + "_bucket" and s.labels["pass"] == "extract")
    assert cumulative[-1][1] == 120
    lower, upper = 0.0, 0.0
    for le, count in cumulative:
        if count >= 0.5 * 120:
            upper = le
            break
        lower = le
    exact = percentile(served_ms, 50)
    assert exact is not None
    if exact == 0.0:
        # the pass took under 0.05 ms (latency_ms rounds it to 0.0); the histogram, fed the unrounded time,
        # places the median in a sub-0.1 ms bucket no wider than 2.5x
        assert 0 < upper <= 1e-4 and (lower == 0 or upper / lower <= 2.5), (lower, upper)
    else:
        # latency_ms is rounded to 0.1 ms: the true p50 lies within 0.05 ms of it
        assert lower > 0 and upper / lower <= 2.5, (lower, upper, exact)
        assert lower * 1000 - 0.05 <= exact <= upper * 1000 + 0.05, (lower, upper, exact)
    p50_ms = _histogram_quantile(0.5, cumulative) * 1000.0
    assert lower * 1000 <= p50_ms <= upper * 1000
    assert LATENCY_BUCKETS[0] <= 1e-6 and LATENCY_BUCKETS[-1] >= 30.0  # microseconds to tens of seconds


def _invalid(fams: dict[str, Any], **labels: str) -> float:
    return _value(fams, "travel_slm_schema_invalid", "travel_slm_schema_invalid_total", **labels)


def test_schema_invalid_separates_client_input_from_oracle_defects() -> None:
    m = Metrics()
    # the oracle echoed nonsense slot values (the runner classified the input): a client fault
    m.observe_served(Served("extract", {}, "deterministic", "none", "oracle", schema_valid=False,
                            extra={"invalid_cause": "input"}))
    # the oracle failed on valid input, or nobody classified it: a defect (nothing that may be one goes unseen)
    m.observe_served(Served("extract", {}, "deterministic", "none", "oracle", schema_valid=False,
                            extra={"invalid_cause": "oracle"}))
    m.observe_served(Served("render", {}, "deterministic", "none", "oracle", schema_valid=False))
    m.observe_served(Served("render", {}, "deterministic", "none", "oracle", schema_valid=False,
                            extra={"invalid_cause": "anything else"}))
    # a model's invalid output fell back to a valid oracle document; then one whose fallback echoed bad input
    m.observe_served(Served("extract", {}, "slm", "transformers", "m", fallback_used=True,
                            fallback_reason="schema_invalid"))
    m.observe_served(Served("render", {}, "openai", "http", "m", fallback_used=True, fallback_reason="out_of_vocab",
                            schema_valid=False, extra={"invalid_cause": "input"}))
    fams = _families(m.render()[0].decode())
    assert _invalid(fams, cause="input") == 2
    assert _invalid(fams, cause="oracle") == 3
    assert _invalid(fams, cause="model") == 2
    assert _invalid(fams, engine="openai", cause="input") == 1 and _invalid(fams, engine="openai", cause="model") == 1
    assert m.collect_stats()["schema_invalid"] == {"total": 7, "by_cause": {"input": 2, "model": 2, "oracle": 3}}
