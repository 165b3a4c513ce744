"""Fast unit tests of constrained decoding on a tiny random-weight model built offline.

The model is a 2-layer, 64-wide Llama with random weights and the bundled SmolLM2 tokenizer, so
the grammars are the real ones (real vocabulary), while a forward step costs about a millisecond.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.conftest_slm import load_corpus_records, require_bundled, spread, tiny_model

require_bundled()

from adapters.base import AdapterUnavailableError, GenerationRequest  # noqa: E402
from adapters.options import TransformersOptions  # noqa: E402
from adapters.transformers import TransformersAdapter  # noqa: E402
from contracts.extract import ExtractOutput  # noqa: E402
from contracts.validation import extract_errors, render_errors  # noqa: E402
from core.settings import SlmSettings  # noqa: E402
from engines.base import EngineError  # noqa: E402
from engines.slm import grammars, prompts  # noqa: E402
from engines.slm.engine import SlmEngine, parse_document  # noqa: E402

MAX_NEW = 160


@pytest.fixture(scope="module")
def tiny():
    return tiny_model(seed=0)


@pytest.fixture(scope="module")
def turns() -> list[dict]:
    return spread(load_corpus_records(limit_per_file=300), 16)


def _adapter(tiny, **kwargs) -> TransformersAdapter:
    adapter = TransformersAdapter(TransformersOptions(model_name="tiny", **kwargs), preloaded=tiny)
    asyncio.run(_prepare(adapter, "plan"))
    return adapter


async def _prepare(adapter: TransformersAdapter, mode: str) -> dict[str, float]:
    await adapter.load()
    return await adapter.prepare(grammars.schema_texts(mode))


def _requests(record: dict) -> list[GenerationRequest]:
    turn = record["input"]
    expected = record["expected"]
    return [
        GenerationRequest(prompts.extract_messages(turn), grammars.EXTRACT, MAX_NEW),
        GenerationRequest(prompts.render_messages(turn, expected["extract"], expected["tool_summary"]),
                          grammars.RENDER_PLAN, MAX_NEW),
    ]


def test_grammars_compile_for_both_render_modes(tiny):
    adapter = TransformersAdapter(TransformersOptions(model_name="tiny"), preloaded=tiny)
    seconds = asyncio.run(_prepare(adapter, "full"))
    assert set(seconds) == {grammars.EXTRACT, grammars.RENDER_FULL}
    seconds.update(asyncio.run(adapter.prepare(grammars.schema_texts("plan"))))
    assert grammars.RENDER_PLAN in seconds
    # compiled once: preparing the same schema again costs nothing
    again = asyncio.run(adapter.prepare(grammars.schema_texts("plan")))
    assert again == {grammars.EXTRACT: 0.0, grammars.RENDER_PLAN: 0.0}


def test_missing_is_enumerated_in_canonical_order():
    schema = json.dumps(grammars.extract_schema())
    assert '["region","dates","party"]' in schema.replace(" ", "")
    assert '["dates","region"]' not in schema.replace(" ", "")


def test_constrained_decoding_always_yields_valid_documents(tiny, turns):
    adapter = _adapter(tiny)
    stops = 0
    total = 0

    async def run_all():
        return [await adapter.generate(req) for record in turns for req in _requests(record)]

    generations = asyncio.run(run_all())
    for gen, req in zip(generations, [r for rec in turns for r in _requests(rec)], strict=True):
        total += 1
        doc = parse_document(gen.text)
        if gen.finish_reason == "length":
            assert gen.completion_tokens == MAX_NEW
            continue
        stops += 1
        assert gen.finish_reason == "stop"
        assert isinstance(doc, dict), gen.text
        if req.schema_key == grammars.EXTRACT:
            assert extract_errors(doc) == [], gen.text
            ExtractOutput.model_validate(doc, strict=True)
        else:
            grammars.plan_model().model_validate(doc, strict=True)
    assert stops >= total * 0.75, f"only {stops}/{total} generations ended on the grammar"


def test_jump_forward_gives_the_same_text_in_fewer_steps(tiny, turns):
    with_jf = _adapter(tiny, jump_forward=True)
    without = _adapter(tiny, jump_forward=False)

    async def run(adapter):
        return [await adapter.generate(req) for record in turns[:8] for req in _requests(record)]

    a = asyncio.run(run(with_jf))
    b = asyncio.run(run(without))
    assert [g.text for g in a] == [g.text for g in b]
    assert [g.finish_reason for g in a] == [g.finish_reason for g in b]
    assert sum(g.forced_tokens for g in a) > 0
    assert sum(g.model_steps for g in a) < sum(g.model_steps for g in b)
    assert all(g.forced_tokens == 0 for g in b)
    for g in a:  # every forced token saved one model step (the last step may emit forced tokens only)
        assert g.model_steps + g.forced_tokens - g.completion_tokens in (0, 1)
    for g in b:
        assert g.model_steps == g.completion_tokens


def test_prefix_cache_gives_the_same_text(tiny, turns):
    cached = _adapter(tiny, prefix_cache=True)
    plain = _adapter(tiny, prefix_cache=False)
    reqs = [r for record in turns[:4] for r in _requests(record)]

    async def run(adapter):
        return [await adapter.generate(req) for req in reqs]

    a = asyncio.run(run(cached))
    b = asyncio.run(run(plain))
    assert [g.text for g in a] == [g.text for g in b]
    assert all(g.extra["prefix_hit"] for g in a)
    assert all(g.extra["prefill_tokens"] < g.prompt_tokens for g in a)
    assert not any(g.extra["prefix_hit"] for g in b)


def test_force_mode_stays_valid_and_saves_more_steps(tiny, turns):
    verify = _adapter(tiny, jump_forward_mode="verify")
    force = _adapter(tiny, jump_forward_mode="force")
    reqs = [r for record in turns[:6] for r in _requests(record)]

    async def run(adapter):
        return [await adapter.generate(req) for req in reqs]

    for gen, req in zip(asyncio.run(run(force)), reqs, strict=True):
        if gen.finish_reason == "stop":
            doc = parse_document(gen.text)
            if req.schema_key == grammars.EXTRACT:
                assert extract_errors(doc) == []
            else:
                grammars.plan_model().model_validate(doc, strict=True)
    assert asyncio.run(run(verify))  # both modes run


def test_concurrent_requests_queue_without_races(tiny, turns):
    adapter = _adapter(tiny)
    reqs = [r for record in turns[:3] for r in _requests(record)]

    async def sequential():
        return [(await adapter.generate(r)).text for r in reqs]

    async def concurrent():
        return [g.text for g in await asyncio.gather(*(adapter.generate(r) for r in reqs))]

    assert asyncio.run(concurrent()) == asyncio.run(sequential())


def test_cancelled_request_frees_the_worker(tiny, turns):
    adapter = _adapter(tiny)
    req = _requests(turns[0])[0]
    long_req = GenerationRequest(req.messages, req.schema_key, 4000)

    async def scenario():
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(adapter.generate(long_req), 0.01)
        return await adapter.generate(req)

    gen = asyncio.run(scenario())
    assert gen.completion_tokens > 0
    assert adapter.stats["cancelled"] >= 1


def test_unconstrained_generation_runs(tiny, turns):
    adapter = _adapter(tiny)
    req = _requests(turns[0])[0]
    gen = asyncio.run(adapter.generate(GenerationRequest(req.messages, req.schema_key, 12, constrained=False)))
    assert gen.completion_tokens <= 12
    assert gen.mask_seconds == 0.0


def test_lora_without_peft_is_a_clear_error(tiny, turns, monkeypatch, tmp_path):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "peft" else real(name, *a))
    adapter = _adapter(tiny)
    req = _requests(turns[0])[0]
    with pytest.raises(AdapterUnavailableError, match="peft"):
        asyncio.run(adapter.generate(GenerationRequest(req.messages, req.schema_key, 8, lora=str(tmp_path))))


# --- the engine on the tiny model -------------------------------------------------------------------


def _engine(tiny, **settings) -> SlmEngine:
    adapter = TransformersAdapter(TransformersOptions(model_name="tiny"), preloaded=tiny)
    return SlmEngine(SlmSettings(adapter="transformers", model="bundled", **settings), adapter=adapter)


def test_engine_is_not_ready_before_start(tiny, turns):
    engine = _engine(tiny)
    ready, reason = engine.readiness()
    assert not ready and "not started" in reason
    with pytest.raises(EngineError) as info:
        asyncio.run(engine.extract(turns[0]["input"]))
    assert info.value.reason == "unavailable"


def test_engine_passes_return_parsed_documents(tiny, turns):
    engine = _engine(tiny)

    async def scenario():
        await engine.start()
        assert engine.readiness() == (True, "ready")
        record = turns[2]
        ex = await engine.extract(record["input"])
        rd = await engine.render(record["input"], record["expected"]["extract"], record["expected"]["tool_summary"])
        return ex, rd

    ex, rd = asyncio.run(scenario())
    assert engine.adapter == "transformers" and engine.model == "tiny"
    assert ex.text is not None and ex.completion_tokens > 0 and ex.prompt_tokens > ex.completion_tokens
    if ex.finish_reason == "stop":
        assert extract_errors(ex.document) == []
    if rd.finish_reason == "stop":
        assert render_errors(rd.document) == []  # plan assembled into full envelopes
        assert rd.extra["plan"]


def test_plan_assembly_copies_tool_data(turns):
    record = next(r for r in load_corpus_records(limit_per_file=400)
                  if r["expected"]["tool_summary"]["tool"] == "mcp/duffel.search_offers")
    ts = record["expected"]["tool_summary"]
    plan = {"bot_message": "Here is the first flight batch. Book one to create a Duffel test order.",
            "widgets": [{"widget_type": "flight_list", "variant": "default"}]}
    doc = SlmEngine.assemble(record["input"], record["expected"]["extract"], ts, plan)
    assert doc is not None and render_errors(doc) == []
    assert doc["widgets"][0]["payload"]["items"] == ts["data"]["offers"]
    assert doc == record["expected"]["render"]
    assert SlmEngine.assemble(record["input"], record["expected"]["extract"], ts,
                              {"bot_message": "made up", "widgets": []}) is None


def test_int8_quantized_adapter_stays_valid(tiny, turns):
    import torch

    adapter = _adapter(tiny, quantize="int8")
    assert adapter.quantize == "int8"
    quantized = [m for m in adapter.model.modules() if isinstance(m, torch.ao.nn.quantized.dynamic.Linear)]
    assert quantized, "no linear layer was quantized"
    assert not any(isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in tiny[0].modules())
    for record in turns[:4]:
        for request in _requests(record):
            gen = asyncio.run(adapter.generate(request))
            if gen.finish_reason == "stop":
                doc = json.loads(gen.text)
                errors = extract_errors(doc) if request.schema_key == grammars.EXTRACT else None
                assert not errors, errors
    with pytest.raises(AdapterUnavailableError, match="int8"):
        req = _requests(turns[0])[0]
        asyncio.run(adapter.generate(GenerationRequest(req.messages, req.schema_key, 4, lora="/nowhere")))


def test_quantize_settings():
    assert SlmSettings().quantize == "none"
    with pytest.raises(ValueError, match="LoRA"):
        SlmSettings(quantize="int8", lora_render="/x")
    with pytest.raises(ValueError):
        TransformersOptions(quantize="int4")  # type: ignore[arg-type]


def test_grammars_state_what_xgrammar_enforces():
    for mode in ("plan", "full"):
        for text in grammars.schema_texts(mode).values():
            assert '"oneOf"' not in text
    node = {"properties": {"oneOf": {"oneOf": [{"type": "string"}]}}, "oneOf": [{"type": "object"}]}
    assert grammars.as_decoded(node) == {"properties": {"oneOf": {"anyOf": [{"type": "string"}]}},
                                         "anyOf": [{"type": "object"}]}
