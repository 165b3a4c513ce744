#!/usr/bin/env bash
# System tools used by the slower test tiers, Debian packages installed once:
#   - chromium: headless browser (dashboard and HTML report);
#   - wrk: the load generator of bench/serve_bench.py (tests/test_serve_bench.py);
#   - prometheus: the server (histogram_quantile over the app's metrics) and promtool (`promtool check rules`
#     and `promtool test rules` on deploy/prometheus/alerts.yml and the PrometheusRule).
# Each package is installed on its own, so that one that cannot be installed does not hold back the other.
set -euo pipefail
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
{ command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; } || need+=(prometheus)
if [ ${#need[@]} -eq 0 ]; then
  echo "install_system: chromium, wrk and prometheus (with promtool) already installed"
  exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "install_system: cannot install ${need[*]} (needs root and apt-get)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
failed=()
for package in "${need[@]}"; do
  if apt-get install -y -qq --no-install-recommends "$package" >/dev/null; then
    echo "install_system: installed $package"
  else
    failed+=("$package")
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "install_system: could not install ${failed[*]}" >&2
  exit 1
fi
