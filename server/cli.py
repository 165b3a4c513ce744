"""The ``travel-slm`` command. Each subcommand lives beside the code it drives and registers itself."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

#: subcommand modules; each exposes ``register(subparsers)`` that adds its parser with ``func=``.
COMMAND_MODULES: tuple[str, ...] = (
    "server.serve_command",
    "evaluation.evaluate",
    "server.predict_command",
    "contracts.export",
    "engines.shadow.report_command",
    "training.dataset",
    "training.finetune",
    "training.package",
)


class _VersionAction(argparse.Action):
    """``--version``: package, contract and model versions on stdout, then exit 0 (computed only when asked)."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS,
                 default: str = argparse.SUPPRESS, help: str | None = None) -> None:
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: object,
                 option_string: str | None = None) -> None:
        from server.routes_ops import version_text

        print(version_text())
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="travel-slm",
        description="Inference server for the travel planner's extract and render passes.",
    )
    parser.add_argument("--version", action=_VersionAction,
                        help="print the package, contract and model versions and exit")
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
    from core.settings import ConfigFileError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.func(args)
    except ConfigFileError as exc:  # settings a command loads: one line, no traceback
        sub = getattr(args, f"{args.command}_command", None)  # e.g. `shadow report`
        print(f"travel-slm {args.command}{' ' + sub if isinstance(sub, str) else ''}: {exc}", file=sys.stderr)
        return 2
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
