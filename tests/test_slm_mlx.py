"""The mlx adapter on the real bundled model (SmolLM2-135M-Instruct) through mlx[cpu] on Linux.

Skips with the reason when mlx / mlx-lm are not importable (tests/install_vllm_mlx.sh installs
them). The model loads once per module. MLX's CPU backend is slow on this 2-core machine
(~0.1 s per decode step, and prefill ~13x slower again without the system OpenBLAS that
tests/install_vllm_mlx.sh installs), so the budgets here are smaller than in the vllm tests.
"""

from __future__ import annotations

import asyncio
import ctypes.util
import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from adapters.base import GenerationRequest
from tests.test_slm_vllm import (
    EXTRACT_SCHEMA,
    check_cancel,
    check_concurrency,
    check_engine_passes,
    check_extract_outputs,
    check_length_stop,
    extract_requests,
    require_module,
)

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def mlx_env():
    require_module("mlx_lm", 'pip install "mlx[cpu]" mlx-lm (mlx-lm alone on Apple Silicon)')
    require_module("mlx.core", 'pip install "mlx[cpu]" (plain mlx has no backend on Linux)')
    from adapters.mlx import MlxAdapter
    from adapters.models import resolve_model
    from core.settings import SlmSettings
    from engines.slm.engine import adapter_options_for

    # warmup=False: the start-up warm-up is tested in tests/test_warm_readiness.py; here it would add two MLX generations
    settings = SlmSettings(adapter="mlx", model="bundled", max_new_tokens_extract=48, max_new_tokens_render=48,
                           warmup=False)
    loop = asyncio.new_event_loop()
    adapter = MlxAdapter(resolve_model("bundled"), adapter_options_for(settings))
    started = time.perf_counter()
    loop.run_until_complete(adapter.load())
    compile_s = loop.run_until_complete(adapter.prepare({"extract": EXTRACT_SCHEMA}))
    print(f"\nmlx: loaded in {time.perf_counter() - started:.1f} s on {adapter.device}, grammar {compile_s}")
    try:
        yield loop, adapter, settings
    finally:
        loop.run_until_complete(adapter.close())
        loop.close()


def test_mlx_extract_outputs_are_contract_valid(mlx_env):
    loop, adapter, _ = mlx_env
    report: list[str] = []
    loop.run_until_complete(check_extract_outputs(adapter, 1, report))
    print("\n" + "\n".join(report))


def test_mlx_tiny_budget_is_a_length_stop(mlx_env):
    loop, adapter, _ = mlx_env
    loop.run_until_complete(check_length_stop(adapter))


def test_mlx_concurrent_requests_queue(mlx_env):
    loop, adapter, _ = mlx_env
    gens = loop.run_until_complete(check_concurrency(adapter, max_new_tokens=12, count=4))
    # Queued on one worker: the prefix KV of an earlier request is reused by a later one.
    assert any(g.extra["cached_prompt_tokens"] > 0 for g in gens)


def test_mlx_cancelled_request_does_not_wedge(mlx_env):
    loop, adapter, _ = mlx_env
    loop.run_until_complete(check_cancel(adapter))


def test_mlx_jump_forward_is_exact_and_saves_steps(mlx_env):
    """Draft-and-verify jump-forward gives the single-stepping output with fewer model steps."""
    loop, adapter, _ = mlx_env
    request = extract_requests(1, max_new_tokens=40)[0]
    saved = adapter.jump_forward
    try:
        adapter.jump_forward = False
        plain = loop.run_until_complete(adapter.generate(request))
        adapter.jump_forward = True
        jumped = loop.run_until_complete(adapter.generate(request))
    finally:
        adapter.jump_forward = saved
    assert jumped.text == plain.text
    assert jumped.finish_reason == plain.finish_reason
    assert plain.forced_tokens == 0 and plain.model_steps == plain.completion_tokens
    assert jumped.forced_tokens > 0
    assert jumped.model_steps + jumped.forced_tokens == jumped.completion_tokens
    print(f"\nmlx jump-forward: {plain.model_steps} -> {jumped.model_steps} model steps for "
          f"{jumped.completion_tokens} tokens")


def test_mlx_peft_lora_is_converted_and_loaded(mlx_env, tmp_path):
    """A PEFT LoRA folder (zero B: no change) converts to mlx-lm's format and serves per request."""
    import mlx.core as mx

    loop, adapter, _ = mlx_env
    config = json.loads((adapter._model.path / "config.json").read_text())
    hidden, rank = int(config["hidden_size"]), 4
    weights = {}
    for layer in range(int(config["num_hidden_layers"])):
        prefix = f"base_model.model.model.layers.{layer}.self_attn.q_proj"
        weights[f"{prefix}.lora_A.weight"] = mx.random.normal((rank, hidden)) * 0.01
        weights[f"{prefix}.lora_B.weight"] = mx.zeros((hidden, rank))
    lora = tmp_path / "peft-lora"
    lora.mkdir()
    mx.save_safetensors(str(lora / "adapter_model.safetensors"), weights)
    (lora / "adapter_config.json").write_text(json.dumps(
        {"peft_type": "LORA", "r": rank, "lora_alpha": 8, "target_modules": ["q_proj"]}))
    adapter.options = dataclasses.replace(adapter.options, cache_dir=tmp_path / "cache")
    # A short prompt: the LoRA slot is a second model copy with its own (cold) KV cache, and MLX's
    # CPU prefill of the ~900-token system prompt alone takes ~40 s here.
    messages = [{"role": "user", "content": 'Trip to Rome, 2 adults. Answer {"slot_updates":...}'}]
    request = GenerationRequest(messages=messages, schema_key="extract", max_new_tokens=12)
    base = loop.run_until_complete(adapter.generate(request))
    with_lora = loop.run_until_complete(adapter.generate(
        GenerationRequest(messages=messages, schema_key="extract", max_new_tokens=12, lora=str(lora))))
    assert with_lora.text == base.text  # lora_B = 0: the adapter adds nothing
    assert list((tmp_path / "cache" / "mlx-lora").glob("*/adapters.safetensors"))


def test_mlx_slm_engine_serves_valid_passes(mlx_env):
    # 2 turns, not the 12 of the transformers tier: MLX's CPU backend is slower than torch on Linux
    # (its reference BLAS ~20x for a 512x576 @ 576x1536 product, 147 ms against 7.5 ms; with the
    # system OpenBLAS the adapter loads ~12 ms, but a decode step still costs ~95 ms), so each pass
    # costs seconds here. The contract checks are the same; Apple Silicon runs them at full size.
    loop, adapter, settings = mlx_env
    lines = loop.run_until_complete(check_engine_passes(adapter, settings, turns=2, concurrent=False))
    print("\n" + "\n".join(lines))


def test_mlx_runs_on_the_system_openblas_when_installed(mlx_env):
    """mlx[cpu] links the reference BLAS; the adapter loads the system OpenBLAS before mlx (slm.mlx_cpu_blas=auto),
    and with it jump-forward is on on CPU (a short row batch then costs about one row)."""
    _loop, adapter, _ = mlx_env
    expected = ctypes.util.find_library("openblas")
    if sys.platform != "linux" or expected is None:
        pytest.skip("no system OpenBLAS here (apt install libopenblas0-pthread)")
    assert adapter.cpu_blas == expected
    assert any("openblas" in line for line in Path("/proc/self/maps").read_text().splitlines())
    assert adapter.jump_forward is True


@pytest.mark.skipif(sys.platform != "linux", reason="the BLAS preload is Linux only")
def test_cpu_blas_setting_off_a_bad_path_and_a_late_load():
    """``off`` loads nothing; a path that does not load is a one-line error naming the setting; after mlx.core is
    imported a load is refused with a warning (it would change nothing)."""
    script = """
import logging, sys
logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stdout)
from adapters.base import AdapterUnavailableError
from adapters.mlx import load_cpu_blas
print("off:", load_cpu_blas("off"))
try:
    load_cpu_blas("/nonexistent/libblas-nope.so")
except AdapterUnavailableError as exc:
    print("bad:", exc)
import importlib.util
if importlib.util.find_spec("mlx") is not None:
    import mlx.core
    print("late:", load_cpu_blas("auto"))
"""
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "off: None" in out.stdout
    assert "bad: slm.mlx_cpu_blas='/nonexistent/libblas-nope.so' could not be loaded" in out.stdout
    if "late:" in out.stdout:
        assert "late: None" in out.stdout
        if ctypes.util.find_library("openblas"):
            assert "mlx.core was imported before the CPU BLAS" in out.stdout
