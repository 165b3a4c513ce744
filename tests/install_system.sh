#!/usr/bin/env bash
# System tools used by the slower test tiers: headless Chromium (dashboard and HTML report)
# and Prometheus (histogram_quantile over the app's metrics). Debian packages, installed once.
set -euo pipefail
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
if [ ${#need[@]} -eq 0 ]; then
  echo "install_system: chromium and prometheus already installed"
  exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "install_system: cannot install ${need[*]} (needs root and apt-get)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
echo "install_system: installed ${need[*]}"
