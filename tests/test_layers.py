"""Imports point down only (issue 13): contracts <- core <- adapters <- engines <- server <- evaluation and
training <- bench. Walks every module of the package with ``ast`` (imports inside functions included) and
fails on an import from a layer above the module's own, naming the file and line."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

#: the layer of each top-level package; a module may import its own layer and the layers below
LAYERS: dict[str, int] = {
    "contracts": 0, "models": 0,
    "core": 1,
    "adapters": 2, "engines": 3,
    "server": 4,
    "evaluation": 5, "training": 5, "bench": 6,
}
#: the command dispatcher names its subcommand modules as strings (server/cli.py COMMAND_MODULES): that is a
#: registry read at run time, not an import, and this walk does not follow it


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


def _upward(path: Path, root: Path = REPO) -> list[str]:
    own = path.relative_to(root).parts[0]
    return [f"{path.relative_to(root)}:{line}: {own} (layer {LAYERS[own]}) imports {name} (layer {LAYERS[top]})"
            for line, name in _imports(path)
            if (top := name.split(".")[0]) in LAYERS and LAYERS[top] > LAYERS[own]]


def test_no_module_imports_from_a_layer_above_it() -> None:
    problems = [p for package in LAYERS if (REPO / package).is_dir()
                for path in sorted((REPO / package).rglob("*.py")) for p in _upward(path)]
    assert not problems, "upward imports:\n" + "\n".join(problems)


def test_the_walk_sees_an_upward_import(tmp_path: Path) -> None:
    """The check is not vacuous: a contracts module importing the server, even inside a function, is found."""
    bad = tmp_path / "contracts" / "probe.py"
    bad.parent.mkdir()
    bad.write_text("import json\n\n\ndef f():\n    from server.app import create_app\n    return create_app\n",
                   encoding="utf-8")
    assert _upward(bad, tmp_path) == ["contracts/probe.py:5: contracts (layer 0) imports server.app (layer 4)"]


def test_every_package_has_a_layer() -> None:
    top = {p.name for p in REPO.iterdir() if (p / "__init__.py").is_file()} - {"tests"}
    assert top <= set(LAYERS), f"a package without a layer: {sorted(top - set(LAYERS))}"
