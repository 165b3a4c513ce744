"""The ``mlx`` adapter: mlx-lm models with an xgrammar logits mask applied by xgrammar's MLX kernel.

The Hugging Face folder from :func:`adapters.models.resolve_model` is loaded with
``mlx_lm.load`` (which reads the top-level ``rope_theta`` that the conversion writes). Decoding
is greedy under an xgrammar :class:`GrammarMatcher` (the loop of :mod:`adapters.decode`, shared with the
transformers adapter): each step fills a token bitmask and applies
it to the MLX logits with ``xgrammar.kernels.apply_token_bitmask_mlx`` (xgrammar's own
``contrib.mlxlm`` processor is not used: it calls a kernel name that 0.2.8 does not export).

Speed levers, each switchable for measurement:

- **jump-forward** (``slm.jump_forward``): when the grammar forces text (a key name, ``":"``,
  closing braces), its tokens are fed to the model in the same step as the sampled token and
  verified against the model's own masked greedy choices, which the same forward pass yields:
  the output is exactly that of single stepping, with one model step for a whole forced run
  (a rejected draft tail is trimmed from the KV cache). The grammar ends the output itself
  (no step for the stop token).
- **prefix reuse** (``slm.prefix_cache``): one KV cache per grammar key (per pass); the cache of
  the previous request of the same pass is trimmed back to the longest common token prefix (the
  fixed system prompt) and reused. The slm engine's warm-up generation per pass fills these caches
  before ``/readyz`` turns 200.

Concurrency: one worker thread owns MLX and the models; requests queue in order, and a
cancelled request stops at its next step (or never starts), freeing the worker.

LoRA: ``request.lora`` names an adapter folder in mlx-lm's format (``adapters.safetensors``) or
a PEFT folder (``adapter_model.safetensors``), which is converted once into mlx-lm's format in
the user cache. Each adapter gets its own copy of the model (``mlx_lm.load(path, adapter_path=...)``).

On Linux this runs on the CPU with ``pip install "mlx[cpu]" mlx-lm``; on Apple Silicon the same
code runs on the GPU with ``pip install mlx-lm``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import importlib.util
import json
import logging
import platform
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adapters.base import AdapterUnavailableError, Generation, GenerationRequest, ModelFolderAdapter
from adapters.decode import greedy_decode
from adapters.options import MlxOptions
from adapters.xgrammar_support import GrammarStore, jump_forward_draft, require_xgrammar, tokenizer_info

if TYPE_CHECKING:
    from adapters.models import ResolvedModel

log = logging.getLogger(__name__)

PREFILL_CHUNK = 512
"""Prompt tokens per forward pass during prefill (bounds peak memory on long prompts)."""


def _install_hint() -> str:
    if sys.platform == "darwin" and platform.machine() == "arm64":
        return "pip install mlx-lm"
    return 'pip install "mlx[cpu]" mlx-lm'


_BLAS_LOCK = threading.Lock()
_blas_loaded: dict[str, str | None] = {}


def load_cpu_blas(choice: str = "auto") -> str | None:
    """Load an optimized BLAS into the process's global symbol scope before ``mlx.core`` is first imported.

    The ``mlx[cpu]`` wheels for Linux link the reference (netlib) BLAS: one 512x576 @ 576x1536 float32
    product takes about 170 ms there, against about 12 ms once OpenBLAS provides ``cblas_sgemm`` (2 cores),
    so a ~900-token prefill of the bundled model drops from ~40 s to a few. The dynamic linker resolves
    ``libmlx.so``'s BLAS symbols in the global scope first, so a library opened with ``RTLD_GLOBAL`` before
    that import takes the place of the bundled one; opened after it, it changes nothing (then this logs
    a warning). ``choice``: ``auto`` (the system OpenBLAS, ``apt install libopenblas0-pthread``, when
    ``ctypes.util.find_library`` finds it), ``off``, or a library path (which must load). Only on Linux:
    macOS builds use Accelerate. Returns the library loaded (or already loaded by an earlier call), else
    ``None``.
    """
    import ctypes
    import ctypes.util

    if sys.platform != "linux" or choice == "off":
        return None
    with _BLAS_LOCK:
        if choice in _blas_loaded:
            return _blas_loaded[choice]
        path = ctypes.util.find_library("openblas") if choice == "auto" else choice
        loaded: str | None = None
        if path:
            if "mlx.core" in sys.modules:
                log.warning("mlx adapter: mlx.core was imported before the CPU BLAS %s could be loaded; "
                            "mlx keeps its reference BLAS", path)
            else:
                try:
                    ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
                    loaded = path
                except OSError as exc:
                    if choice != "auto":
                        raise AdapterUnavailableError(
                            f"slm.mlx_cpu_blas={choice!r} could not be loaded ({exc})") from exc
                    log.warning("mlx adapter: the system OpenBLAS %s did not load (%s)", path, exc)
        _blas_loaded[choice] = loaded
        return loaded


def _require_mlx(cpu_blas: str = "auto") -> str | None:
    """Check the packages, load the CPU BLAS (:func:`load_cpu_blas`), import ``mlx.core``; returns the BLAS."""
    missing = [pkg for module, pkg in (("mlx", "mlx"), ("mlx_lm", "mlx-lm"), ("xgrammar", "xgrammar"))
               if importlib.util.find_spec(module) is None]
    if missing:
        raise AdapterUnavailableError(
            f"the mlx adapter needs the Python package(s) {', '.join(repr(m) for m in missing)} "
            f"({_install_hint()})"
        )
    blas = load_cpu_blas(cpu_blas)
    try:
        import mlx.core  # noqa: F401  # plain mlx on Linux has no backend: importing fails
    except ImportError as exc:
        raise AdapterUnavailableError(
            f"the mlx adapter could not import mlx.core ({exc}); on Linux install the CPU backend: "
            f"{_install_hint()}"
        ) from exc
    return blas


class RequestCancelled(Exception):
    """The caller cancelled the request; the worker stopped it."""


@dataclass
class _Job:
    request: GenerationRequest
    cancelled: threading.Event = field(default_factory=threading.Event)


@dataclass
class _KV:
    """A reusable KV cache and the tokens it holds."""

    cache: Any = None
    cached_tokens: list[int] = field(default_factory=list)


@dataclass
class _Slot:
    """One loaded model (base, or base + one LoRA adapter) and one reusable KV cache per grammar key.

    Each pass has its own constant system prompt, so keying the cache by grammar keeps the prefix of
    every pass warm when extract and render requests alternate (one shared cache would re-prefill
    the whole system prompt at every switch).
    """

    model: Any
    caches: dict[str, _KV] = field(default_factory=dict)

    def kv(self, key: str) -> _KV:
        return self.caches.setdefault(key, _KV())


# --- LoRA -----------------------------------------------------------------------------------------


def mlx_adapter_folder(folder: str | Path, cache_dir: Path | str | None = None) -> Path:
    """An mlx-lm adapter folder for ``folder``: itself, or its one-time conversion from PEFT format."""
    src = Path(folder).expanduser().resolve()
    if (src / "adapters.safetensors").is_file():
        return src
    weights = src / "adapter_model.safetensors"
    config_path = src / "adapter_config.json"
    if not (weights.is_file() and config_path.is_file()):
        raise FileNotFoundError(f"LoRA adapter {src}: expected adapters.safetensors (mlx-lm) or "
                                "adapter_config.json + adapter_model.safetensors (PEFT)")
    from adapters.models import cache_root

    stat = weights.stat()
    key = hashlib.sha256(f"{src}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    out = cache_root(cache_dir) / "mlx-lora" / f"{src.name}-{key}"
    if (out / "adapters.safetensors").is_file():
        return out
    _convert_peft_lora(src, out)
    return out


def _convert_peft_lora(src: Path, out: Path) -> None:
    """PEFT ``lora_A`` (r, in) / ``lora_B`` (out, r) -> mlx-lm ``lora_a`` (in, r) / ``lora_b`` (r, out)."""
    import mlx.core as mx

    config = json.loads((src / "adapter_config.json").read_text())
    rank = int(config["r"])
    scale = float(config.get("lora_alpha", rank)) / rank
    weights = mx.load(str(src / "adapter_model.safetensors"))
    converted: dict[str, Any] = {}
    keys: set[str] = set()
    layers: set[int] = set()
    for name, tensor in weights.items():
        if ".lora_A." not in name and ".lora_B." not in name:
            continue
        base = name.removeprefix("base_model.model.")
        module = base.split(".lora_A." if ".lora_A." in base else ".lora_B.", 1)[0]
        leaf = "lora_a" if ".lora_A." in base else "lora_b"
        converted[f"{module}.{leaf}"] = tensor.T
        parts = module.split(".")
        if "layers" in parts:
            idx = parts.index("layers")
            layers.add(int(parts[idx + 1]))
            keys.add(".".join(parts[idx + 2:]))
    if not converted:
        raise ValueError(f"LoRA adapter {src}: no lora_A/lora_B tensors in adapter_model.safetensors")
    tmp = out.with_name(out.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    mx.save_safetensors(str(tmp / "adapters.safetensors"), converted)
    num_layers = max(layers) + 1 if layers else 0
    (tmp / "adapter_config.json").write_text(json.dumps({
        "fine_tune_type": "lora",
        # mlx-lm applies LoRA to the last num_layers blocks; counting from block 0 covers every
        # block the PEFT adapter touches (blocks it does not touch keep lora_b = 0).
        "num_layers": num_layers,
        "lora_parameters": {"rank": rank, "scale": scale, "dropout": 0.0, "keys": sorted(keys)},
        "converted_from": str(src),
    }, indent=2))
    tmp.rename(out)


# --- CPU layout -------------------------------------------------------------------------------------


def pretranspose_for_cpu(model: Any) -> int:
    """Store every dense projection as ``W.T`` (contiguous) so a decode step is ``x @ W_t``.

    ``nn.Linear`` computes ``x @ W.T`` with a strided view, which MLX's CPU backend runs about
    four times slower than the same product on a contiguous matrix (1.2 ms vs 0.3 ms for one
    576x1536 projection of the bundled model); a decode step is ~210 such products plus the
    tied 49152-row output head. Outputs are bit-identical. Metal does not need it. Returns how
    many modules were replaced.
    """
    import mlx.core as mx
    import mlx.nn as nn
    from mlx.utils import tree_unflatten

    class _TransposedLinear(nn.Module):
        def __init__(self, linear: nn.Linear) -> None:
            super().__init__()
            self.weight_t = mx.contiguous(linear.weight.T)
            if "bias" in linear:
                self.bias = linear.bias

        def __call__(self, x: mx.array) -> mx.array:
            y = x @ self.weight_t
            return y + self.bias if "bias" in self else y

    class _TransposedEmbedding(nn.Embedding):
        def __init__(self, embedding: nn.Embedding) -> None:
            nn.Module.__init__(self)
            self.weight = embedding.weight
            self.weight_t = mx.contiguous(embedding.weight.T)

        def as_linear(self, x: mx.array) -> mx.array:
            return x @ self.weight_t

    replaced: list[tuple[str, nn.Module]] = []
    for name, module in model.named_modules():
        if type(module) is nn.Linear:
            replaced.append((name, _TransposedLinear(module)))
        elif type(module) is nn.Embedding:
            replaced.append((name, _TransposedEmbedding(module)))
    if replaced:
        model.update_modules(tree_unflatten(replaced))
        mx.eval(model.parameters())
    return len(replaced)


# --- the adapter ------------------------------------------------------------------------------------


class MlxAdapter(ModelFolderAdapter):
    """mlx-lm + xgrammar (MLX bitmask kernel), jump-forward, prefix KV reuse, one worker thread; built with
    :class:`~adapters.options.MlxOptions` (LoRAs, caches, jump-forward, the CPU BLAS)."""

    name = MlxOptions.name
    options: MlxOptions

    def __init__(self, model: ResolvedModel, options: MlxOptions | None = None) -> None:
        options = options or MlxOptions()
        super().__init__(model, options)
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._slots: dict[str | None, _Slot] = {}
        self._tokenizer: Any = None
        self._hf_tokenizer: Any = None
        self._xgr: Any = None
        self._grammars: GrammarStore | None = None
        self._bitmask: Any = None
        self._vocab_size = 0
        self._eos_ids: set[int] = set()
        self.jump_forward = options.jump_forward
        self.prefix_cache = options.prefix_cache
        self.cpu_blas: str | None = None
        """The BLAS library loaded for MLX's CPU backend (:func:`load_cpu_blas`), ``None`` for mlx's own."""

    # --- worker plumbing ---------------------------------------------------------------------------

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self._executor is None:
            raise RuntimeError("mlx adapter: load() has not been called")
        return await asyncio.wrap_future(self._executor.submit(fn, *args))

    # --- lifecycle ---------------------------------------------------------------------------------

    async def load(self) -> None:
        if self._slots:
            return
        self.cpu_blas = _require_mlx(self.options.cpu_blas)
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlx")
        started = time.perf_counter()
        await self._call(self._load_sync)
        self.load_seconds = time.perf_counter() - started
        log.info("mlx adapter: loaded %s on %s in %.1f s (CPU BLAS: %s)", self._model.name, self.device,
                 self.load_seconds, self.cpu_blas or "mlx's own")

    def _load_sync(self) -> None:
        import mlx.core as mx
        from mlx_lm import load

        self._xgr = require_xgrammar()
        self.device = str(mx.default_device())
        if not self.options.jump_forward_on_cpu and mx.default_device() == mx.cpu and self.cpu_blas is None:
            # With its reference BLAS, MLX's CPU matmul costs the same per row whatever the batch of
            # rows (measured: 0.3 ms per row for a 576x1536 projection at 1, 2, 4, 8 and 32 rows), so
            # feeding forced tokens in one step saves nothing there. With OpenBLAS (load_cpu_blas) or
            # Metal a short row batch costs about one row: 180 extract tokens took 8.4 s in 64 steps
            # against 17 s in 180. MlxOptions(jump_forward_on_cpu=True) forces it (e.g. to measure it).
            self.jump_forward = False
        model, tokenizer = load(str(self._model.path))
        hf = getattr(tokenizer, "_tokenizer", tokenizer)
        config = json.loads((Path(self._model.path) / "config.json").read_text())
        vocab = int(config.get("vocab_size") or len(hf))
        eos = set(getattr(tokenizer, "eos_token_ids", None) or ())
        if hf.eos_token_id is not None:
            eos.add(int(hf.eos_token_id))
        info = tokenizer_info(hf, vocab, sorted(eos))
        self._grammars = GrammarStore(info)
        self._bitmask = self._xgr.allocate_token_bitmask(1, info.vocab_size)
        self._vocab_size = info.vocab_size
        self._eos_ids = eos
        self._tokenizer, self._hf_tokenizer = tokenizer, hf
        self._slots[None] = _Slot(self._prepare_model(model))
        for path in self._configured_loras():
            self._slot_for(path)

    def _prepare_model(self, model: Any) -> Any:
        import mlx.core as mx

        if mx.default_device() == mx.cpu:
            pretranspose_for_cpu(model)
        return model

    def _slot_for(self, lora: str | None) -> _Slot:
        key = str(Path(lora).expanduser().resolve()) if lora else None
        slot = self._slots.get(key)
        if slot is None:
            from mlx_lm import load

            adapter = mlx_adapter_folder(key, self.options.cache_dir)  # type: ignore[arg-type]
            model, _ = load(str(self._model.path), adapter_path=str(adapter))
            slot = self._slots[key] = _Slot(self._prepare_model(model))
            log.info("mlx adapter: loaded LoRA adapter %s", Path(adapter).name)
        return slot

    async def load_lora(self, folder: str) -> None:
        """The model copy with the LoRA of ``folder`` (converted from PEFT once), loaded now if it is not yet
        (the configured ones load with the model)."""
        await self._call(self._slot_for, folder)

    async def close(self) -> None:
        executor, self._executor = self._executor, None
        self._slots.clear()
        self._grammars = None
        if executor is not None:
            await asyncio.to_thread(executor.shutdown, True)

    # --- grammars ----------------------------------------------------------------------------------

    async def prepare(self, schemas: dict[str, str]) -> dict[str, float]:
        return await self._call(self._prepare_sync, dict(schemas))

    def _prepare_sync(self, schemas: dict[str, str]) -> dict[str, float]:
        if self._grammars is None:
            raise RuntimeError("mlx adapter: load() has not completed")
        return {key: self._grammars.compile_json_schema(key, text) for key, text in schemas.items()}

    # --- generation --------------------------------------------------------------------------------

    async def generate(self, request: GenerationRequest) -> Generation:
        job = _Job(request)
        try:
            return await self._call(self._decode, job)
        except asyncio.CancelledError:
            job.cancelled.set()  # a queued job never starts; a running one stops at its next step
            raise

    def _prompt_ids(self, messages: list[dict[str, str]]) -> list[int]:
        text = self._hf_tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return list(self._hf_tokenizer.encode(text, add_special_tokens=False))

    def _decode(self, job: _Job) -> Generation:
        import mlx.core as mx
        from mlx_lm.models.cache import make_prompt_cache, trim_prompt_cache
        from xgrammar.kernels.apply_token_bitmask_mlx import apply_token_bitmask_mlx

        if job.cancelled.is_set():
            raise RequestCancelled("cancelled before it started")
        request = job.request
        started = time.perf_counter()
        matcher = None
        if request.constrained:
            # The grammar ends the output itself: no model step for the stop token.
            assert self._grammars is not None
            matcher = self._xgr.GrammarMatcher(self._grammars.get(request.schema_key),
                                               terminate_without_stop_token=True)
        slot = self._slot_for(request.lora)
        kv = slot.kv(request.schema_key)
        prompt = self._prompt_ids(request.messages)

        # Prefix reuse: keep the cached KV of the longest common prefix with the previous request.
        reused = 0
        if self.prefix_cache and kv.cache is not None:
            for a, b in zip(kv.cached_tokens, prompt, strict=False):
                if a != b:
                    break
                reused += 1
            reused = min(reused, len(prompt) - 1)
            trim_prompt_cache(kv.cache, len(kv.cached_tokens) - reused)
            del kv.cached_tokens[reused:]
        else:
            kv.cache = make_prompt_cache(slot.model)
            kv.cached_tokens = []
        cache = kv.cache

        def forward(tokens: list[int], rows: int) -> Any:
            """Feed ``tokens``; the logits of the last ``rows`` positions, shape (rows, vocab)."""
            logits = None
            for i in range(0, len(tokens), PREFILL_CHUNK):
                chunk = tokens[i:i + PREFILL_CHUNK]
                logits = slot.model(mx.array(chunk)[None], cache=cache)
                kv.cached_tokens.extend(chunk)
            assert logits is not None
            out_rows = logits[0, -rows:, :]
            mx.eval(out_rows)
            return out_rows

        def rewind(count: int) -> None:
            trim_prompt_cache(cache, count)
            del kv.cached_tokens[-count:]

        mask_s = 0.0

        def choose(rows: Any, i: int) -> int:
            nonlocal mask_s
            row = rows[i]
            if matcher is None:
                return int(mx.argmax(row).item())
            t0 = time.perf_counter()
            matcher.fill_next_token_bitmask(self._bitmask)
            masked = apply_token_bitmask_mlx(mx.array(self._bitmask.numpy()), row[None], self._vocab_size)
            token = int(mx.argmax(masked, axis=-1).item())
            mask_s += time.perf_counter() - t0
            return token

        def check() -> None:
            if job.cancelled.is_set():
                raise RequestCancelled("cancelled while decoding")

        try:
            decoded = greedy_decode(
                prompt[reused:], forward=forward, choose=choose, rewind=rewind, matcher=matcher,
                stop_ids=self._eos_ids, max_new_tokens=request.max_new_tokens,
                draft=(lambda budget: jump_forward_draft(matcher, self._encode, budget)) if self.jump_forward else None,
                check=check, started=started,
            )
        except RequestCancelled:
            # Raised between steps: the cache holds exactly kv.cached_tokens, so the prefix stays warm.
            raise
        except BaseException:
            # The KV cache may hold a partial step: start the next request from a fresh cache.
            kv.cache, kv.cached_tokens = None, []
            raise
        text = self._hf_tokenizer.decode(decoded.tokens, skip_special_tokens=True)
        return decoded.generation(text, len(prompt), mask_seconds=mask_s, extra={
            "cached_prompt_tokens": reused, "device": self.device, "seconds": time.perf_counter() - started})

    def _encode(self, text: str) -> list[int]:
        return list(self._hf_tokenizer.encode(text, add_special_tokens=False))
