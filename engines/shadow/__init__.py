"""Shadow mode (docs/shadow.md): a candidate engine runs beside the live one, is compared, never served.

- :mod:`engines.shadow.runner`: :class:`ShadowRunner`, what the app calls after a live pass.
- :mod:`engines.shadow.store`: the store (one writer thread, bounded queue, batched writes, retention) over
  two backends, :mod:`engines.shadow.store_sqlite` (the default, one file per pod) and
  :mod:`engines.shadow.store_postgres` (one database for the fleet); URL parsing and DSN redaction in
  :mod:`engines.shadow.store_base`.
- :mod:`engines.shadow.redact`: redaction of every string before storing.
- :mod:`engines.shadow.report`: agreement, latency, fallbacks, drops and the promotion gate, in SQL aggregates.
- :mod:`engines.shadow.report_command`: ``travel-slm shadow report``.

The package imports nothing itself, so that reading one module (settings validation reads
:mod:`engines.shadow.store_base`) does not load the runner and the engines behind it.
"""
