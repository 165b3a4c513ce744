"""The alert rules as files (issue 12, item 5): ``deploy/prometheus/alerts.yml`` and the PrometheusRule.

- ``promtool check rules`` passes on ``alerts.yml`` and on the PrometheusRule's ``spec`` (the Operator's
  form), and ``promtool check config`` on the static example that loads the rules;
- the PrometheusRule is exactly what ``deploy/prometheus/build_prometheusrule.py`` makes from alerts.yml;
- ``promtool test rules`` runs the rules' unit tests (``deploy/prometheus/alerts_test.yml``);
- every metric an alert reads is exported by the real application;
- the circuit alert fires on the series a real server exports once a real breaker opens.

promtool ships with Debian's ``prometheus`` package (``bash tests/install_system.sh``).
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

yaml = pytest.importorskip("yaml", reason="PyYAML is not installed (bash tests/install_deploy_tools.sh)")

REPO = Path(__file__).resolve().parents[1]
PROM = REPO / "deploy" / "prometheus"
ALERTS = PROM / "alerts.yml"
RULE = REPO / "deploy" / "k8s" / "components" / "servicemonitor" / "prometheusrule.yaml"
TURN = {"event_type": "user_message", "event_payload": {"text": "flights to Miami"}, "slot_state": {}}
#: series Prometheus makes itself, not the application
SYNTHETIC = {"up"}


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool is not installed: it ships with Debian's prometheus package "
                    "(bash tests/install_system.sh installs it; apt-get install prometheus)")
    return path


def run_promtool(*args: str) -> subprocess.CompletedProcess[str]:
    out = subprocess.run([promtool(), *args], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, f"promtool {' '.join(args)}:\n{out.stdout}\n{out.stderr}"
    return out


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    return [rule for group in doc["groups"] for rule in group["rules"]]


def test_alert_rules_pass_promtool() -> None:
    out = run_promtool("check", "rules", str(ALERTS))
    assert f"SUCCESS: {len(alert_rules())} rules found" in out.stdout


def test_prometheusrule_passes_promtool(tmp_path: Path) -> None:
    (manifest,) = [d for d in yaml.safe_load_all(RULE.read_text(encoding="utf-8")) if d]
    assert manifest["apiVersion"] == "monitoring.coreos.com/v1" and manifest["kind"] == "PrometheusRule"
    spec = tmp_path / "prometheusrule-spec.yml"
    spec.write_text(yaml.safe_dump(manifest["spec"], sort_keys=False), encoding="utf-8")
    out = run_promtool("check", "rules", str(spec))
    assert f"SUCCESS: {len(alert_rules())} rules found" in out.stdout


def test_prometheusrule_is_generated_from_the_alerts_file() -> None:
    spec = importlib.util.spec_from_file_location("build_prometheusrule", PROM / "build_prometheusrule.py")
    assert spec is not None and spec.loader is not None
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    assert RULE.read_text(encoding="utf-8") == build.render(ALERTS.read_text(encoding="utf-8")), \
        "the PrometheusRule is out of date: python3 deploy/prometheus/build_prometheusrule.py"
    manifest = yaml.safe_load(RULE.read_text(encoding="utf-8"))
    assert manifest["spec"] == yaml.safe_load(ALERTS.read_text(encoding="utf-8"))


def test_alert_unit_tests_pass() -> None:
    out = run_promtool("test", "rules", str(PROM / "alerts_test.yml"))
    assert "SUCCESS" in out.stdout + out.stderr


def test_static_prometheus_config_loads_the_rules() -> None:
    out = run_promtool("check", "config", str(PROM / "prometheus.yml"))
    assert "1 rule files found" in out.stdout + out.stderr


def test_every_alert_has_severity_summary_and_the_job_matcher() -> None:
    rules = alert_rules()
    names = [r["alert"] for r in rules]
    assert len(names) == len(set(names))
    assert {"TravelSlmCircuitOpen", "TravelSlmRestarting", "TravelSlmShadowStoreFault"} <= set(names)
    for rule in rules:
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        selectors = re.findall(r"[a-z_:][a-z0-9_:]*\{([^}]*)\}", rule["expr"])
        assert selectors and all('job="travel-slm"' in s for s in selectors), rule["alert"]


def test_alerts_read_only_metrics_the_application_exports(live_server: Any, tmp_path: Path) -> None:
    """Every metric name in an alert expression is a family of the real /metrics (shadow mode on, so that the
    shadow families and the store's gauge exist; a model engine, so that circuit states exist)."""
    base = live_server({"extraction_engine": "openai", "openai": {"base_url": "http://127.0.0.1:9/v1"},
                        "shadow": {"enabled": True, "engine": "deterministic",
                                   "store": f"sqlite:///{tmp_path}/shadow.db"}})
    httpx.post(base + "/render", json={"turn": TURN}, timeout=30)
    families = {f.name for f in text_string_to_metric_families(httpx.get(base + "/metrics").text)}
    for rule in alert_rules():
        for name in re.findall(r"([a-z_:][a-z0-9_:]*)\{", rule["expr"]):
            if name in SYNTHETIC:
                continue
            family = re.sub(r"_(total|bucket|count|sum)$", "", name)
            assert family in families, f"{rule['alert']}: {name} is not exported"


def test_circuit_alert_fires_on_the_series_of_a_real_open_circuit(live_server: Any, tmp_path: Path) -> None:
    """A real breaker opens (an upstream that refuses connections); the exported circuit-state samples, as
    Prometheus would scrape them for three minutes, fire TravelSlmCircuitOpen for that engine and pass only."""
    base = live_server({"extraction_engine": "openai", "openai": {"base_url": "http://127.0.0.1:9/v1"},
                        "fallback": {"failure_threshold": 1, "cooldown_s": 3600.0}})
    r = httpx.post(base + "/extract", json={"turn": TURN}, timeout=30)
    assert r.json()["llm_contract"]["fallback_reason"] == "error"
    families = {f.name: f for f in text_string_to_metric_families(httpx.get(base + "/metrics").text)}
    samples = families["travel_slm_circuit_state"].samples
    assert {(s.labels["engine"], s.labels["pass"], s.value) for s in samples} == {
        ("openai", "extract", 2.0), ("openai", "render", 0.0)}

    def series(labels: dict[str, str]) -> str:
        inner = ", ".join(f'{k}="{v}"' for k, v in {"job": "travel-slm", "instance": "pod-a:8000", **labels}.items())
        return "travel_slm_circuit_state{" + inner + "}"

    unit = {
        "rule_files": [str(ALERTS)],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": [{"series": series(s.labels), "values": f"{s.value:g}x5"} for s in samples],
            "alert_rule_test": [
                {"eval_time": "1m", "alertname": "TravelSlmCircuitOpen", "exp_alerts": []},
                {"eval_time": "3m", "alertname": "TravelSlmCircuitOpen", "exp_alerts": [{
                    "exp_labels": {"severity": "critical", "job": "travel-slm", "instance": "pod-a:8000",
                                   "engine": "openai", "pass": "extract"},
                    "exp_annotations": {
                        "summary": "the circuit of extract on openai is open on pod-a:8000",
                        "description": "Passes fall back with reason circuit_open; see fallback_detail in the "
                                       "access log and /healthz."},
                }]},
            ],
        }],
    }
    path = tmp_path / "circuit_test.yml"
    path.write_text(json.dumps(unit), encoding="utf-8")  # JSON is YAML
    run_promtool("test", "rules", str(path))
