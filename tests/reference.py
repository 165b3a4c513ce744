"""Locating the shared reference data (read in place, never copied into the repository)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
REFERENCE = SHARED / "reference"
CORPORA = REFERENCE / "corpora"
SCHEMAS = REFERENCE / "schemas"


def corpus_files() -> list[Path]:
    return sorted(CORPORA.glob("*.labeled.jsonl"))


def require_reference() -> None:
    if not corpus_files():
        pytest.skip(f"reference corpora not found under {CORPORA} (../shared must sit beside the checkout)")


def load_records(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def all_records() -> list[dict[str, Any]]:
    return [r for path in corpus_files() for r in load_records(path)]
