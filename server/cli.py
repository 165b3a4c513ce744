"""The ``travel-slm`` command. Each subcommand lives beside the code it drives and registers itself."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

#: subcommand modules; each exposes ``register(subparsers)`` that adds its parser with ``func=``.
COMMAND_MODULES: tuple[str, ...] = (
    "server.serve_command",
    "bench.eval",
    "server.predict_command",
    "contracts.export",
    "engines.shadow.report_command",
    "training.dataset",
    "training.finetune",
    "training.package",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="travel-slm",
        description="Inference server for the travel planner's extract and render passes.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and (name == exc.name or name.startswith(exc.name + ".")):
                continue  # a command whose module is not part of this checkout
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    result = args.func(args)
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
