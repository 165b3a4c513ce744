"""Progress bars for long commands: shown on a terminal, silent under ``--json`` or without a TTY."""

from __future__ import annotations

import sys
from typing import Any


def bar(total: int | None, desc: str, *, enabled: bool, unit: str = "it") -> Any:
    """A tqdm bar on stderr, or a no-op object with the same ``update``/``set_postfix``/``close``."""
    if enabled and sys.stderr.isatty():
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True)
    return _Silent()


class _Silent:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, *args: Any, **kwargs: Any) -> None:
        pass

    def close(self) -> None:
        pass
