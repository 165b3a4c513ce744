"""Reading labelled corpora (``{id, input, expected: {extract, render, tool_summary}}`` per line).

A line that is not JSON or not a record is reported with its file and line number, and reading
goes on with the rest.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from contracts.turn import Turn


class Expected(BaseModel):
    model_config = ConfigDict(extra="allow")
    extract: dict[str, Any]
    render: dict[str, Any]
    tool_summary: dict[str, Any]


class Record(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str | int | None = None
    split: str | None = None
    input: Turn
    expected: Expected


@dataclass(frozen=True)
class CorpusProblem:
    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


@dataclass(frozen=True)
class LabelledTurn:
    file: str
    line: int
    record: Record

    @property
    def turn(self) -> dict[str, Any]:
        return self.record.input.engine_input()


def read_corpora(
    paths: Iterable[str | Path], problems: list[CorpusProblem], split: str | None = None
) -> Iterator[LabelledTurn]:
    """Yield the labelled turns of every file; bad lines are appended to ``problems``."""
    for path in paths:
        name = str(path)
        try:
            handle = open(path, encoding="utf-8")  # noqa: SIM115 - closed below
        except OSError as exc:
            problems.append(CorpusProblem(name, 0, f"cannot read file: {exc.strerror or exc}"))
            continue
        with handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    raw = json.loads(line)
                except json.JSONDecodeError as exc:
                    problems.append(CorpusProblem(name, number, f"not valid JSON: {exc.msg} (column {exc.colno})"))
                    continue
                try:
                    record = Record.model_validate(raw)
                except ValidationError as exc:
                    first = exc.errors(include_url=False)[0]
                    loc = ".".join(str(p) for p in first["loc"]) or "<root>"
                    problems.append(CorpusProblem(name, number, f"not a labelled record: {loc}: {first['msg']}"))
                    continue
                if split is not None and record.split != split:
                    continue
                yield LabelledTurn(name, number, record)
