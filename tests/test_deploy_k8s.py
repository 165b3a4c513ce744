"""The Kubernetes manifests under deploy/k8s: parsed, rendered, schema-checked and cross-checked.

- Every YAML file parses; every kustomization's files exist; patches target resources of the base.
- The base resources and every overlay rendered with ``kubectl kustomize`` validate against the
  Kubernetes OpenAPI schemas (``kubernetes-validate``, strict: unknown fields are errors). kubeconform
  is not offered by PyPI, npm or Debian; ``kubernetes-validate`` ships the same upstream schemas.
  The ServiceMonitor and PrometheusRule (Prometheus Operator CRDs, no upstream schema) are checked field by field.
- Cross-checks on the rendered objects: probe paths are routes of the real application, ports agree
  between container, probes, Service, scrape annotations, the settings default and the Dockerfile; the
  container command is accepted by the real CLI parser; every ConfigMap key is a setting that
  ``core.settings.load_settings`` reads, with the value the ConfigMap gives; secrets come from a Secret.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
from pydantic import BaseModel, TypeAdapter, ValidationError

from core.settings import Settings, load_settings

yaml = pytest.importorskip("yaml", reason="PyYAML is not installed (bash tests/install_deploy_tools.sh)")

REPO = Path(__file__).resolve().parents[1]
K8S = REPO / "deploy" / "k8s"
BASE = K8S / "base"
OVERLAYS = ("cpu", "gpu", "vllm-fleet", "shadow-candidate", "shadow-postgres")
K8S_VERSION = "1.32.0"
"""The oldest Kubernetes minor the manifests promise to work on (validated against its schemas)."""
SECRET_ENV = ("TRAVEL_SLM_API_KEY", "OPENAI_API_KEY")


# --- settings env names (also used by test_deploy_dockerfile) -----------------------------------------


def settings_field(env_name: str) -> tuple[list[str], Any]:
    """``TRAVEL_SLM_SHADOW__SAMPLE_RATE`` -> (``["shadow", "sample_rate"]``, its annotation); fails when
    the name is not a setting (pydantic-settings silently ignores unknown ``TRAVEL_SLM_*`` variables)."""
    prefix = Settings.model_config["env_prefix"]
    delimiter = Settings.model_config["env_nested_delimiter"]
    assert env_name.startswith(prefix), f"{env_name}: not a {prefix}* variable"
    path = env_name[len(prefix):].lower().split(delimiter)
    model: type[BaseModel] = Settings
    annotation: Any = None
    for depth, part in enumerate(path):
        assert part in model.model_fields, f"{env_name}: {'.'.join(path[:depth + 1])} is not a setting"
        annotation = model.model_fields[part].annotation
        if depth < len(path) - 1:
            assert isinstance(annotation, type) and issubclass(annotation, BaseModel), \
                f"{env_name}: {'.'.join(path[:depth + 1])} has no nested settings"
            model = annotation
    return path, annotation


def _expected(annotation: Any, raw: str) -> Any:
    adapter = TypeAdapter(annotation)
    try:
        return adapter.validate_python(json.loads(raw))
    except (ValueError, ValidationError):
        return adapter.validate_python(raw)


def check_settings_env(env: dict[str, str]) -> Settings:
    """Every name is a real setting, and ``load_settings`` with exactly these variables reads each value."""
    paths = {name: settings_field(name) for name in env}
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TRAVEL_SLM_")}
    saved = dict(os.environ)
    try:
        os.environ.clear()
        os.environ.update(clean)
        os.environ.update(env)
        settings = load_settings()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    for name, (path, annotation) in paths.items():
        value: Any = settings
        for part in path:
            value = getattr(value, part)
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        assert value == _expected(annotation, env[name]), f"{name}={env[name]!r} was read as {value!r}"
    return settings


# --- loading and rendering ------------------------------------------------------------------------------


def yaml_files() -> list[Path]:
    return sorted(p for p in K8S.rglob("*") if p.suffix in (".yaml", ".yml"))


def load_docs(path: Path) -> list[dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]
    assert docs, f"{path}: empty"
    return docs


def kubectl() -> str | None:
    return shutil.which("kubectl")


@cache
def render(target: str) -> list[dict[str, Any]]:
    exe = kubectl()
    if exe is None:
        pytest.skip("kubectl is not installed (bash tests/install_deploy_tools.sh): overlays are not rendered; "
                    "the base and the patch files are still checked one by one")
    out = subprocess.run([exe, "kustomize", target], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d is not None]


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def container(deployment: dict[str, Any], name: str | None = None) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    return containers[0] if name is None else next(c for c in containers if c["name"] == name)


def schema_validate(doc: dict[str, Any]) -> None:
    kv = pytest.importorskip("kubernetes_validate",
                             reason="kubernetes-validate is not installed (bash tests/install_deploy_tools.sh)")
    try:
        kv.validate(doc, K8S_VERSION, strict=True)
    except kv.ValidationError as exc:
        raise AssertionError(f"{doc['kind']}/{doc['metadata']['name']}: {exc}") from None


def served(base_url: str, path: str) -> bool:
    """Whether the real application (the session's default server) answers GET ``path`` with 200."""
    import httpx

    return httpx.get(base_url + path, timeout=10).status_code == 200


_UNITS = {"": 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
          "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def quantity(value: str | int) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([a-zA-Z]*)", str(value))
    assert match and match.group(2) in _UNITS, f"bad quantity {value!r}"
    return float(match.group(1)) * _UNITS[match.group(2)]


# --- files, kustomizations, patches -------------------------------------------------------------------


def test_every_yaml_file_parses_into_named_objects() -> None:
    files = yaml_files()
    assert len(files) >= 10
    for path in files:
        for doc in load_docs(path):
            assert {"apiVersion", "kind"} <= set(doc), f"{path}: {doc}"
            if not doc["kind"].startswith(("Kustomization", "Component")):
                assert doc["metadata"]["name"], path


def test_kustomizations_reference_existing_files() -> None:
    for path in K8S.rglob("kustomization.yaml"):
        doc = load_docs(path)[0]
        for ref in doc.get("resources", []) + doc.get("components", []):
            assert (path.parent / ref).exists(), f"{path}: {ref} does not exist"
        for patch in doc.get("patches", []):
            assert (path.parent / patch["path"]).is_file(), f"{path}: {patch['path']} does not exist"


def base_objects() -> list[dict[str, Any]]:
    kustomization = load_docs(BASE / "kustomization.yaml")[0]
    return [d for ref in kustomization["resources"] for d in load_docs(BASE / ref)]


def test_base_resources_validate_against_the_kubernetes_schemas() -> None:
    objects = base_objects()
    assert {d["kind"] for d in objects} >= {"Deployment", "Service", "HorizontalPodAutoscaler", "ConfigMap"}
    for doc in objects:
        schema_validate(doc)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_patches_target_base_objects(overlay: str) -> None:
    """Checked file by file, so this holds even where kubectl cannot render the overlay."""
    folder = K8S / "overlays" / overlay
    kustomization = load_docs(folder / "kustomization.yaml")[0]
    own = [d for ref in kustomization.get("resources", []) if (folder / ref).is_file()
           for d in load_docs(folder / ref)]
    known = {(d["kind"], d["metadata"]["name"]) for d in base_objects() + own}
    base_deployment = one(base_objects(), "Deployment", "travel-slm")
    for patch in kustomization.get("patches", []):
        for doc in load_docs(folder / patch["path"]):
            assert (doc["kind"], doc["metadata"]["name"]) in known, f"{patch['path']} patches nothing"
            if doc["kind"] == "ConfigMap":  # a null value deletes the key (it must still name a setting)
                for name in (k for k, v in doc["data"].items() if v is None):
                    settings_field(name)
                check_settings_env({k: v for k, v in doc["data"].items() if v is not None})
            if doc["kind"] == "Deployment":
                names = {c["name"] for c in base_deployment["spec"]["template"]["spec"]["containers"]}
                for c in doc["spec"]["template"]["spec"].get("containers", []):
                    assert c["name"] in names, f"{patch['path']}: container {c['name']} is not in the base"
    for doc in own:
        schema_validate(doc)


def test_no_secret_values_are_committed() -> None:
    for path in yaml_files():
        for doc in load_docs(path):
            assert doc["kind"] != "Secret", f"{path}: a Secret with values belongs in the cluster, not the repo"
            if doc["kind"] == "ConfigMap":
                assert not [k for k in doc.get("data", {}) if k in SECRET_ENV or "KEY" in k.split("__")[-1]]


def test_schema_check_catches_errors() -> None:
    """The schema check is not a formality: a misspelt probe field and a string replica count fail."""
    deployment = one(base_objects(), "Deployment")
    broken = json.loads(json.dumps(deployment))
    probe = container(broken)["readinessProbe"]
    probe["httpGett"] = probe.pop("httpGet")
    with pytest.raises(AssertionError, match="httpGett"):
        schema_validate(broken)
    broken = json.loads(json.dumps(deployment))
    broken["spec"]["replicas"] = "two"
    with pytest.raises(AssertionError):
        schema_validate(broken)


# --- rendered overlays ------------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rendered_overlay_validates(overlay: str) -> None:
    docs = render(str(K8S / "overlays" / overlay))
    for doc in docs:
        schema_validate(doc)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_deployment_probes_ports_and_command(overlay: str, default_server: str) -> None:
    from server.cli import build_parser
    from server.serve_command import overrides_from_args

    docs = render(str(K8S / "overlays" / overlay))
    deployment = one(docs, "Deployment", "travel-slm")
    c = container(deployment, "travel-slm")
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    default_port = Settings.model_fields["port"].default
    assert ports == {"http": default_port}

    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        get = c[probe]["httpGet"]
        assert served(default_server, get["path"]), get["path"]
        assert get["port"] in ports or get["port"] in ports.values()

    args = build_parser().parse_args(c["command"][1:])
    overrides = overrides_from_args(args)
    assert c["command"][0] == "travel-slm"
    assert overrides["host"] == "0.0.0.0"
    assert overrides["port"] in (None, default_port)

    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == default_port
    assert annotations["prometheus.io/path"] == "/metrics" and served(default_server, "/metrics")

    service = one(docs, "Service", "travel-slm")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    (port,) = service["spec"]["ports"]
    assert port["targetPort"] in ports or port["targetPort"] in ports.values()
    assert port["port"] == default_port


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_resources_security_and_writable_paths(overlay: str) -> None:
    docs = render(str(K8S / "overlays" / overlay))
    deployment = one(docs, "Deployment", "travel-slm")
    pod = deployment["spec"]["template"]["spec"]
    c = container(deployment, "travel-slm")
    requests, limits = c["resources"]["requests"], c["resources"]["limits"]
    for resource in ("cpu", "memory"):
        assert resource in requests
    for resource, limit in limits.items():
        assert quantity(requests.get(resource, limit)) <= quantity(limit), resource

    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    sc = c["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"]["drop"] == ["ALL"]

    # With a read-only root file system, everything the server writes must be a mounted volume.
    config = one(docs, "ConfigMap")
    mounts = [m["mountPath"] for m in c["volumeMounts"]]
    volumes = {v["name"] for v in pod["volumes"]}
    assert {m["name"] for m in c["volumeMounts"]} <= volumes

    def writable(path: str) -> bool:
        return any(path == m or path.startswith(m.rstrip("/") + "/") for m in mounts)

    if overlay == "shadow-postgres":  # the store is a database: nothing to write locally
        assert "TRAVEL_SLM_SHADOW__STORE" not in config["data"]
    else:
        store = config["data"]["TRAVEL_SLM_SHADOW__STORE"]
        assert store.startswith("sqlite:///")
        assert writable(str(Path(store.removeprefix("sqlite:///")).parent)), store
    home = {e["name"]: e.get("value") for e in c["env"]}["HOME"]
    assert writable(home) and writable("/tmp")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_configmap_and_secrets(overlay: str) -> None:
    docs = render(str(K8S / "overlays" / overlay))
    config = one(docs, "ConfigMap")
    deployment = one(docs, "Deployment", "travel-slm")
    c = container(deployment, "travel-slm")
    assert [e["configMapRef"]["name"] for e in c["envFrom"]] == [config["metadata"]["name"]]

    settings = check_settings_env(config["data"])
    if overlay == "shadow-candidate":  # the planner's shadow step calls it: model answers or a visible 503
        assert not settings.shadow.enabled and settings.fallback.serve == "error"
        assert settings.extraction_engine == "slm" and settings.render_engine == "slm"
    else:
        assert settings.shadow.enabled, "the roll-out starts with shadow mode on (docs/operations.md)"
        assert settings.extraction_engine == "deterministic" and settings.render_engine == "deterministic"
        assert settings.fallback.serve == "oracle", "the live deployment serves the oracle's answer on a fallback"

    env = {e["name"]: e for e in c["env"]}
    for name in SECRET_ENV:
        ref = env[name]["valueFrom"]["secretKeyRef"]
        assert ref["name"] == "travel-slm-secrets" and ref["key"]
        assert "value" not in env[name]
    # the planner sends no Authorization header: the key must not be required for the pods to start
    assert env["TRAVEL_SLM_API_KEY"]["valueFrom"]["secretKeyRef"].get("optional") is True


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policy_admits_only_the_planner_and_prometheus(overlay: str) -> None:
    docs = render(str(K8S / "overlays" / overlay))
    policy = one(docs, "NetworkPolicy", "travel-slm")
    deployment = one(docs, "Deployment", "travel-slm")
    service = one(docs, "Service", "travel-slm")
    assert policy["metadata"].get("namespace") == deployment["metadata"].get("namespace")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    ports = {p["name"] for p in container(deployment)["ports"]}
    peers: list[tuple[str, str]] = []
    for rule in policy["spec"]["ingress"]:
        assert [p["port"] for p in rule["ports"]] == ["http"] and "http" in ports
        for peer in rule["from"]:
            assert peer["namespaceSelector"] == {}  # any namespace, but only pods with the label
            selector = peer["podSelector"]
            assert "matchLabels" not in selector, "kustomize would add the travel-slm labels to a matchLabels peer"
            (expression,) = selector["matchExpressions"]
            assert expression["operator"] == "In"
            peers += [(expression["key"], v) for v in expression["values"]]
    assert sorted(peers) == [("app.kubernetes.io/name", "prometheus"), ("travel-slm.io/client", "planner")]
    # the pods the policy protects are the ones the Service sends to; other pods (vLLM) are not selected
    assert service["spec"]["selector"].items() <= labels.items()
    for other in docs:
        if other["kind"] == "Deployment" and other is not deployment:
            other_labels = other["spec"]["template"]["metadata"]["labels"]
            assert not policy["spec"]["podSelector"]["matchLabels"].items() <= other_labels.items()


def test_shadow_candidate_overlay_is_apart_from_the_live_deployment() -> None:
    live = render(str(K8S / "overlays" / "cpu"))
    candidate = render(str(K8S / "overlays" / "shadow-candidate"))
    namespaces = {d["metadata"].get("namespace") for d in candidate}
    assert namespaces == {"travel-slm-shadow"}
    assert {d["metadata"].get("namespace") for d in live} == {None}
    settings = check_settings_env(one(candidate, "ConfigMap")["data"])
    assert settings.render.fixtures == "refuse"  # the planner always sends its tool_result
    assert container(one(candidate, "Deployment"))["image"] == container(one(live, "Deployment"))["image"]


def test_shadow_postgres_overlay_reads_the_dsn_from_a_secret() -> None:
    """Issue 12: the fleet's shadow store is a PostgreSQL database whose DSN (a password inside) comes from a
    Secret created in the cluster; the overlay is the live deployment otherwise."""
    live = render(str(K8S / "overlays" / "cpu"))
    docs = render(str(K8S / "overlays" / "shadow-postgres"))
    deployment = one(docs, "Deployment", "travel-slm")
    c = container(deployment, "travel-slm")
    env = {e["name"]: e for e in c["env"]}
    store = env["TRAVEL_SLM_SHADOW__STORE"]
    assert "value" not in store and settings_field("TRAVEL_SLM_SHADOW__STORE")[0] == ["shadow", "store"]
    ref = store["valueFrom"]["secretKeyRef"]
    assert (ref["name"], ref["key"]) == ("travel-slm-shadow-store", "dsn")
    assert ref.get("optional", False) is False  # no Secret: the pods do not start, rather than write locally
    config = one(docs, "ConfigMap")["data"]
    assert "TRAVEL_SLM_SHADOW__STORE" not in config  # the Secret is the one source of the store
    # the Secret's value is read as a PostgreSQL store by the real settings (psycopg: the postgres extra)
    settings = check_settings_env({**config, "TRAVEL_SLM_SHADOW__STORE": "postgresql://travel_slm:pw@pg:5432/shadow"})
    from engines.shadow.store import parse_store_url

    assert parse_store_url(settings.shadow.store).backend == "postgresql"
    assert settings.shadow.enabled and settings.shadow.retention_max_rows == 1_000_000
    assert settings.extraction_engine == "deterministic" and settings.render_engine == "deterministic"
    assert container(one(live, "Deployment"))["image"] == c["image"]
    assert {d["metadata"].get("namespace") for d in docs} == {None}
    # everything else is the cpu overlay's deployment
    live_env = container(one(live, "Deployment"))["env"]
    assert [e for e in c["env"] if e["name"] != "TRAVEL_SLM_SHADOW__STORE"] == live_env


def test_hpa_and_pdb_target_the_deployment() -> None:
    for overlay in OVERLAYS:
        docs = render(str(K8S / "overlays" / overlay))
        deployment = one(docs, "Deployment", "travel-slm")
        hpa = one(docs, "HorizontalPodAutoscaler")
        assert hpa["apiVersion"] == "autoscaling/v2"
        assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                                 "name": deployment["metadata"]["name"]}
        assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
        assert {m["resource"]["name"] for m in hpa["spec"]["metrics"]} == {"cpu"}
        assert "cpu" in container(deployment)["resources"]["requests"]  # utilisation needs a request
        pdb = one(docs, "PodDisruptionBudget")
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
        assert pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"]


def test_cpu_and_gpu_overlays_differ_where_they_should() -> None:
    cpu, gpu = render(str(K8S / "overlays" / "cpu")), render(str(K8S / "overlays" / "gpu"))
    cpu_config, gpu_config = one(cpu, "ConfigMap")["data"], one(gpu, "ConfigMap")["data"]
    assert cpu_config["TRAVEL_SLM_SLM__ADAPTER"] == "transformers"
    assert gpu_config["TRAVEL_SLM_SLM__ADAPTER"] == "vllm"
    assert gpu_config["TRAVEL_SLM_SLM__DEVICE"] == "cuda"

    cpu_c, gpu_c = container(one(cpu, "Deployment")), container(one(gpu, "Deployment"))
    assert cpu_c["image"].endswith("-cpu") and gpu_c["image"].endswith("-cuda")
    assert "nvidia.com/gpu" not in cpu_c["resources"]["limits"]
    assert gpu_c["resources"]["limits"]["nvidia.com/gpu"] == "1"
    pod = one(gpu, "Deployment")["spec"]["template"]["spec"]
    assert pod["nodeSelector"]
    assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
    shm = next(m for m in gpu_c["volumeMounts"] if m["mountPath"] == "/dev/shm")
    assert next(v for v in pod["volumes"] if v["name"] == shm["name"])["emptyDir"]["medium"] == "Memory"


def test_vllm_fleet_overlay_points_the_openai_engine_at_the_fleet() -> None:
    docs = render(str(K8S / "overlays" / "vllm-fleet"))
    settings = check_settings_env(one(docs, "ConfigMap")["data"])
    assert settings.openai.structured_outputs == "vllm"
    assert settings.shadow.engine == "openai"
    assert settings.openai.max_tokens("extract") and settings.openai.max_tokens("render")  # runaway answers end

    server = one(docs, "Deployment", "vllm-server")
    service = one(docs, "Service", "vllm-server")
    url = urlparse(settings.openai.base_url)
    assert url.hostname == service["metadata"]["name"]
    assert url.port == service["spec"]["ports"][0]["port"]
    assert url.path.rstrip("/") == "/v1"

    vllm = container(server, "vllm")
    args = vllm["args"]
    served = args[args.index("--served-model-name") + 1]
    assert settings.openai.model_extract == served and settings.openai.model_render == served
    assert str(vllm["ports"][0]["containerPort"]) == args[args.index("--port") + 1]
    assert service["spec"]["selector"].items() <= server["spec"]["template"]["metadata"]["labels"].items()
    assert vllm["readinessProbe"]["httpGet"]["path"] == "/health"
    assert int(vllm["resources"]["limits"]["nvidia.com/gpu"]) == int(args[args.index("--tensor-parallel-size") + 1])
    assert not vllm["image"].endswith(":latest") and ":" in vllm["image"]
    # travel-slm's own selector must not pick up the vLLM pods.
    travel = one(docs, "Service", "travel-slm")
    assert not travel["spec"]["selector"].items() <= server["spec"]["template"]["metadata"]["labels"].items()


def test_servicemonitor_component(tmp_path: Path, default_server: str) -> None:
    component = K8S / "components" / "servicemonitor"
    (monitor_doc,) = load_docs(component / "servicemonitor.yaml")
    # No upstream schema for a CRD: check its fields by hand.
    assert monitor_doc["apiVersion"] == "monitoring.coreos.com/v1" and monitor_doc["kind"] == "ServiceMonitor"
    assert set(monitor_doc["spec"]) == {"selector", "endpoints"}

    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": [os.path.relpath(BASE, tmp_path)],
        "components": [os.path.relpath(component, tmp_path)],
    }), encoding="utf-8")
    docs = render(str(tmp_path))
    monitor = one(docs, "ServiceMonitor")
    service = one(docs, "Service", "travel-slm")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics" and served(default_server, "/metrics")
    # the PrometheusRule (no upstream schema either) carries exactly the groups of deploy/prometheus/alerts.yml;
    # tests/test_ops_alerts.py runs promtool on both
    rule = one(docs, "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1" and set(rule["spec"]) == {"groups"}
    assert rule["metadata"].get("namespace") == service["metadata"].get("namespace")
    alerts = load_docs(REPO / "deploy" / "prometheus" / "alerts.yml")[0]
    assert rule["spec"]["groups"] == alerts["groups"]
    for doc in docs:
        if doc["kind"] not in ("ServiceMonitor", "PrometheusRule"):
            schema_validate(doc)


def test_settings_env_check_catches_unknown_names_and_unread_values() -> None:
    with pytest.raises(AssertionError, match="not a setting"):
        check_settings_env({"TRAVEL_SLM_SHADOW__SAMPLERATE": "0.5"})
    with pytest.raises(AssertionError, match="not a setting"):
        check_settings_env({"TRAVEL_SLM_EXTRACT_ENGINE": "slm"})
    assert check_settings_env({"TRAVEL_SLM_SHADOW__PASSES": '["extract"]'}).shadow.passes == ["extract"]

