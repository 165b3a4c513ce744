"""bench/decode_bench.py: CLI, turn selection, the rate/percentile/table assembly, and one real run (slow)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench import decode_bench as db
from bench.decode_bench import Sample, ServedSample

REPO = Path(__file__).resolve().parents[1]


def sample(completion_tokens: int, seconds: float, ttft_s: float | None = None, *, mask_s: float = 0.0,
           model_steps: int = 0, forced_tokens: int = 0, finish_reason: str = "stop") -> Sample:
    """A timed generation with the figures the summaries read (no text)."""
    return Sample(text="", finish_reason=finish_reason, prompt_tokens=0, completion_tokens=completion_tokens,
                  time_to_first_token_s=ttft_s, mask_seconds=mask_s, model_steps=model_steps,
                  forced_tokens=forced_tokens, seconds=seconds)


def test_help_runs_and_names_the_options():
    out = subprocess.run([sys.executable, "-m", "bench.decode_bench", "--help"], cwd=REPO, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    for option in ("--adapters", "--turns", "--mlx-turns", "--corpus", "--max-new-tokens", "--json",
                   "--render-mode"):
        assert option in out.stdout


def test_bad_adapter_name_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        db.main(["--adapters", "transformers,llamacpp"])
    assert exc.value.code == 2
    assert "llamacpp" in capsys.readouterr().err


def test_spread_indices_is_even_deterministic_and_interleaved():
    picks = db.spread_indices([8, 271, 45], 7)
    assert picks == db.spread_indices([8, 271, 45], 7)
    assert [f for f, _ in picks] == [0, 1, 2, 0, 1, 2, 0]
    per_file: dict[int, list[int]] = {}
    for f, line in picks:
        per_file.setdefault(f, []).append(line)
    assert per_file == {0: [1, 4, 6], 1: [67, 203], 2: [11, 33]}
    # a small file gives its surplus to the others; never more picks than lines
    picks = db.spread_indices([2, 10], 8)
    assert sorted(line for f, line in picks if f == 0) == [0, 1]
    assert len(picks) == 8 and len(set(picks)) == 8
    assert len(db.spread_indices([3, 2], 50)) == 5
    assert db.spread_indices([], 5) == [] and db.spread_indices([4], 0) == []


def test_load_turns_reads_records_and_reports_bad_lines(tmp_path):
    good = {"id": "a", "input": {"event_type": "user_message", "event_payload": {"text": "hi"}},
            "expected": {"extract": {"x": 1}, "render": {}, "tool_summary": {"t": 1}}}
    path = tmp_path / "c.labeled.jsonl"
    path.write_text(json.dumps(good) + "\n" + "not json\n" + json.dumps({**good, "id": "b"}) + "\n")
    problems: list[str] = []
    turns = db.load_turns([path], 3, problems)
    assert [t.id for t in turns] == ["a", "b"]
    assert turns[0].turn["event_payload"] == {"text": "hi"} and turns[0].extraction == {"x": 1}
    assert turns[0].tool_summary == {"t": 1} and turns[0].source == "c.labeled.jsonl"
    assert len(problems) == 1 and "record 2" in problems[0]


def test_rate_summary_end_to_end_and_decode_rates():
    samples = [
        sample(completion_tokens=101, seconds=2.0, ttft_s=0.5, mask_s=0.101, model_steps=41, forced_tokens=60),
        sample(completion_tokens=51, seconds=1.5, ttft_s=0.5, mask_s=0.051, model_steps=21, forced_tokens=30,
               finish_reason="length"),
        sample(completion_tokens=1, seconds=0.4, ttft_s=0.4),  # no decode phase: left out of decode rate
    ]
    s = db.rate_summary(samples)
    assert s["n"] == 3 and s["completion_tokens"] == 153
    assert s["tok_s"] == pytest.approx(153 / 3.9, abs=0.01)
    assert s["decode_tok_s"] == pytest.approx((100 + 50) / (1.5 + 1.0), abs=0.01)
    assert s["decode_n"] == 2
    assert s["mask_ms_per_token"] == pytest.approx(0.152 / 153 * 1000, abs=1e-3)
    assert s["model_steps"] == 62 and s["forced_tokens"] == 90 and s["steps_saved"] == 153 - 62
    assert s["latency_p50_ms"] == 1500.0 and s["latency_p95_ms"] == 2000.0  # nearest rank
    assert s["ttft_p50_ms"] == 500.0
    assert s["finish"] == {"length": 1, "stop": 2}


def test_mask_time_zero_is_not_reported_not_free():
    s = db.rate_summary([sample(completion_tokens=10, seconds=1.0, ttft_s=0.1, mask_s=0.0, model_steps=10)])
    assert s["mask_ms_per_token"] is None and s["mask_share"] is None
    assert db.rate_summary([])["tok_s"] is None


def test_decode_comparison_ratio_uses_decode_rate_and_falls_back_to_end_to_end():
    c = [sample(completion_tokens=100, seconds=2.0, ttft_s=1.0)]   # e2e 50 tok/s, decode 99 tok/s
    u = [sample(completion_tokens=21, seconds=1.2, ttft_s=1.0)]    # e2e 17.5 tok/s, decode 100 tok/s
    d = db.decode_comparison(c, u)
    assert d["ratio_tok_s"] == pytest.approx(50 / 17.5, abs=1e-3)
    assert d["ratio_decode_tok_s"] == pytest.approx(0.99, abs=1e-3)
    assert d["ratio"] == d["ratio_decode_tok_s"] and d["ratio_basis"] == "decode"
    assert d["ratio_decode_median"] == pytest.approx(0.99, abs=1e-3)


def test_paired_median_ratio_resists_one_slow_outlier():
    c = [sample(11, 1.1, 0.1), sample(11, 1.1, 0.1), sample(11, 1.1, 0.1)]       # 10 tok/s each
    u = [sample(11, 1.1, 0.1), sample(11, 1.1, 0.1), sample(11, 100.1, 0.1)]     # one 0.1 tok/s outlier
    d = db.decode_comparison(c, u)
    assert d["ratio_decode_tok_s"] == pytest.approx(30 / 3.0 / (30 / 102.0), abs=1e-2)
    assert d["ratio_decode_median"] == 1.0
    # no time to first token: only the end-to-end ratio exists
    d = db.decode_comparison([sample(completion_tokens=90, seconds=1.0)], [sample(completion_tokens=100, seconds=1.0)])
    assert d["ratio_decode_tok_s"] is None and d["ratio"] == 0.9 and d["ratio_basis"] == "end_to_end"


def test_pass_summary_percentiles_share_and_reasons():
    samples = [ServedSample(float(ms), reason) for ms, reason in
               [(100, None), (200, "timeout"), (300, None), (400, "truncated"), (500, "timeout"), (600, None),
                (700, None), (800, None), (900, None), (1000, None)]]
    s = db.pass_summary(samples)
    assert s["n"] == 10 and s["p50_ms"] == 500.0 and s["p95_ms"] == 1000.0
    assert s["fallback_share"] == 0.3
    assert s["fallback_reasons"] == {"timeout": 2, "truncated": 1}
    empty = db.pass_summary([])
    assert empty["p50_ms"] is None and empty["fallback_share"] is None


def test_levers_compare_the_same_turns():
    on = [sample(100, 1.0, 0.1, model_steps=40, forced_tokens=60), sample(80, 0.8, 0.1, model_steps=30)]
    off = [sample(100, 2.0, 0.1, model_steps=100), sample(80, 1.6, 0.1, model_steps=80)]
    jf = db.jump_forward_lever(on, off, identical=2)
    assert jf["steps_on"] == 70 and jf["steps_off"] == 180 and jf["steps_saved"] == 110
    assert jf["steps_saved_share"] == pytest.approx(110 / 180, abs=1e-3)
    assert jf["p50_on_ms"] == 800.0 and jf["p50_off_ms"] == 1600.0 and jf["identical_outputs"] == 2
    px = db.prefix_lever(on, [sample(100, 3.0, 2.1), sample(80, 2.5, 2.0)], identical=1)
    assert px["identical_outputs"] == 1
    assert px["p50_on_ms"] == 800.0 and px["p50_off_ms"] == 2500.0 and px["p50_saved_ms"] == 1700.0
    assert px["ttft_p50_on_ms"] == 100.0 and px["ttft_p50_off_ms"] == 2000.0


def _result(name: str, ratio_c: float, extract_ms: list[float]) -> dict:
    constrained = [sample(101, 1.1, 0.1, mask_s=0.05, model_steps=41, forced_tokens=60)]
    unconstrained = [sample(101, 0.1 + 1.0 * ratio_c, 0.1)]  # decode c/u == ratio_c
    return {
        "adapter": name, "status": "ok", "reason": None, "turns": len(extract_ms),
        "meta": {"model": "m", "device": "cpu", "load_s": 1.0, "jump_forward": True, "prefix_cache": True,
                 "max_new_tokens_extract": 192, "max_new_tokens_render": 160, "timeouts_ms": {"extract": 800.0}},
        "decode": db.decode_comparison(constrained, unconstrained),
        "levers": {},
        "served": {"extract": db.pass_summary([ServedSample(ms) for ms in extract_ms]),
                   "render": db.pass_summary([ServedSample(300.0, "timeout")])},
    }


def test_targets_and_table():
    results = [
        _result("transformers", 1.0, [500.0, 550.0, 700.0]),
        _result("vllm", 0.5, [900.0]),
        {"adapter": "mlx", "status": "skipped", "reason": "missing Python package(s) mlx-lm"},
    ]
    report = db.build_report(results, {"turns": 3}, ["x.jsonl: record 3 skipped: ValueError"])
    targets = report["targets"]
    assert targets["transformers_tok_s_ratio"]["ok"] is True
    assert targets["transformers_tok_s_ratio"]["value"] == pytest.approx(1.0, abs=1e-3)
    assert targets["transformers_extract_p50_ms"] == {"value": 550.0, "target": 600.0, "ok": True}
    assert targets["vllm_tok_s_ratio"]["ok"] is False and targets["vllm_extract_p50_ms"]["ok"] is False
    assert not any(k.startswith("mlx") for k in targets)

    text = db.format_table(report)
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["adapter", "turns", "c"]
    row = next(line for line in lines if line.startswith("transformers "))
    assert "550/700" in row and "100%" in row and "60/101" in row
    assert any(line.startswith("mlx") and "skipped: missing Python package(s) mlx-lm" in line for line in lines)
    assert "PASS  transformers_extract_p50_ms 550 <= 600.0" in text
    assert "FAIL  vllm_tok_s_ratio" in text
    assert "served render: n 1, p50 300 ms" in text and "(timeout 1)" in text
    assert "record 3 skipped" in text
    json.dumps(report)  # the --json object is serialisable


def test_missing_adapter_package_is_a_skipped_row(monkeypatch):
    monkeypatch.setattr("adapters.select.missing_packages", lambda name: ["mlx-lm"] if name == "mlx" else [])
    row = db.run_adapter("mlx", [], db.BenchOptions())
    assert row == {"adapter": "mlx", "status": "skipped", "reason": "missing Python package(s) mlx-lm"}


@pytest.mark.slow
def test_real_run_on_transformers_bundled_model():
    from tests.conftest_slm import require_bundled

    require_bundled()
    from core.settings import SlmSettings

    corpora = db.default_corpora()
    if not corpora:
        pytest.skip(f"reference corpora not found under {db.DEFAULT_CORPORA}")
    turns = db.load_turns(corpora, 1)
    # one torch thread: on a shared 2-core box two threads stall whenever another process holds a core
    options = db.BenchOptions(max_new_tokens=8, max_new_tokens_render=8, timeout_ms=0, threads=1,
                              slm_settings=SlmSettings(model="bundled"))
    ticks: list[int] = []
    result = db.run_adapter("transformers", turns, options, lambda: ticks.append(1))
    assert result["status"] == "ok", result.get("reason")
    assert len(ticks) == db.planned_steps("transformers", 1, options)
    c = result["decode"]["constrained"]
    assert c["n"] == 1 and 0 < c["completion_tokens"] <= 8 and c["tok_s"] > 0
    assert c["mask_ms_per_token"] is not None and c["mask_ms_per_token"] > 0
    assert result["decode"]["unconstrained"]["mask_ms_per_token"] is None
    assert result["decode"]["ratio"] is not None
    jf = result["levers"]["jump_forward"]
    assert jf["n"] == 1 and jf["steps_off"] >= jf["steps_on"] and jf["identical_outputs"] in (0, 1)
    assert result["meta"]["quantize"] in ("none", "int8")
    prefix = result["levers"]["prefix_cache"]
    assert prefix["p50_off_ms"] is not None and prefix["identical_outputs"] in (0, 1)
    for pass_name in ("extract", "render"):
        served = result["served"][pass_name]
        assert served["n"] == 1 and served["p50_ms"] is not None and served["p50_ms"] > 0
        # an 8-token budget cannot finish a document: the pass falls back as truncated
        assert served["fallback_reasons"] == {"truncated": 1}
    assert "transformers" in db.format_table(db.build_report([result], {}))
