"""The evaluation metrics (docs/evaluation.md) on small made-up corpora with hand-computed values."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engines.deterministic import run_turn
from evaluation.evaluate import METRICS, TurnResult, compute_metrics, evaluate_gate, latency_summary
from tests.reference import CORPORA, require_reference

ROOT = Path(__file__).resolve().parents[1]

EX_FLIGHTS = {"slot_updates": {}, "tool_requests": [{"tool": "mcp/duffel.search_offers", "arguments": {"a": 1}}],
              "render_intent": {"kind": "show_flights"}}
EX_NONE = {"slot_updates": {}, "tool_requests": [], "render_intent": {"kind": "summarize"}}
R_ONE = {"bot_message": "m", "widgets": [{"schema_version": 1, "widget_type": "calendar_view", "variant": "full",
                                          "payload": {"trip_id": "trip_X", "editable": True}}]}


def result(extract, render, exp_extract=EX_FLIGHTS, exp_render=R_ONE, fb=(False, False), ms=(1.0, 2.0)):
    return TurnResult(exp_extract, exp_render, extract, render, fb[0], fb[1], ms[0], ms[1])


def test_metric_definitions_hand_computed():
    other_args = copy.deepcopy(EX_FLIGHTS)
    other_args["tool_requests"][0]["arguments"] = {"a": 2}
    other_slots = {**EX_FLIGHTS, "slot_updates": {"nights": 2}}
    other_kind_reason = {**EX_NONE, "render_intent": {"kind": "summarize", "reason": "x"}}
    bad_widget = {"bot_message": "m", "widgets": [R_ONE["widgets"][0], {"schema_version": 1,
                  "widget_type": "calendar_view", "variant": "full", "payload": {"trip_id": ""}}]}
    out_of_vocab = {"slot_updates": {}, "tool_requests": [{"tool": "mcp/amadeus.search_hotels", "arguments": {}}],
                    "render_intent": {"kind": "teleport"}}
    results = [
        # 0: labels equal the answers; EX_FLIGHTS' {"a": 1} arguments are not a contract shape
        result(EX_FLIGHTS, R_ONE),
        # 1: arguments differ; the render differs only in its message
        result(other_args, {**R_ONE, "bot_message": "other"}),
        # 2: slot updates differ; two envelopes where one is expected, the second invalid; extract fell back
        result(other_slots, bad_widget, fb=(True, False)),
        # 3: a reason on a plain kind: intent still matches (reason ignored), schema refuses; render fell back
        result(other_kind_reason, R_ONE, exp_extract=EX_NONE, fb=(False, True)),
        # 4: retired tool, unknown kind, widgets not a list (counts as one invalid envelope, no types)
        result(out_of_vocab, {"bot_message": "m", "widgets": "nope"}, exp_extract=EX_NONE),
        # 5: a fully valid, fully matching turn
        result(EX_NONE, R_ONE, exp_extract=EX_NONE),
    ]
    m = compute_metrics(results, view="served")  # the answers as given, fallbacks included
    assert m["tool_match"] == 5 / 6  # 4: amadeus != "" (no request)
    assert m["arg_fidelity"] == 5 / 6  # 1 differs; 4 compares {} with {} (no request on the label side)
    assert m["slot_update_match"] == 5 / 6  # 2
    assert m["render_intent_match"] == 5 / 6  # 4: teleport != summarize; 3's reason is ignored
    assert m["widget_type_match"] == 4 / 6  # 2 (two types) and 4 (none)
    assert m["extract_exact"] == 2 / 6  # 0 and 5
    assert m["render_exact"] == 3 / 6  # 0, 3 and 5
    assert m["extract_schema_validity"] == 1 / 6  # only 5
    assert m["widget_schema_validity"] == 5 / 7  # envelopes 1+1+2+1+1+1, invalid: 2's second and 4's
    assert m["tool_vocab_validity"] == 5 / 6
    assert m["render_intent_vocab_validity"] == 5 / 6
    assert m["fallback_rate"] == 2 / 12  # two of twelve passes fell back
    assert compute_metrics([])["tool_match"] is None

    # own view (the default): 2's extract and 3's render fell back, so they are misses and invalid
    own = compute_metrics(results)
    assert own["tool_match"] == 4 / 6  # 2 no longer counts
    assert own["slot_update_match"] == 5 / 6  # 2 was the mismatch; now a miss all the same
    assert own["render_intent_match"] == 4 / 6  # 2 (miss) and 4
    assert own["extract_exact"] == 2 / 6
    assert own["extract_schema_validity"] == 1 / 6
    assert own["tool_vocab_validity"] == 4 / 6  # 2 (miss) and 4
    assert own["widget_type_match"] == 3 / 6  # 2, 4, and 3 (fell back)
    assert own["render_exact"] == 2 / 6  # 0 and 5
    assert own["widget_schema_validity"] == 4 / 7  # 3's render is one invalid envelope instead of one valid
    assert own["fallback_rate"] == 2 / 12


def test_a_candidate_that_never_answers_scores_zero_and_fails_the_gate():
    """Every pass fell back to the oracle: the substitutes equal the labels, and still nothing counts."""
    label_ex, label_rd = EX_NONE, R_ONE
    results = [TurnResult(label_ex, label_rd, label_ex, label_rd, True, True, 1.0, 1.0, i, "timeout", "timeout")
               for i in range(5)]
    own = compute_metrics(results)
    assert own["tool_match"] == 0.0 and own["render_intent_match"] == 0.0 and own["widget_type_match"] == 0.0
    assert own["extract_schema_validity"] == 0.0 and own["widget_schema_validity"] == 0.0
    assert own["fallback_rate"] == 1.0
    assert not evaluate_gate(own)["passed"]
    served = compute_metrics(results, view="served")
    assert served["tool_match"] == 1.0 and evaluate_gate(served)["passed"]  # what --served shows, labelled


def test_gate_and_latency():
    ok = dict.fromkeys(METRICS, 1.0)
    assert evaluate_gate(ok) == {"passed": True, "failures": []}
    gate = evaluate_gate({**ok, "tool_match": 0.979, "arg_fidelity": 0.95, "widget_schema_validity": 0.999})
    assert not gate["passed"]
    assert [f.split()[0] for f in gate["failures"]] == ["tool_match", "widget_schema_validity"]
    lat = latency_summary([result(EX_NONE, R_ONE, ms=(float(i), 10.0 * i)) for i in range(1, 21)])
    assert lat["extract"] == {"p50": 10.0, "p95": 19.0}
    assert lat["render"] == {"p50": 100.0, "p95": 190.0}
    assert lat["turn"] == {"p50": 110.0, "p95": 209.0}


def cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "server.cli", *args], input=stdin, capture_output=True, text=True,
                          cwd=ROOT, timeout=300)


def made_up_corpus(tmp_path: Path) -> Path:
    turns = [
        {"event_type": "user_message", "event_payload": {"text": "flights to Paris"}, "slot_state": {}},
        {"event_type": "user_message", "event_payload": {"text": "hotels in Lisbon"}, "slot_state": {}},
        {"event_type": "user_message", "event_payload": {"text": "hello"}, "slot_state": {}},
        {"event_type": "user_widget_cta_click", "event_payload": {"action_id": "pick_offer:o1"}, "slot_state": {}},
    ]
    lines = []
    for i, turn in enumerate(turns):
        expected = run_turn(turn)
        if i == 1:  # the label drops the tool request: tool, args and exact miss; the intent still matches
            expected["extract"]["tool_requests"] = []
        if i == 2:  # label a different bot message: render_exact misses, widget types still match
            expected["render"]["bot_message"] = "something else"
        lines.append(json.dumps({"id": f"m{i}", "split": "eval" if i < 3 else "train", "input": turn,
                                 "expected": expected}))
    lines.insert(2, "{not json")
    lines.insert(4, json.dumps({"id": "x", "input": {"event_payload": "text"}, "expected": {}}))
    path = tmp_path / "made_up.labeled.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_eval_cli_json_on_made_up_corpus(tmp_path):
    path = made_up_corpus(tmp_path)
    proc = cli("eval", "--engine", "deterministic", "--corpus", str(path), "--json")
    assert proc.returncode == 1, proc.stderr  # the gate fails: tool_match 0.75
    report = json.loads(proc.stdout)
    assert report["n"] == 4
    m = report["metrics"]
    assert (m["tool_match"], m["arg_fidelity"], m["extract_exact"]) == (0.75, 0.75, 0.75)
    assert (m["render_exact"], m["widget_type_match"], m["render_intent_match"]) == (0.75, 1.0, 1.0)
    assert m["extract_schema_validity"] == 1.0 and m["fallback_rate"] == 0.0
    assert set(report["latency_ms"]) == {"extract", "render", "turn"}
    assert report["gate"]["passed"] is False and report["gate"]["failures"][0].startswith("tool_match 0.7500")
    assert f"{path}:3: not valid JSON" in proc.stderr
    assert f"{path}:5: not a labelled record" in proc.stderr
    assert len(report["problems"]) == 2


def test_eval_cli_split_limit_table_and_markdown(tmp_path):
    path = made_up_corpus(tmp_path)
    md = tmp_path / "report.md"
    proc = cli("eval", "--engine", "deterministic", "--corpus", str(path), "--split", "train", "--markdown", str(md))
    assert proc.returncode == 0, proc.stderr
    assert "turns 1" in proc.stdout and "gate: PASSED" in proc.stdout
    assert "| tool_match | 1.0000 | pass |" in md.read_text()
    proc = cli("eval", "--engine", "deterministic", "--corpus", str(path), "--limit", "1", "--json")
    assert json.loads(proc.stdout)["n"] == 1


def test_eval_cli_dead_openai_candidate_fails_on_its_own_answers(tmp_path):
    """The openai engine pointed at a closed port: every pass falls back as 'error'; exit 1, reasons shown."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed once the block ends: nothing listens there
    path = made_up_corpus(tmp_path)
    env_args = ("eval", "--engine", "openai", "--corpus", str(path), "--json")
    env = {"TRAVEL_SLM_OPENAI__BASE_URL": f"http://127.0.0.1:{port}/v1", "TRAVEL_SLM_FALLBACK__FAILURE_THRESHOLD": "100",
           "OPENAI_API_KEY": "sk-test"}
    proc = subprocess.run([sys.executable, "-m", "server.cli", *env_args], capture_output=True, text=True, cwd=ROOT,
                          timeout=300, env={**os.environ, **env})
    assert proc.returncode == 1, proc.stderr
    report = json.loads(proc.stdout)
    assert report["view"] == "own"
    assert report["metrics"]["fallback_rate"] == 1.0
    assert report["metrics"]["tool_match"] == 0.0
    assert report["fallback_reasons"]["extract"] == {"error": 4}
    assert not report["gate"]["passed"]
    served = subprocess.run([sys.executable, "-m", "server.cli", *env_args, "--served"], capture_output=True,
                            text=True, cwd=ROOT, timeout=300, env={**os.environ, **env})
    report = json.loads(served.stdout)
    assert report["view"] == "served" and "SERVED" in report["view_note"]
    assert report["metrics"]["tool_match"] == 0.75  # the oracle's substitutes, scored as the engine's (1 label differs)
    assert report["gate"]["passed"] is False  # label 1 still misses; the point is the view is labelled served


def test_eval_cli_errors(tmp_path):
    proc = cli("eval", "--engine", "deterministic", "--corpus", str(tmp_path / "missing.jsonl"))
    assert proc.returncode == 2 and "corpus file not found" in proc.stderr and "Traceback" not in proc.stderr
    proc = cli("eval", "--engine", "nope", "--corpus", "x")
    assert proc.returncode == 2 and "invalid choice" in proc.stderr
    proc = cli("eval", "--engine", "deterministic", "--corpus", str(made_up_corpus(tmp_path)), "--limit", "0")
    assert proc.returncode == 2 and "--limit" in proc.stderr


@pytest.mark.slow
def test_eval_cli_reference_corpora_all_metrics_one():
    require_reference()
    files = [str(p) for p in sorted(CORPORA.glob("*.labeled.jsonl"))]
    proc = cli("eval", "--engine", "deterministic", "--corpus", *files, "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["n"] == 4408
    assert all(report["metrics"][k] == 1.0 for k in METRICS if k != "fallback_rate")
    assert report["metrics"]["fallback_rate"] == 0.0 and report["gate"]["passed"]


def test_predict_cli():
    turn = {"event_type": "user_message", "event_payload": {"text": "hotels in Paris"}, "slot_state": {}}
    proc = cli("predict", "--pass", "extract", stdin=json.dumps(turn))
    assert proc.returncode == 0 and json.loads(proc.stdout) == run_turn(turn)["extract"]
    proc = cli("predict", "--pass", "render", stdin=json.dumps({"turn": turn}))
    assert json.loads(proc.stdout) == run_turn(turn)["render"]
    given = {"slot_updates": {}, "tool_requests": [], "render_intent": {"kind": "calendar_live"}}
    proc = cli("predict", "--pass", "render", stdin=json.dumps({"turn": turn, "extraction": given}))
    assert json.loads(proc.stdout)["widgets"][0]["widget_type"] == "calendar_view"


@pytest.mark.parametrize(
    ("stdin", "pass_name", "message"),
    [
        ("{oops", "extract", "not valid JSON"),
        ("[1, 2]", "extract", "must hold a JSON object"),
        ('{"event_payload": "text"}', "extract", "event_payload"),
        ('{"slot_state": [1]}', "render", "slot_state"),
        ('{"turn": {}, "extraction": {"slot_updates": {}}}', "render", "invalid extraction"),
        ('{"turn": {}, "tool_summary": {"ok": "maybe"}}', "render", "tool_summary"),
    ],
)
def test_predict_cli_bad_input(stdin, pass_name, message):
    proc = cli("predict", "--pass", pass_name, stdin=stdin)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and proc.stdout == ""


def test_help_for_every_command():
    for args in (("--help",), ("eval", "--help"), ("predict", "--help"), ("schemas", "--help")):
        proc = cli(*args)
        assert proc.returncode == 0 and "usage:" in proc.stdout
