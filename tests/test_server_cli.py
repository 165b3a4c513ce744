"""``travel-slm serve`` as a real process: flags > environment > config file > defaults; JSON logs without secrets."""

from __future__ import annotations

import json
from typing import Any

import httpx

from server.serve_command import overrides_from_args


def test_serve_defaults_to_the_deterministic_engine(live_server: Any) -> None:
    base = live_server(subprocess=True)
    health = httpx.get(base + "/healthz").json()
    assert health["passes"] == {"extract": "deterministic", "render": "deterministic"}
    assert httpx.get(base + "/readyz").status_code == 200
    r = httpx.post(base + "/extract", json={"turn": {"event_payload": {"text": "hotels in Paris"}}})
    assert r.status_code == 200 and r.json()["llm_contract"]["engine"] == "deterministic"


def test_flags_beat_env_which_beats_the_config_file(live_server: Any, tmp_path: Any) -> None:
    config = tmp_path / "travel-slm.toml"
    config.write_text('render_engine = "openai"\nextraction_engine = "openai"\n'
                      'model_aliases = {"cfg-extract" = "extract"}\n[openai]\nbase_url = "http://127.0.0.1:9/v1"\n')
    env = {"TRAVEL_SLM_EXTRACTION_ENGINE": "deterministic", "TRAVEL_SLM_OPENAI__MODEL_RENDER": "env-render",
           "TRAVEL_SLM_API_KEY": "cli-test-key-0001", "OPENAI_API_KEY": "sk-cli-secret-0002"}
    base = live_server({"config": str(config), "render_engine": "deterministic", "log_level": "info"}, env=env,
                       subprocess=True)
    auth = {"Authorization": "Bearer cli-test-key-0001"}
    health = httpx.get(base + "/healthz").json()
    # flag beats the file (render), env beats the file (extraction)
    assert health["passes"] == {"extract": "deterministic", "render": "deterministic"}
    models = {m["id"] for m in httpx.get(base + "/v1/models", headers=auth).json()["data"]}
    assert "cfg-extract" in models  # from the file
    assert httpx.post(base + "/extract", json={"turn": {}}).status_code == 401
    r = httpx.post(base + "/extract", json={"turn": {"event_payload": {"text": "flights to Miami"}}}, headers=auth)
    assert r.status_code == 200
    proc = live_server.processes[base]
    live_server.stop(base)
    lines = [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]
    assert any(line.get("logger") == "travel_slm.access" and line.get("path") == "/extract" for line in lines)
    assert "cli-test-key-0001" not in proc.stderr and "sk-cli-secret-0002" not in proc.stderr
    assert "flights to Miami" not in proc.stderr  # no user text in the logs


def test_bad_settings_exit_with_a_message(tmp_path: Any) -> None:
    import subprocess
    import sys

    from tests.conftest import REPO

    out = subprocess.run([sys.executable, "-m", "server.cli", "serve", "--config", str(tmp_path / "missing.toml")],
                         cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "config file not found" in out.stderr


def test_cli_overrides_are_nested() -> None:
    import argparse

    from server.serve_command import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["serve", "--engine", "slm", "--render-engine", "deterministic", "--slm-adapter", "vllm",
                              "--render-mode", "full", "--openai-base-url", "http://u/v1", "--shadow"])
    out = overrides_from_args(args)
    assert out["extraction_engine"] == "slm" and out["render_engine"] == "deterministic"
    assert out["slm"] == {"adapter": "vllm", "render_mode": "full"}
    assert out["openai"] == {"base_url": "http://u/v1"} and out["shadow"] == {"enabled": True}
