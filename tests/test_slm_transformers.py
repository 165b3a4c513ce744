"""The transformers adapter on the REAL bundled model (SmolLM2-135M-Instruct), through the fallback layer.

Every served output must be schema-valid whatever the model's accuracy (a bad generation falls
back with its reason), the llm_contract must name the engine, adapter and model, and forced
failures must produce the right fallback reasons.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.conftest_slm import load_corpus_records, require_bundled, spread

require_bundled()

from contracts.validation import extract_errors, render_errors  # noqa: E402
from contracts.vocab import CONTRACT_VERSION, FALLBACK_REASONS  # noqa: E402
from core.settings import SlmSettings  # noqa: E402
from engines.fallback import PassRunner, Served  # noqa: E402
from engines.slm.engine import SlmEngine  # noqa: E402

pytestmark = pytest.mark.slow

#: 12 turns spread over the corpora: every served document is checked, whatever the untrained model writes; more
#: turns repeat the same checks at a cost of seconds each on a 2-core CPU (the suite must stay under 12 minutes)
N_TURNS = 12
MODEL_NAME = "smollm2-135m-instruct"


@pytest.fixture(scope="module")
def engine() -> SlmEngine:
    eng = SlmEngine(SlmSettings(adapter="transformers", model="bundled", warmup=False))  # warm-up: test_warm_readiness
    asyncio.run(eng.start())
    ready, reason = eng.readiness()
    assert ready, reason
    return eng


@pytest.fixture(scope="module")
def records() -> list[dict]:
    return spread(load_corpus_records(), N_TURNS)


def _check_contract(served: Served) -> None:
    contract = served.llm_contract()
    assert contract["engine"] == "slm"
    assert contract["adapter"] == "transformers"
    assert contract["model"] == MODEL_NAME
    assert contract["contract_version"] == CONTRACT_VERSION
    assert contract["fallback_used"] is (contract["fallback_reason"] is not None)
    if contract["fallback_used"]:
        assert contract["fallback_reason"] in FALLBACK_REASONS


def test_engine_reports_adapter_model_and_grammars(engine):
    assert engine.adapter == "transformers" and engine.model == MODEL_NAME
    assert set(engine.grammar_compile_seconds) == {"extract", "render_plan"}
    assert engine.describe()["ready"] is True


def test_extract_turns_always_schema_valid(engine, records):
    runner = PassRunner({"slm": engine})

    async def run():
        return [await runner.extract(r["input"], "slm") for r in records]

    served = asyncio.run(run())
    assert len(served) == N_TURNS
    for s in served:
        assert extract_errors(s.document) == [], s.error
        assert s.schema_valid
        _check_contract(s)
    model_served = [s for s in served if not s.fallback_used]
    # the model must actually serve: a broken engine would fall back every time
    assert model_served, [s.fallback_reason for s in served]
    assert all(s.completion_tokens > 0 and s.time_to_first_token_s is not None for s in model_served)


def test_render_turns_always_schema_valid(engine, records):
    runner = PassRunner({"slm": engine})

    async def run():
        return [await runner.render(r["input"], r["expected"]["extract"], r["expected"]["tool_summary"], "slm")
                for r in records]

    served = asyncio.run(run())
    assert len(served) == N_TURNS
    for s, r in zip(served, records, strict=True):
        assert render_errors(s.document) == [], s.error
        _check_contract(s)
        if not s.fallback_used:  # plan mode: payloads come from the tool data, never invented
            data = r["expected"]["tool_summary"]["data"]
            for env in s.document["widgets"]:
                if env["widget_type"] == "flight_list":
                    assert env["payload"]["items"] == data.get("offers", [])
                if env["widget_type"] == "hotel_list":
                    assert env["payload"]["items"] == data.get("hotels", [])
    assert any(not s.fallback_used for s in served), [s.fallback_reason for s in served]


def test_tiny_max_new_tokens_falls_back_truncated(engine, records):
    small = SlmEngine(SlmSettings(adapter="transformers", model="bundled", max_new_tokens_extract=4, max_new_tokens_render=3),
                      adapter=engine.runtime)
    asyncio.run(small.start())
    runner = PassRunner({"slm": small})
    record = records[0]

    async def run():
        ex = await runner.extract(record["input"], "slm")
        rd = await runner.render(record["input"], record["expected"]["extract"], record["expected"]["tool_summary"],
                                 "slm")
        return ex, rd

    ex, rd = asyncio.run(run())
    for s in (ex, rd):
        assert s.fallback_used and s.fallback_reason == "truncated"
        assert s.schema_valid
        _check_contract(s)
    assert ex.document == record["expected"]["extract"]  # the oracle's answer was served
    assert rd.document == record["expected"]["render"]


def test_tiny_timeout_falls_back_and_frees_the_worker(engine, records):
    record = records[1]
    runner = PassRunner({"slm": engine}, timeouts_ms={("slm", "extract"): 1, ("slm", "render"): 1})
    plain = PassRunner({"slm": engine})

    async def run():
        ex = await runner.extract(record["input"], "slm")
        rd = await runner.render(record["input"], record["expected"]["extract"], record["expected"]["tool_summary"],
                                 "slm")
        after = await plain.extract(record["input"], "slm")
        return ex, rd, after

    ex, rd, after = asyncio.run(run())
    for s in (ex, rd):
        assert s.fallback_used and s.fallback_reason == "timeout"
        _check_contract(s)
    assert ex.document == record["expected"]["extract"]
    assert after.completion_tokens > 0  # the cancelled requests did not wedge the worker
    assert engine.runtime.stats["cancelled"] >= 1


def test_concurrent_requests_are_served_in_order(engine, records):
    runner = PassRunner({"slm": engine})
    batch = records[2:5]

    async def run():
        return await asyncio.gather(*(runner.extract(r["input"], "slm") for r in batch))

    served = asyncio.run(run())
    sequential = asyncio.run(_sequential(runner, batch))
    assert [s.engine_document for s in served] == [s.engine_document for s in sequential]
    for s in served:
        assert extract_errors(s.document) == []


async def _sequential(runner: PassRunner, batch: list[dict]) -> list[Served]:
    return [await runner.extract(r["input"], "slm") for r in batch]


def test_full_render_mode_serves_valid_output(engine, records):
    full = SlmEngine(SlmSettings(adapter="transformers", model="bundled", render_mode="full", max_new_tokens_render=96),
                     adapter=engine.runtime)
    asyncio.run(full.start())
    assert full.readiness()[0]
    runner = PassRunner({"slm": full})
    picked = [r for r in records if r["expected"]["render"]["widgets"][0]["widget_type"] == "calendar_view"][:1]
    picked += records[:1]

    async def run():
        return [await runner.render(r["input"], r["expected"]["extract"], r["expected"]["tool_summary"], "slm")
                for r in picked]

    for s in asyncio.run(run()):
        assert render_errors(s.document) == []
        _check_contract(s)
