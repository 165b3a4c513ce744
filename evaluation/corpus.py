"""Reading labelled corpora (``{id, input, expected: {extract, render, tool_summary}}`` per line).

A line that is not JSON or not a record is reported with its file and line number, and reading
goes on with the rest. :func:`json_lines` is the one reader of the JSON-lines files (the evaluation's
:func:`read_corpora`, the training set builder and the HTTP benchmarks read through it).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
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


def json_lines(paths: Iterable[str | Path], problem: Callable[[CorpusProblem], None]
               ) -> Iterator[tuple[str, int, Any]]:
    """``(file, line number, JSON value)`` of every non-blank line of every file. A file that cannot be read
    and a line that is not JSON go to ``problem`` (which may raise to stop) and reading goes on."""
    for path in paths:
        name = str(path)
        try:
            handle = open(path, encoding="utf-8")  # noqa: SIM115 - closed below
        except OSError as exc:
            problem(CorpusProblem(name, 0, f"cannot read file: {exc.strerror or exc}"))
            continue
        with handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    value = json.loads(line)
                except json.JSONDecodeError as exc:
                    problem(CorpusProblem(name, number, f"not valid JSON: {exc.msg} (column {exc.colno})"))
                    continue
                yield name, number, value


def read_corpora(
    paths: Iterable[str | Path], problems: list[CorpusProblem], split: str | None = None
) -> Iterator[LabelledTurn]:
    """Yield the labelled turns of every file; bad lines are appended to ``problems``."""
    for name, number, raw in json_lines(paths, problems.append):
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
