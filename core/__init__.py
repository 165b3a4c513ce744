"""The bottom layer: what every other layer may import, and which imports nothing of the project.

- :mod:`core.settings`: the settings models (:class:`~core.settings.Settings` and its sections), read from CLI
  flags, the environment (``TRAVEL_SLM_*``) and a config file by :func:`~core.settings.load_settings`;
- :mod:`core.store_url`: shadow store URLs (parsing, the installed-driver check, DSN redaction), which the
  settings validate and the shadow store opens;
- :mod:`core.stats`: the nearest-rank percentile and the share shared by the evaluation, the shadow report and
  the benchmarks.

The layers above, each importing only the ones below it: ``contracts`` <- ``adapters`` <- ``engines`` <-
``server`` <- ``evaluation`` / ``training`` <- ``bench``. Nothing in ``core`` imports any of them.
"""
