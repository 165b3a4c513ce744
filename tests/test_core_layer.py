"""``core/`` sits under every layer that runs: every layer may import it, and it loads nothing of the project but
the contract's vocabulary (contracts, which imports nothing).

Checked at run time (what importing it really loads, transitive imports included), in a fresh interpreter.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
#: core may read the contract's vocabulary (contracts sits below it: it imports nothing of the project)
PROJECT_PACKAGES = {"adapters", "engines", "server", "evaluation", "training", "bench", "models"}


def _loaded_after(statement: str) -> list[str]:
    code = f"import json, sys\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60,
                          check=True)
    return json.loads(done.stdout)


@pytest.mark.parametrize("module", ["core", "core.settings", "core.stats", "core.store_url", "core.cli"])
def test_core_loads_nothing_of_the_project(module: str) -> None:
    loaded = _loaded_after(f"import {module}")
    assert module in loaded
    above = [m for m in loaded if m.split(".")[0] in PROJECT_PACKAGES]
    assert above == [], f"importing {module} loads {above}"


def test_settings_validate_the_store_url_with_core_alone() -> None:
    """The shadow store URL is checked by core.store_url: a bad one is refused without the shadow package."""
    code = ("from core.settings import ConfigFileError, load_settings\n"
            "try:\n    load_settings(shadow={'store': 'mysql://db/x'})\n"
            "except ConfigFileError as exc:\n    print(exc)\n")
    done = subprocess.run([sys.executable, "-c", code + "import sys\n"
                           "print(any(m.startswith('engines') for m in sys.modules))"],
                          cwd=REPO, capture_output=True, text=True, timeout=60, check=True)
    message, engines_loaded = done.stdout.strip().splitlines()
    assert "shadow.store" in message and "unsupported shadow store 'mysql'" in message
    assert engines_loaded == "False"


def test_the_old_homes_are_gone() -> None:
    """No re-export shim: the settings and the stats helpers have one home each."""
    assert not (REPO / "server" / "config.py").exists()
    assert not (REPO / "bench" / "stats.py").exists()
