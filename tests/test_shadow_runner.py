"""ShadowRunner against real engines, the real PassRunner and a real SQLite store."""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from contracts.turn import Turn
from core.settings import Settings, ShadowSettings
from engines.agreement import FIELDS, turn_class
from engines.base import Engine
from engines.deterministic.engine import DeterministicEngine
from engines.fallback import PassRunner, Served
from engines.shadow.record import RECORD_KIND
from engines.shadow.runner import PENDING_MAX, ShadowRunner
from engines.shadow.store import read_store
from tests.reference import all_records, require_reference
from tests.test_shadow_engines import CrashingEngine, FailingEngine, GatedEngine, SleepyEngine

RECORD_FIELDS = {
    "kind", "ts", "request_id", "pass", "live_engine", "shadow_engine", "turn", "live_extract", "live_render",
    "shadow_extract", "shadow_render", "chosen", "agreement", "schema_valid", "live_latency_ms",
    "shadow_latency_ms", "fell_back", "error", "live_widget_types", "shadow_widget_types", "class",
}


class RecordingMetrics:
    """The three shadow methods of server.metrics.Metrics, counted."""

    def __init__(self) -> None:
        self.runs: Counter[tuple[str, str]] = Counter()
        self.agreement: Counter[tuple[str, str, bool]] = Counter()
        self.durations: list[tuple[str, str, float]] = []

    def shadow_run(self, pass_: str, outcome: str) -> None:
        self.runs[(pass_, outcome)] += 1

    def shadow_agreement(self, pass_: str, field: str, match: bool) -> None:
        self.agreement[(pass_, field, match)] += 1

    def shadow_duration(self, pass_: str, engine: str, seconds: float) -> None:
        self.durations.append((pass_, engine, seconds))


def _turns(n: int) -> list[dict[str, Any]]:
    require_reference()
    records = all_records()
    step = max(1, len(records) // n)
    return [Turn.model_validate(r["input"]).engine_input() for r in records[::step][:n]]


def _settings(tmp_path: Path, **kw: Any) -> ShadowSettings:
    base: dict[str, Any] = {"enabled": True, "engine": "slm", "store": f"sqlite:///{tmp_path}/shadow.db",
                            "timeout_ms": 60_000, "max_inflight": 1000}
    base.update(kw)
    return ShadowSettings(**base)


async def _serve(runner: PassRunner, shadow: ShadowRunner | None, turn: dict[str, Any], i: int
                 ) -> tuple[Served, Served]:
    """What the app does for one planner turn: a live extract and a live render, each then shadowed."""
    ex = await runner.extract(turn, "deterministic")
    if shadow is not None:
        shadow.submit("extract", f"ex-{i}", turn, ex)
    rd = await runner.render(turn, ex.document, None, "deterministic")
    if shadow is not None:
        shadow.submit("render", f"rd-{i}", turn, rd, ex.document)
    return ex, rd


def _visible(served: Served) -> dict[str, Any]:
    return {"document": served.document, "contract": served.llm_contract(), "schema_valid": served.schema_valid}


async def test_deterministic_shadow_agrees_on_every_field_over_200_reference_turns(tmp_path: Path) -> None:
    turns = _turns(200)
    metrics = RecordingMetrics()
    runner = PassRunner({})
    shadow = ShadowRunner(_settings(tmp_path, engine="deterministic"), runner, metrics)
    await shadow.start()
    expected_class = {}
    for i, turn in enumerate(turns):
        ex, _ = await _serve(runner, shadow, turn, i)
        expected_class[f"ex-{i}"] = expected_class[f"rd-{i}"] = turn_class(ex.document)
    await shadow.close()
    records = read_store(shadow.settings.store).records
    assert len(records) == 2 * len(turns) == 400
    assert Counter(r["pass"] for r in records) == {"extract": 200, "render": 200}
    for rec in records:
        assert set(rec) >= RECORD_FIELDS
        assert rec["kind"] == RECORD_KIND and rec["chosen"] == "live" and rec["fell_back"] is False
        assert rec["schema_valid"] is True and rec["error"] is None
        assert rec["class"] == expected_class[rec["request_id"]]
        expected_fields = FIELDS if rec["pass"] == "render" else FIELDS[:4]
        assert set(rec["agreement"]) == set(expected_fields)
        assert all(rec["agreement"].values()), rec["request_id"]
        if rec["pass"] == "render":
            assert rec["live_widget_types"] == rec["shadow_widget_types"] and rec["live_widget_types"]
            assert rec["live_extract"] == rec["shadow_extract"]
    assert metrics.runs == {("extract", "compared"): 200, ("render", "compared"): 200}
    assert sum(metrics.agreement.values()) == 200 * 4 + 200 * 6
    assert not any(match is False for (_, _, match) in metrics.agreement)
    assert len(metrics.durations) == 400 and {e for _, e, _ in metrics.durations} == {"deterministic"}


@pytest.mark.parametrize("kind", ["slow", "failing", "crashing"])
async def test_live_answers_do_not_change_or_wait_for_a_bad_shadow(tmp_path: Path, kind: str) -> None:
    turns = _turns(40)
    baseline_runner = PassRunner({})
    baseline = [await _serve(baseline_runner, None, t, i) for i, t in enumerate(turns)]

    engine: Engine = {"slow": GatedEngine, "failing": FailingEngine, "crashing": CrashingEngine}[kind]()
    runner = PassRunner({"slm": engine})
    metrics = RecordingMetrics()
    # a high breaker threshold keeps every run on the engine, so each record shows its own failure
    settings = Settings(shadow=_settings(tmp_path), fallback={"failure_threshold": 10_000})
    shadow = ShadowRunner(settings, runner, metrics)
    await shadow.start()
    served = [await _serve(runner, shadow, t, i) for i, t in enumerate(turns)]
    for (b_ex, b_rd), (s_ex, s_rd) in zip(baseline, served, strict=True):
        assert _visible(b_ex) == _visible(s_ex) and _visible(b_rd) == _visible(s_rd)

    if kind == "slow":
        # every live answer is out while every shadow run is still waiting on its gate
        await asyncio.sleep(0.05)
        assert isinstance(engine, GatedEngine) and engine.calls == 2 * len(turns)
        assert shadow.inflight == 2 * len(turns) and shadow.store.written == 0
        engine.gate.set()
    await shadow.close()
    records = read_store(shadow.settings.store).records
    assert len(records) == 2 * len(turns)
    if kind == "slow":
        assert all(all(r["agreement"].values()) and not r["fell_back"] for r in records)
        return
    assert all(r["fell_back"] for r in records)
    assert metrics.runs == {("extract", "fell_back"): len(turns), ("render", "fell_back"): len(turns)}
    ex_records = [r for r in records if r["pass"] == "extract"]
    rd_records = [r for r in records if r["pass"] == "render"]
    assert all(r["shadow_extract"] is None and not any(r["agreement"].values()) for r in ex_records)
    assert all(r["schema_valid"] is False for r in records)
    reasons = Counter((r["pass"], r["fallback_reason"]) for r in records)
    if kind == "failing":
        assert reasons == {("extract", "invalid_json"): len(turns), ("render", "schema_invalid"): len(turns)}
        assert all(r["shadow_render"] == {"bot_message": 42, "widgets": "none"} for r in rd_records)
    else:
        assert reasons == {("extract", "error"): len(turns), ("render", "error"): len(turns)}
        # the crash in model_for escapes the pass runner: the shadow runner's guard records it
        assert all("model_for" in r["error"] and len(r["error"]) <= 300 for r in rd_records)


async def test_the_shadow_circuit_breaker_skips_a_failing_engine(tmp_path: Path) -> None:
    runner = PassRunner({"slm": FailingEngine()})
    shadow = ShadowRunner(_settings(tmp_path, passes=["extract"]), runner, None)  # default: 3 failures, 5 s
    await shadow.start()
    turn = _turns(1)[0]
    live = await runner.extract(turn, "deterministic")
    for i in range(6):
        shadow.submit("extract", f"r{i}", turn, live)
        await shadow.flush()  # one after the other: the breaker sees consecutive failures
    await shadow.close()
    reasons = [r["fallback_reason"] for r in read_store(shadow.settings.store).records]
    assert reasons == ["invalid_json"] * 3 + ["circuit_open"] * 3


async def test_a_slower_shadow_run_is_recorded_as_fell_back(tmp_path: Path) -> None:
    runner = PassRunner({"slm": SleepyEngine()})
    metrics = RecordingMetrics()
    shadow = ShadowRunner(_settings(tmp_path, timeout_ms=30), runner, metrics)
    await shadow.start()
    for i, turn in enumerate(_turns(5)):
        await _serve(runner, shadow, turn, i)
    await shadow.close()
    records = read_store(shadow.settings.store).records
    assert len(records) == 10
    assert {(r["pass"], r["fallback_reason"]) for r in records} == {("extract", "timeout"), ("render", "timeout")}
    assert all("exceeded 30 ms" in r["error"] for r in records)
    assert metrics.runs == {("extract", "fell_back"): 5, ("render", "fell_back"): 5}


async def test_saturation_drops_and_counts_without_queueing(tmp_path: Path) -> None:
    engine = GatedEngine()
    runner = PassRunner({"slm": engine})
    metrics = RecordingMetrics()
    shadow = ShadowRunner(_settings(tmp_path, max_inflight=4), runner, metrics)
    await shadow.start()
    turn = _turns(1)[0]
    live = await runner.extract(turn, "deterministic")

    async def request(i: int) -> Served:  # 64 concurrent live requests, each shadowed
        served = await runner.extract(turn, "deterministic")
        assert shadow.submit("extract", f"r{i}", turn, served) in (True, False)
        assert shadow.inflight <= 4
        return served

    answers = await asyncio.gather(*(request(i) for i in range(64)))
    assert all(a.document == live.document and not a.fallback_used for a in answers)
    await _loop_turns(2)  # the runs start (and are admitted or dropped) on the next turns of the loop
    assert shadow.inflight == 4 and shadow.max_inflight_seen == 4
    assert shadow.counts["started"] == 4 and shadow.counts["dropped"] == 60
    assert metrics.runs[("extract", "dropped")] == 60
    # still bounded under more pressure
    for i in range(500):
        shadow.submit("extract", f"more{i}", turn, live)
    await _loop_turns(2)
    assert shadow.inflight == 4 and shadow.counts["dropped"] == 560 and shadow.pending == 4
    engine.gate.set()
    await shadow.close()
    contents = read_store(shadow.settings.store)
    assert len(contents.records) == 4 and contents.drops == {"extract": 560}
    assert metrics.runs == {("extract", "dropped"): 560, ("extract", "compared"): 4}


async def _loop_turns(n: int) -> None:
    """Let the event loop run ``n`` turns (a count of turns, not a duration)."""
    for _ in range(n):
        await asyncio.sleep(0)


async def test_runs_waiting_for_their_first_turn_are_bounded(tmp_path: Path) -> None:
    engine = GatedEngine()
    runner = PassRunner({"slm": engine})
    shadow = ShadowRunner(_settings(tmp_path, max_inflight=4), runner, None)
    await shadow.start()
    turn = _turns(1)[0]
    live = await runner.extract(turn, "deterministic")
    handed = [shadow.submit("extract", f"r{i}", turn, live) for i in range(PENDING_MAX + 500)]
    assert handed == [True] * PENDING_MAX + [False] * 500  # no loop turn in between: nothing started yet
    assert shadow.pending == PENDING_MAX and shadow.counts["dropped"] == 500
    await _loop_turns(2)
    assert shadow.inflight == 4 and shadow.pending == 4 and shadow.counts["dropped"] == PENDING_MAX + 500 - 4
    engine.gate.set()
    await shadow.close()
    contents = read_store(shadow.settings.store)
    assert len(contents.records) == 4 and contents.drops == {"extract": PENDING_MAX + 500 - 4}


async def test_a_deterministic_shadow_keeps_up_with_64_clients(tmp_path: Path) -> None:
    """Issue 11, finding 9: at the default in-flight limit, 64 clients whose requests all end in the same
    event-loop turn (as under load) had 93% of their shadow runs dropped: a run needed seven turns (a
    sleep(0), a wait_for task per pass) and every run spawned in a turn counted as in flight. A deterministic
    run now ends on the turn it starts, and only running runs hold a slot: none is dropped."""
    turns = _turns(64)
    runner = PassRunner({})
    shadow = ShadowRunner(_settings(tmp_path, engine="deterministic", max_inflight=ShadowSettings().max_inflight),
                          runner, None)
    await shadow.start()
    lives = [await runner.extract(t, "deterministic") for t in turns]
    submitted = 0
    for rounds in range(20):
        for i, (turn, live) in enumerate(zip(turns, lives, strict=True)):  # one loop turn: 64 answers end
            assert shadow.submit("extract", f"r{rounds}-{i}", turn, live)
            submitted += 1
        await _loop_turns(1)
        assert shadow.pending == 0 and shadow.inflight == 0  # every run of the turn has ended
        assert shadow.counts["compared"] == submitted
    await shadow.close()
    assert shadow.counts["dropped"] == 0 and shadow.max_inflight_seen == 1
    assert len(read_store(shadow.settings.store).records) == submitted == 20 * 64


async def test_sampling_follows_the_rate(tmp_path: Path) -> None:
    runner = PassRunner({})
    shadow = ShadowRunner(_settings(tmp_path, engine="deterministic", sample_rate=0.25), runner, None,
                          rng=random.Random(7))
    await shadow.start()
    turn = _turns(1)[0]
    live = await runner.extract(turn, "deterministic")
    started = [shadow.submit("extract", f"r{i}", turn, live) for i in range(400)]
    draws = random.Random(7)
    assert started == [draws.random() < 0.25 for _ in range(400)]
    await shadow.close()
    assert len(read_store(shadow.settings.store).records) == sum(started)
    assert shadow.counts["sampled_out"] == 400 - sum(started)


async def test_only_configured_passes_are_shadowed(tmp_path: Path) -> None:
    runner = PassRunner({})
    shadow = ShadowRunner(_settings(tmp_path, engine="deterministic", passes="render"), runner, None)
    await shadow.start()
    for i, turn in enumerate(_turns(10)):
        await _serve(runner, shadow, turn, i)
    await shadow.close()
    assert {r["pass"] for r in read_store(shadow.settings.store).records} == {"render"}


async def test_shadow_render_uses_the_shadow_engines_own_extraction(tmp_path: Path) -> None:
    engine = GatedEngine(wrong=True)
    engine.gate.set()
    runner = PassRunner({"slm": engine})
    shadow = ShadowRunner(_settings(tmp_path, passes=["render"]), runner, None)
    assert engine.gate.is_set()
    await shadow.start()
    turn = {"event_type": "user_message", "event_payload": {"text": "flights to Paris"}, "slot_state": {}}
    ex, rd = await _serve(runner, shadow, turn, 0)
    await shadow.close()
    (rec,) = read_store(shadow.settings.store).records
    wrong = {"slot_updates": {}, "tool_requests": [], "render_intent": {"kind": "summary"}}
    assert rec["shadow_extract"] == wrong and rec["live_extract"] == ex.document
    oracle = PassRunner({})
    expected = await oracle.render(turn, wrong, None, "deterministic")
    assert rec["shadow_render"] == expected.document and rec["live_render"] == rd.document
    assert rec["agreement"]["render_intent_match"] is False
    assert rec["agreement"]["widget_type_match"] == (rec["live_widget_types"] == rec["shadow_widget_types"])
    assert rec["fell_back"] is False and rec["schema_valid"] is True


async def test_close_records_runs_still_in_flight(tmp_path: Path) -> None:
    engine = GatedEngine()  # never opened
    runner = PassRunner({"slm": engine})
    shadow = ShadowRunner(_settings(tmp_path), runner, None)
    await shadow.start()
    for i, turn in enumerate(_turns(3)):
        await _serve(runner, shadow, turn, i)
    await shadow.close(grace_s=0.05)
    records = read_store(shadow.settings.store).records
    assert len(records) == 6 and {r["fallback_reason"] for r in records} == {"cancelled"}


async def test_submit_never_raises_and_works_from_another_thread(tmp_path: Path) -> None:
    runner = PassRunner({})
    shadow = ShadowRunner(_settings(tmp_path, engine="deterministic"), runner, None)
    turn = _turns(1)[0]
    live = await runner.extract(turn, "deterministic")
    assert shadow.submit("extract", "early", turn, live) is False  # not started yet
    await shadow.start()
    assert shadow.submit("extract", "bad", turn, None) is False  # type: ignore[arg-type]
    assert shadow.counts["internal_errors"] == 1
    assert shadow.submit("nonsense", "x", turn, live) is False
    done = threading.Event()
    result: list[bool] = []

    def worker() -> None:
        result.append(shadow.submit("extract", "from-thread", turn, live))
        done.set()

    threading.Thread(target=worker).start()
    while not done.is_set():
        await asyncio.sleep(0.005)
    await asyncio.sleep(0.01)
    await shadow.close()
    assert result == [True]
    assert [r["request_id"] for r in read_store(shadow.settings.store).records] == ["from-thread"]


async def test_shadow_passes_do_not_reach_the_live_observers(tmp_path: Path) -> None:
    seen: list[str] = []
    runner = PassRunner({"slm": DeterministicEngine()}, observers=[lambda s: seen.append(s.engine)])
    shadow = ShadowRunner(_settings(tmp_path), runner, None)
    await shadow.start()
    for i, turn in enumerate(_turns(5)):
        await _serve(runner, shadow, turn, i)
    await shadow.close()
    assert seen == ["deterministic"] * 10
    assert len(read_store(shadow.settings.store).records) == 10


async def test_settings_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRAVEL_SLM_SHADOW__ENABLED", "true")
    monkeypatch.setenv("TRAVEL_SLM_SHADOW__ENGINE", "deterministic")
    monkeypatch.setenv("TRAVEL_SLM_SHADOW__PASSES", '["extract"]')
    monkeypatch.setenv("TRAVEL_SLM_SHADOW__STORE", f"sqlite:///{tmp_path}/env.db")
    monkeypatch.setenv("TRAVEL_SLM_SHADOW__MAX_INFLIGHT", "3")
    settings = Settings()
    shadow = ShadowRunner(settings, PassRunner({}), None)
    assert shadow.settings.enabled and shadow.engine_name == "deterministic"
    assert shadow.settings.passes == ["extract"] and shadow.settings.max_inflight == 3
    await shadow.start()
    await shadow.close()
    assert (tmp_path / "env.db").exists()


async def test_missing_shadow_engine_is_recorded_unavailable(tmp_path: Path) -> None:
    # ShadowSettings alone cannot build an engine: the runs fall back as "unavailable"
    shadow = ShadowRunner(_settings(tmp_path, engine="openai"), PassRunner({}), None)
    await shadow.start()
    turn = _turns(1)[0]
    live = await shadow.live_runner.extract(turn, "deterministic")
    shadow.submit("extract", "r", turn, live)
    await shadow.close()
    (rec,) = read_store(shadow.settings.store).records
    assert rec["fell_back"] and rec["fallback_reason"] == "unavailable"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("extract,render", ["extract", "render"]), (" render ", ["render"]), ('["extract"]', ["extract"]),
     ('["extract", "render"]', ["extract", "render"])],
)
def test_shadow_passes_accept_a_comma_list_or_a_json_list(
    raw: str, expected: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRAVEL_SLM_SHADOW__PASSES", raw)
    assert Settings().shadow.passes == expected


@pytest.mark.parametrize("raw", ["extract,bogus", '["extract"', "[1]"])
def test_bad_shadow_passes_are_rejected(raw: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRAVEL_SLM_SHADOW__PASSES", raw)
    with pytest.raises(ValueError):
        Settings()


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (tests/install_system.sh installs it)")
def test_shadow_bench_counts_the_shadow_runs_under_wrk(tmp_path: Path) -> None:
    """bench/shadow_bench.py's wrk mode (issue 11, finding 9): every live request of the shadow server is
    shadowed and counted (completed or dropped); a deterministic shadow, one loop turn a run, drops none."""
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench.shadow_bench", "--load", "wrk", "--shadow-engine", "deterministic",
         "--concurrency", "16", "--seconds", "1", "--rounds", "1", "--turns", "40", "--workdir", str(tmp_path),
         "--json", str(out)],
        cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    result = json.loads(out.read_text(encoding="utf-8"))
    off, on = result["servers"]["off"], result["servers"]["on"]
    assert off["requests"] > 0 and on["requests"] > 0 and off["errors"] == on["errors"] == 0
    shadow = on["shadow"]
    # wrk counts the answers it read in its window; the server shadowed each one it answered
    assert shadow["compared"] + shadow["fell_back"] + shadow["dropped"] >= on["requests"]
    assert shadow["dropped"] == 0 and shadow["drop_rate"] == 0.0 and shadow["store_lost"] == 0
    assert on["vs_off"]["cpu_ms_per_shadow_run"] is not None and "drop rate" in done.stdout


async def test_an_api_key_from_the_config_file_is_scrubbed_from_records(tmp_path: Path) -> None:
    """TRAVEL_SLM_API_KEY need not be in the environment: a key from a config file reaches the runner
    through the settings and is scrubbed like an environment one."""
    key = "cfg-Key-0123456789abcdef"
    settings = Settings(api_key=key, shadow=_settings(tmp_path, engine="deterministic", passes=["extract"]))
    runner = PassRunner({})
    shadow = ShadowRunner(settings, runner, None)
    await shadow.start()
    turn = {"event_type": "user_message", "event_payload": {"text": f"hotels in Paris, my token is {key}"},
            "slot_state": {}}
    live = await runner.extract(turn, "deterministic")
    assert shadow.submit("extract", "k-1", turn, live)
    await shadow.close()
    stored = json.dumps(read_store(shadow.settings.store).records)
    assert "k-1" in stored and key not in stored and key[4:16] not in stored and "[REDACTED]" in stored


async def test_a_comparison_record_of_a_run_that_produced_nothing() -> None:
    """engines.shadow.record: a render run whose shadow extract timed out disagrees on every extract and render
    field, is not schema-valid, keeps 300 characters of its error, and reads the live side as served."""
    from engines.agreement import EXTRACT_FIELDS, RENDER_FIELDS
    from engines.shadow.record import LiveAnswer, ShadowComparison, ShadowResult

    turn = _turns(1)[0]
    runner = PassRunner({"deterministic": DeterministicEngine()})
    ex = await runner.extract(turn, "deterministic")
    rd = await runner.render(turn, ex.document, None, "deterministic")
    live = LiveAnswer.of(turn, rd, ex.document, None)
    shadow = ShadowResult(extract_fell_back=True, fell_back=True, reason="timeout", error="x" * 400,
                          pass_seconds=0.01234, total_seconds=0.5)
    rec = ShadowComparison("render", "rid", "slm", live, shadow).as_record()
    assert set(rec) >= RECORD_FIELDS and rec["kind"] == RECORD_KIND
    assert rec["agreement"] == dict.fromkeys((*EXTRACT_FIELDS, *RENDER_FIELDS), False)
    assert rec["schema_valid"] is False and rec["fallback_reason"] == "timeout"
    assert rec["error"] == "x" * 300 and rec["shadow_latency_ms"] == 12.3 and rec["shadow_total_ms"] == 500.0
    assert rec["live_extract"] is ex.document and rec["live_render"] is rd.document
    assert rec["shadow_extract_fell_back"] is True and rec["live_fallback_used"] is False
    assert rec["live_widget_types"] == [w["widget_type"] for w in rd.document["widgets"]]
    assert rec["shadow_widget_types"] == []

    # the same run as an extract pass: its own document is the live one, no render fields
    shadow = ShadowResult(extract=ex.document, own_valid=True)
    rec = ShadowComparison("extract", "rid", "slm", LiveAnswer.of(turn, ex, ex.document, None), shadow).as_record()
    assert rec["agreement"] == dict.fromkeys(EXTRACT_FIELDS, True) and rec["schema_valid"] is True
    assert rec["live_render"] is None and rec["shadow_extract_fell_back"] is None and rec["fallback_reason"] is None
