"""The shipped trained model (``slm.model=shipped``, the default) on its OWN answers.

A fixed sample of 30 ``eval``-split turns, spread over every class of the label (render-intent
kind | first tool), none of which the model was trained on (the dataset builder's leak check).
Timeouts are raised so that the verdict does not depend on this machine's speed: what is scored is
the model's answer, and a fallback of any kind fails the test.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.conftest_slm import load_corpus_records, require_bundled, spread

pytestmark = pytest.mark.slow
require_bundled()


def test_shipped_package_is_complete_and_small():
    import models
    from adapters.models import PACKAGE_FILE, model_package

    package = model_package("shipped")
    assert package is not None and package.path == models.SHIPPED
    for name in (PACKAGE_FILE, "adapter_model.safetensors", "adapter_config.json", "tokenizer.json", "MODEL_CARD.md",
                 "eval_report.json", "lineage.json"):
        assert (models.SHIPPED / name).is_file(), name
    total = sum(p.stat().st_size for p in models.SHIPPED.iterdir())
    assert total <= 25 * 1024 * 1024
    report = json.loads((models.SHIPPED / "eval_report.json").read_text())
    assert report["eval"]["view"] == "own" and report["eval"]["n"] > 600


#: eval turns scored: every class of the label at least once (22), then spread; each costs seconds on a 2-core CPU
SAMPLE = 30


def _sample(tmp_path):
    from engines.agreement import turn_class

    records = [r for r in load_corpus_records() if r.get("split") == "eval"]
    picked = spread(records, SAMPLE, key=lambda r: turn_class(r["expected"]["extract"]))
    classes = {turn_class(r["expected"]["extract"]) for r in records}
    assert len(picked) == SAMPLE and {turn_class(r["expected"]["extract"]) for r in picked} == classes
    path = tmp_path / "eval_sample.labeled.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in picked))
    return path


#: What the shipped model measured on the whole eval split (613 turns, own answers; models/*/eval_report.json),
#: less a margin for the 30-turn sample. The service gate (tool and intent >= 0.98, args >= 0.95) is NOT
#: met yet: these floors catch a regression of the shipped model, and the gate test below says where it stands.
FLOORS: dict[str, float] = {"tool_match": 0.85, "render_intent_match": 0.85, "widget_type_match": 0.98,
                            "arg_fidelity": 0.85, "slot_update_match": 0.9, "extract_schema_validity": 1.0,
                            "widget_schema_validity": 1.0, "tool_vocab_validity": 1.0,
                            "render_intent_vocab_validity": 1.0}


def test_shipped_model_answers_eval_turns_itself_above_its_floors(tmp_path, caplog):
    import logging

    from core.settings import load_settings
    from evaluation.evaluate import run_eval

    settings = load_settings(slm={"adapter": "transformers", "timeout_ms_extract": 120_000,
                                  "timeout_ms_render": 120_000})
    assert settings.slm.model == "shipped"  # the default
    caplog.set_level(logging.INFO, logger="travel_slm.slm")
    report = asyncio.run(run_eval("slm", [str(_sample(tmp_path))], settings=settings))
    # the package's LoRA is merged into the weights at load on transformers, and the start-up says so
    details = [r.detail for r in caplog.records if getattr(r, "step", None) == "loading model"]
    assert details and all("travel-slm-smollm2-135m-lora merged" in d for d in details), details
    assert report.view == "own"
    assert report.metrics["fallback_rate"] == 0.0, report.fallback_reasons
    failures = {k: report.metrics[k] for k, floor in FLOORS.items() if report.metrics[k] < floor}
    assert not failures, (failures, report.per_class)


def test_shipped_eval_report_states_the_gate_verdict_honestly():
    """The package's own full eval-split report: the gate verdict matches its figures (no hard-coded pass)."""
    import models
    from evaluation.evaluate import GATE, evaluate_gate

    report = json.loads((models.SHIPPED / "eval_report.json").read_text())["eval"]
    assert report["metrics"]["fallback_rate"] == 0.0
    assert evaluate_gate(report["metrics"]) == report["gate"]
    assert report["gate"]["passed"] == all(report["metrics"][k] >= t for k, t in GATE.items())
