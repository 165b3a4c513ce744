"""bench/serve_bench.py drives the server and the echo baseline with wrk (issue 11: the benchmark measured
its own Python client). Runs a one-second pass per target; skips with the reason when wrk is missing."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench import serve_bench, wrk

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (tests/install_system.sh installs it)")
def test_serve_bench_runs_server_and_echo_under_wrk() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.serve_bench", "--json", "--seconds", "1", "--concurrency", "2",
         "--endpoints", "/extract,/render", "--turns", "40"],
        cwd=REPO, capture_output=True, text=True, timeout=240, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert report["meta"]["load_generator"] == "wrk"
    rows = {(r["target"], r["endpoint"]): r for r in report["results"]}
    assert set(rows) == {(t, e) for t in ("server", "echo") for e in ("/extract", "/render")}
    for row in rows.values():
        assert row["requests"] > 0 and row["errors"] == 0, row
        assert row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"], row
        assert row["cpu_ms_per_request"] > 0 and row["target_cores"] > 0 and row["client_cores"] > 0, row
    assert report["checks"]["zero_errors"]["ok"]


def test_serve_bench_without_wrk_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(SystemExit, match="apt-get install wrk"):
        wrk.wrk_binary()


def test_a_bad_reference_line_ends_the_benchmark_naming_its_file_and_line(tmp_path: Path) -> None:
    """The benchmarks read the corpora with the evaluation's reader: a line that is not JSON (or a file that
    cannot be read) is one clear line, not a traceback."""
    bad = tmp_path / "bad.labeled.jsonl"
    bad.write_text('{"input": {}, "expected": {"extract": {}}}\n\n{oops\n', encoding="utf-8")
    with pytest.raises(SystemExit, match=r"bad\.labeled\.jsonl:3: not valid JSON"):
        serve_bench.load_bodies(tmp_path, None)
    with pytest.raises(SystemExit, match=r"missing\.jsonl:0: cannot read file"):
        serve_bench.reference_records([tmp_path / "missing.jsonl"], None)
    bad.write_text('{"input": {"a": 1}, "expected": {"extract": {"b": 2}}}\n', encoding="utf-8")
    assert serve_bench.load_bodies(tmp_path, None) == {"/extract": [b'{"turn": {"a": 1}}'],
                                                       "/render": [b'{"turn": {"a": 1}, "extraction": {"b": 2}}']}


def test_serve_bench_help_is_its_docstring_with_targets_and_exit_status() -> None:
    done = subprocess.run([sys.executable, "-m", "bench.serve_bench", "--help"], cwd=REPO, capture_output=True,
                          text=True, timeout=60, check=True)
    assert "apt-get install wrk" in done.stdout and "Targets (issue 3)" in done.stdout
    assert "python -m bench.serve_bench --check" in done.stdout and "Exit status: 0" in done.stdout
