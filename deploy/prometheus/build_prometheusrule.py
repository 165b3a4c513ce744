"""Write the Prometheus Operator PrometheusRule from ``deploy/prometheus/alerts.yml``.

    python3 deploy/prometheus/build_prometheusrule.py           # rewrite the manifest
    python3 deploy/prometheus/build_prometheusrule.py --check   # exit 1 when it is out of date

``alerts.yml`` is the one source of the rules; the manifest carries its ``groups`` verbatim (comments
included) under ``spec``, so both say the same and ``promtool check rules`` checks both.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ALERTS = HERE / "alerts.yml"
MANIFEST = HERE.parent / "k8s" / "components" / "servicemonitor" / "prometheusrule.yaml"

HEADER = """\
# Generated from deploy/prometheus/alerts.yml by deploy/prometheus/build_prometheusrule.py: edit the alerts
# there, then run the script (tests/test_ops_alerts.py fails while the two differ).
#
# A Prometheus Operator PrometheusRule (monitoring.coreos.com/v1). The Prometheus resource picks rules by its
# ruleSelector: add the label it expects (kube-prometheus-stack: `release: <helm release name>`) with a patch.
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: travel-slm
  labels:
    app.kubernetes.io/name: travel-slm
    app.kubernetes.io/component: alerts
spec:
"""


def render(alerts_text: str) -> str:
    """The manifest text for ``alerts_text`` (its leading comment block dropped, the rest under ``spec``)."""
    lines = alerts_text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("groups:"))
    body = "\n".join(("  " + line) if line.strip() else "" for line in lines[start:])
    return HEADER + body + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when the manifest is out of date")
    args = parser.parse_args(argv)
    text = render(ALERTS.read_text(encoding="utf-8"))
    current = MANIFEST.read_text(encoding="utf-8") if MANIFEST.is_file() else ""
    if args.check:
        if current != text:
            print(f"{MANIFEST} is out of date: run python3 {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    if current != text:
        MANIFEST.write_text(text, encoding="utf-8")
        print(f"wrote {MANIFEST}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
