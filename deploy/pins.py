"""The project's version pins, read from pyproject.toml: the one file every installer asks.

pyproject.toml holds each pin once: in ``[project]`` dependencies and extras (``torch==2.13.0`` in
``slm``, ``vllm==0.32.0`` in ``cuda``), and in ``[tool.travel-slm.pins]`` for what pip cannot install
through an extra (the model package installed with ``--no-deps``, the optional CPU runtimes the test
installer adds only when they keep torch as it is). The installers (``tests/install_*.sh``) and the
Dockerfile call this script instead of repeating a version. Standard library only: it runs before any
dependency is installed.

    python deploy/pins.py torch                 # torch==2.13.0
    python deploy/pins.py --version torch       # 2.13.0
    python deploy/pins.py --requirements slm postgres   # the dependencies plus those extras, one a line
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def _project(path: Path = PYPROJECT) -> dict:
    with path.open("rb") as handle:
        return tomllib.load(handle)


def _name(requirement: str) -> str:
    match = _NAME.match(requirement)
    return match.group(1).lower().replace("_", "-") if match else ""


def requirements(extras: list[str], path: Path = PYPROJECT) -> list[str]:
    """The base dependencies followed by each named extra's, as written in pyproject.toml."""
    project = _project(path)["project"]
    known = project.get("optional-dependencies", {})
    unknown = [e for e in extras if e not in known]
    if unknown:
        raise KeyError(f"no extra {', '.join(unknown)} in {path.name} (extras: {', '.join(sorted(known))})")
    out = list(project["dependencies"])
    for extra in extras:
        out += [r for r in known[extra] if r not in out]
    return out


def pin(name: str, path: Path = PYPROJECT) -> str:
    """The one requirement for ``name``: from the dependencies, the extras or ``[tool.travel-slm.pins]``."""
    data = _project(path)
    project = data["project"]
    lists = [project["dependencies"], *project.get("optional-dependencies", {}).values(),
             *data.get("tool", {}).get("travel-slm", {}).get("pins", {}).values()]
    wanted = name.lower().replace("_", "-")
    found = {r for group in lists for r in group if _name(r) == wanted}
    if not found:
        raise KeyError(f"{name} is not pinned in {path.name}")
    if len(found) > 1:
        raise ValueError(f"{name} is pinned {len(found)} ways in {path.name}: {sorted(found)}")
    return found.pop()


def version(name: str, path: Path = PYPROJECT) -> str:
    """The exact version of an ``==`` pin."""
    requirement = pin(name, path)
    match = re.search(r"==\s*([^\s;,]+)", requirement)
    if match is None:
        raise ValueError(f"{requirement!r} is not an exact (==) pin")
    return match.group(1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python deploy/pins.py", description=__doc__.split("\n\n")[0],
                                     epilog="Exit 2 when a package is not pinned or an extra does not exist.")
    parser.add_argument("names", nargs="*", help="packages (or, with --requirements, extras)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--version", action="store_true", help="print the version of an exact pin only")
    mode.add_argument("--requirements", action="store_true",
                      help="print the dependencies plus the named extras, one a line (for pip install -r)")
    args = parser.parse_args(argv)
    try:
        if args.requirements:
            print("\n".join(requirements(args.names)))
        elif not args.names:
            parser.error("name a package")
        else:
            for name in args.names:
                print(version(name) if args.version else pin(name))
    except (KeyError, ValueError) as exc:
        print(f"pins: {exc.args[0]}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
