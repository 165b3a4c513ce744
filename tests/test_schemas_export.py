"""The committed JSON Schemas are a fresh export of the models, and they validate like the models."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator, FormatChecker

from contracts.export import PACKAGE_SCHEMAS, contract_schemas, stale_files
from contracts.validation import extract_errors, render_errors
from contracts.widgets import PAYLOAD_MODELS
from tests.reference import all_records, require_reference

ROOT = Path(__file__).resolve().parents[1]


def test_committed_schemas_are_up_to_date():
    assert stale_files() == [], "run `travel-slm schemas` and commit contracts/schemas/"


def test_schemas_command_check_detects_a_stale_file(tmp_path):
    out = tmp_path / "schemas"
    run = lambda *a: subprocess.run([sys.executable, "-m", "server.cli", "schemas", *a],  # noqa: E731
                                    capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert run("--out", str(out)).returncode == 0
    assert run("--out", str(out), "--check").returncode == 0
    (out / "flight_card.schema.json").write_text("{}\n")
    proc = run("--out", str(out), "--check")
    assert proc.returncode == 1 and "flight_card.schema.json" in proc.stderr


def test_one_file_per_widget_type_and_pass():
    names = {p.name for p in PACKAGE_SCHEMAS.glob("*.json")}
    assert {f"{t}.schema.json" for t in PAYLOAD_MODELS} <= names
    assert {"extract_output.schema.json", "render_output.schema.json", "_envelope.schema.json"} <= names


@pytest.mark.parametrize("name", ["extract_output.schema.json", "render_output.schema.json"])
def test_exported_schema_accepts_every_reference_label(name):
    require_reference()
    schema = json.loads((PACKAGE_SCHEMAS / name).read_text())
    validator = Draft202012Validator(schema, format_checker=FormatChecker())
    part = "extract" if name.startswith("extract") else "render"
    failures = [r["id"] for r in all_records() if not validator.is_valid(r["expected"][part])]
    assert not failures, failures[:5]


def test_exported_render_schema_and_models_refuse_the_same_bad_outputs():
    schema = contract_schemas()["render_output.schema.json"]
    validator = Draft202012Validator(schema, format_checker=FormatChecker())
    good = {"bot_message": "m", "widgets": [{"schema_version": 1, "widget_type": "calendar_view",
                                             "variant": "full", "payload": {"trip_id": "t", "editable": True}}]}
    assert validator.is_valid(good) and not render_errors(good)
    bad = [
        {"bot_message": "m", "widgets": []},
        {"bot_message": "m", "widgets": good["widgets"] * 3},
        {"bot_message": 1, "widgets": good["widgets"]},
        {"widgets": good["widgets"]},
        {**good, "extra": 1},
        {"bot_message": "m", "widgets": [{**good["widgets"][0], "widget_type": "car_list"}]},
        {"bot_message": "m", "widgets": [{**good["widgets"][0], "schema_version": 3}]},
        {"bot_message": "m", "widgets": [{**good["widgets"][0], "payload": {"trip_id": "t"}}]},
        {"bot_message": "m", "widgets": [{**good["widgets"][0], "payload": {"trip_id": "", "editable": True}}]},
        {"bot_message": "m", "widgets": [{"schema_version": 1, "widget_type": "date_range_picker",
                                          "variant": "compact", "payload": {"min_date": "2026-13-01",
                                          "max_date": "2026-12-31", "locale": "en", "submit": "submit"}}]},
    ]
    for doc in bad:
        assert render_errors(doc), doc
        assert not validator.is_valid(doc), doc


def test_extract_schema_refuses_what_the_models_refuse():
    schema = contract_schemas()["extract_output.schema.json"]
    validator = Draft202012Validator(schema)
    doc = {"slot_updates": {"nights": "4"}, "tool_requests": [], "render_intent": {"kind": "summary"}}
    assert extract_errors(doc) and not validator.is_valid(doc)
