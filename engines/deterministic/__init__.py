"""The deterministic oracle (docs/oracle.md): rules as data in ``rules``, passes in ``extract`` and ``render``."""

from engines.deterministic.extract import extract
from engines.deterministic.fixtures import fixture
from engines.deterministic.render import render, run_turn

__all__ = ["extract", "fixture", "render", "run_turn"]
