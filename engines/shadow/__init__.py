"""Shadow mode (service.md section 5): a candidate engine runs beside the live one, is compared, never served.

- :mod:`engines.shadow.runner`: :class:`ShadowRunner`, what the app calls after a live pass.
- :mod:`engines.shadow.store`: the SQLite store (writer thread, bounded queue, retention).
- :mod:`engines.shadow.redact`: e-mail, phone and card redaction before storing.
- :mod:`engines.shadow.report`: agreement, latency, fallbacks, drops and the promotion gate.
- :mod:`engines.shadow.report_command`: ``travel-slm shadow report``.
"""

from __future__ import annotations

from engines.shadow.redact import redact, redact_record, redact_text
from engines.shadow.report import ShadowReport, build_report, report_from_store
from engines.shadow.runner import RECORD_KIND, ShadowRunner
from engines.shadow.store import ShadowStore, read_store

__all__ = [
    "RECORD_KIND",
    "ShadowReport",
    "ShadowRunner",
    "ShadowStore",
    "build_report",
    "read_store",
    "redact",
    "redact_record",
    "redact_text",
    "report_from_store",
]
