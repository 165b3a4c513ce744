"""Evaluation: score an engine's own answers over labelled turns against the gate (``travel-slm eval``).

- :mod:`evaluation.corpus`: reading the labelled corpora (``{id, input, expected}`` records) and their splits.
- :mod:`evaluation.evaluate`: the per-field metrics, the gate, the run over an engine and the command.

This package sits on top of the others (it drives engines through the server's settings); the benchmarks
in ``bench/`` and the training pipeline use it, nothing below it does.
"""
