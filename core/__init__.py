"""The layer under everything that runs: what every other layer may import. It reads nothing of the project
but the contract's vocabulary (``contracts.vocab``: engine names), which imports nothing itself.

- :mod:`core.settings`: the settings models (:class:`~core.settings.Settings` and its sections), read from CLI
  flags, the environment (``TRAVEL_SLM_*``) and a config file by :func:`~core.settings.load_settings`;
- :mod:`core.store_url`: shadow store URLs (parsing, the installed-driver check, DSN redaction), which the
  settings validate and the shadow store opens;
- :mod:`core.cli`: argument types the commands share (``positive_int``);
- :mod:`core.stats`: the nearest-rank percentile and the share shared by the evaluation, the shadow report and
  the benchmarks.

The layers, each importing only the ones below it (``tests/test_layers.py``): ``contracts`` <- ``core`` <-
``adapters`` <- ``engines`` <- ``server`` <- ``evaluation`` / ``training`` <- ``bench``.
"""
