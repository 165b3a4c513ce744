"""The portable reference adapter: Hugging Face transformers on CPU or CUDA, xgrammar-constrained.

Decoding is the greedy loop of :mod:`adapters.decode` (shared with the mlx adapter) over a ``DynamicCache``:

- **grammar mask**: per step ``matcher.fill_next_token_bitmask`` then
  ``xgrammar.apply_token_bitmask_inplace`` on the last logits row, argmax. Grammars are compiled
  once per tokenizer (:class:`adapters.xgrammar_support.GrammarStore`).
- **jump-forward**: after each accepted token the grammar's forced continuation
  (``find_jump_forward_string``) is tokenized and fed in the SAME forward step as the accepted
  token. Each forced token is then verified like a speculative draft: it is committed only if
  the matcher accepts it and it is the masked greedy choice at its position; on the first
  mismatch the model's own choice (already computed, no extra step) is taken instead and the
  cache is cropped. The output is therefore token-for-token the one of plain greedy decoding,
  while forced spans cost one model step instead of one per token.
- **prefix KV cache**: the chat-template prefix that ends right before the user content (system
  prompt + ``<|im_start|>user\\n``) is run once per (prefix, LoRA) and its KV cache copied into
  each request; the prompt must tokenize to the cached ids, else the request pays a full prefill.
  The slm engine's warm-up generation per pass builds these caches before ``/readyz`` turns 200.
- **concurrency**: one worker thread owns the model; requests queue on it. A cancelled request
  (client gone, timeout) sets a flag checked between steps and frees the worker.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import copy
import importlib.util
import logging
import os
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adapters.base import Adapter, AdapterUnavailableError, Generation, GenerationRequest
from adapters.decode import greedy_decode
from adapters.options import TransformersOptions
from adapters.xgrammar_support import GrammarStore, jump_forward_draft, require_xgrammar, tokenizer_info

log = logging.getLogger(__name__)

_SENTINEL = "\u0000TRAVEL_SLM_USER\u0000"


class GenerationCancelled(Exception):
    """Raised inside the worker when the caller cancelled the request."""


def require_transformers() -> None:
    for module, package in (("torch", "torch==2.13.0"), ("transformers", "transformers")):
        if importlib.util.find_spec(module) is None:
            raise AdapterUnavailableError(
                f"adapter 'transformers' needs the Python package '{package}' "
                "(bash tests/install_slm.sh, or python -m pip install -e '.[slm]' after torch)"
            )
    require_xgrammar()


def default_num_threads() -> int:
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        cores = os.cpu_count() or 1
    return max(1, min(8, cores))


def _crop(cache: Any, length: int) -> None:
    """Drop cached positions beyond ``length`` (a negative count works in transformers 4.4x and 5)."""
    remove = int(cache.get_seq_length()) - length
    if remove > 0:
        cache.crop(-remove)


@dataclass
class _Prefix:
    ids: tuple[int, ...]
    cache: Any
    build_seconds: float


def quantize_int8(model: Any) -> Any:
    """``model`` with dynamic int8 ``nn.Linear`` layers (CPU); the tied LM head is quantized too."""
    import torch

    with warnings.catch_warnings():
        # torch announces the move of eager-mode quantization to torchao; the API works in 2.x.
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)


def merge_lora_into(model: Any, folder: str) -> Any:
    """``model`` with the PEFT LoRA of ``folder`` merged into its weights (a plain model again)."""
    if importlib.util.find_spec("peft") is None:
        raise AdapterUnavailableError(f"LoRA adapter {folder!r} needs the Python package 'peft' "
                                      "(python -m pip install peft)")
    path = Path(folder).expanduser().resolve()
    if not (path / "adapter_config.json").is_file():
        raise FileNotFoundError(f"LoRA folder {folder!r} has no adapter_config.json")
    from peft import PeftModel

    started = time.perf_counter()
    merged = PeftModel.from_pretrained(model, str(path)).merge_and_unload().eval()
    log.info("merged LoRA %s in %.2f s", path.name, time.perf_counter() - started)
    return merged


class TransformersAdapter(Adapter):
    name = "transformers"

    def __init__(self, options: TransformersOptions | None = None, *,
                 preloaded: tuple[Any, Any] | None = None) -> None:
        """``options``: what to load and how to decode (:class:`~adapters.options.TransformersOptions`);
        ``preloaded=(model, tokenizer)`` skips resolution/loading (tests on a tiny model).

        ``quantize="int8"``: on CPU, the ``nn.Linear`` weights (projections and the LM head) become
        dynamic int8 (``torch.ao.quantization.quantize_dynamic``). A one-token decode step reads
        every weight once, so it is bound by memory bandwidth: int8 weights make the step ~2.5x
        faster on the bundled model (56 -> 23 ms measured on this 2-core CPU). Ignored on CUDA.
        The activation scale is computed per forward pass, so a token's logits depend on the
        other tokens fed with it: jump-forward ``verify`` and prefix reuse are then no longer
        token-exact against plain greedy decoding (the output stays grammar-valid). Off by default.

        ``merge_lora``: a PEFT LoRA folder merged into the weights at load (a trained model package
        served on both passes): decode steps then cost what the base model's cost.
        """
        self.options = options = options or TransformersOptions()
        self.quantize = options.quantize  # "none" once loaded where int8 does not apply (CUDA)
        self.jump_forward = options.jump_forward
        self.prefix_cache = options.prefix_cache
        self._preloaded = preloaded
        self._model_name = options.model_name or ("preloaded" if preloaded else "unloaded")
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="slm-transformers")
        self.model: Any = None
        self.tokenizer: Any = None
        self.device: Any = None
        self.grammars: GrammarStore | None = None
        self._stop_ids: set[int] = set()
        self._eos_ids: set[int] = set()
        self._bitmask: Any = None
        self._prefixes: dict[tuple[str, str | None], _Prefix] = {}
        self._loras: dict[str, str] = {}
        self.stats = {"requests": 0, "prefix_hits": 0, "prefix_misses": 0, "prefix_builds": 0, "cancelled": 0}
        """Counts since load: generations, prompt-prefix cache hits / misses / builds, cancelled requests."""

    # --- lifecycle ------------------------------------------------------------------------------

    @property
    def model_id(self) -> str:
        return self._model_name

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, *args)

    async def load(self) -> None:
        await self._run(self._load_sync)

    def _load_sync(self) -> None:
        if self.model is not None:  # idempotent: engines may share one loaded adapter
            return
        if self._preloaded is None:
            require_transformers()
        import torch

        if self._preloaded is not None:
            self.model, self.tokenizer = self._preloaded
            self.device = next(self.model.parameters()).device
        else:
            from transformers import AutoModelForCausalLM, AutoTokenizer

            from adapters.models import resolve_model

            resolved = resolve_model(self.options.model, self.options.cache_dir)
            self._model_name = self.options.model_name or resolved.name
            self.device = self._pick_device(torch)
            dtype = getattr(torch, self.options.dtype)
            if self.device.type == "cuda" and self.options.dtype == "float32":
                dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            started = time.perf_counter()
            self.tokenizer = AutoTokenizer.from_pretrained(resolved.path, local_files_only=True)
            kwargs: dict[str, Any] = {"dtype": dtype, "local_files_only": True}
            if self.options.attn_implementation and self.device.type == "cpu":
                # eager attention is faster than CPU SDPA for one-token decode steps on short contexts
                kwargs["attn_implementation"] = self.options.attn_implementation
            self.model = AutoModelForCausalLM.from_pretrained(resolved.path, **kwargs).to(self.device).eval()
            log.info("loaded %s on %s (%s) in %.1f s", resolved.name, self.device, dtype,
                     time.perf_counter() - started)
        if self.options.merge_lora:
            self.model = merge_lora_into(self.model, self.options.merge_lora)
        if self.quantize == "int8" and self.device.type == "cpu":
            self.model = quantize_int8(self.model)  # a quantized copy: a preloaded model stays as it is
        else:
            self.quantize = "none"
        # transformers 5.2x announces a rename of ``past_key_values`` but does not honour the new
        # name yet; the old one is the one that works across 4.46..5.x.
        warnings.filterwarnings("ignore", message=r".*`past_key_values` is deprecated.*", category=FutureWarning)
        if self.device.type == "cpu":
            threads = self.options.num_threads or default_num_threads()
            torch.set_num_threads(threads)
        eos = self.tokenizer.eos_token_id
        self._eos_ids = {eos} if isinstance(eos, int) else set(eos or [])
        gen_eos = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        if isinstance(gen_eos, int):
            self._eos_ids.add(gen_eos)
        elif gen_eos:
            self._eos_ids.update(gen_eos)

    def _pick_device(self, torch: Any) -> Any:
        setting = (self.options.device or "auto").lower()
        if setting == "auto":
            setting = "cuda" if torch.cuda.is_available() else "cpu"
        if setting.startswith("cuda") and not torch.cuda.is_available():
            raise AdapterUnavailableError("slm.device=cuda but torch sees no CUDA device (CPU wheel of torch?)")
        if setting == "mps":
            raise AdapterUnavailableError("adapter 'transformers' runs on cpu or cuda; use adapter 'mlx' on Apple")
        return torch.device(setting)

    async def prepare(self, schemas: dict[str, str]) -> dict[str, float]:
        return await self._run(self._prepare_sync, schemas)

    def _prepare_sync(self, schemas: dict[str, str]) -> dict[str, float]:
        if self.model is None:
            raise RuntimeError("load() the adapter before prepare()")
        xgr = require_xgrammar()
        if self.grammars is None:
            head = self.model.get_output_embeddings()
            vocab_size = int(getattr(head, "out_features", None) or head.weight.shape[0])
            info = tokenizer_info(self.tokenizer, vocab_size)
            self.grammars = GrammarStore(info, max_threads=max(1, min(4, default_num_threads())))
            self._stop_ids = set(info.stop_token_ids)
            self._bitmask = xgr.allocate_token_bitmask(1, vocab_size)
        return {key: self.grammars.compile_json_schema(key, text) for key, text in schemas.items()}

    async def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
        self.model = None
        self._prefixes.clear()

    # --- LoRA -----------------------------------------------------------------------------------

    async def load_lora(self, folder: str) -> None:
        """Load a per-request LoRA now (PEFT wraps the model on the first one): a folder that does not load
        fails here, at start-up, instead of at the first request that names it."""
        await self._run(self._load_lora_sync, folder)

    def _load_lora_sync(self, folder: str) -> None:
        import torch

        if self.model is None:
            raise RuntimeError("load() the adapter before load_lora()")
        with torch.inference_mode(), self._activate_lora(folder):
            pass

    def _activate_lora(self, lora: str | None) -> contextlib.AbstractContextManager[Any]:
        if lora is None:
            if self._loras:
                return self.model.disable_adapter()
            return contextlib.nullcontext()
        if self.quantize == "int8":
            raise AdapterUnavailableError(f"LoRA adapter {lora!r} cannot run on the int8-quantized model: "
                                          "set slm.quantize=none")
        if importlib.util.find_spec("peft") is None:
            raise AdapterUnavailableError(f"LoRA adapter {lora!r} needs the Python package 'peft' "
                                          "(python -m pip install peft)")
        folder = str(Path(lora).expanduser().resolve())
        if not (Path(folder) / "adapter_config.json").is_file():
            raise FileNotFoundError(f"LoRA folder {lora!r} has no adapter_config.json")
        if folder not in self._loras:
            name = f"lora{len(self._loras)}"
            if not self._loras:
                from peft import PeftModel

                self.model = PeftModel.from_pretrained(self.model, folder, adapter_name=name, is_trainable=False)
                self.model.eval()
            else:
                self.model.load_adapter(folder, adapter_name=name, is_trainable=False)
            self._loras[folder] = name
            log.info("loaded LoRA adapter %s as %s", Path(folder).name, name)
        self.model.set_adapter(self._loras[folder])
        return contextlib.nullcontext()

    # --- generation ------------------------------------------------------------------------------

    async def generate(self, request: GenerationRequest) -> Generation:
        cancel = threading.Event()
        enqueued = time.perf_counter()
        try:
            return await self._run(self._generate_sync, request, cancel, enqueued)
        except asyncio.CancelledError:
            cancel.set()
            raise

    def render_prompt(self, messages: list[dict[str, str]]) -> str:
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def _prefix_text(self, messages: list[dict[str, str]]) -> str | None:
        """The prompt text before the last user message's content (system prompt + role header)."""
        if not messages or messages[-1].get("role") != "user":
            return None
        probe = [*messages[:-1], {"role": "user", "content": _SENTINEL}]
        text = self.render_prompt(probe)
        head, sep, _ = text.partition(_SENTINEL)
        return head if sep else None

    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _forward(self, ids: list[int], cache: Any, keep: int) -> Any:
        import torch

        input_ids = torch.tensor([ids], dtype=torch.long, device=self.device)
        out = self.model(input_ids=input_ids, past_key_values=cache, use_cache=True, logits_to_keep=keep)
        return out.logits[0].float()

    def _new_cache(self) -> Any:
        from transformers import DynamicCache

        return DynamicCache(config=self.model.config)

    def _cache_for(self, ids: list[int], messages: list[dict[str, str]], lora: str | None) -> tuple[Any, int, dict]:
        """A cache holding a prefix of ``ids`` and how many ids it holds (always < len(ids))."""
        info: dict[str, Any] = {"prefix_hit": False, "prefix_tokens": 0, "prefix_copy_s": 0.0}
        if not self.prefix_cache:
            return self._new_cache(), 0, info
        text = self._prefix_text(messages)
        if text is None:
            return self._new_cache(), 0, info
        key = (text, lora)
        entry = self._prefixes.get(key)
        if entry is None:
            prefix_ids = tuple(self._encode(text))
            started = time.perf_counter()
            cache = self._new_cache()
            if prefix_ids:
                self._forward(list(prefix_ids), cache, 1)
            entry = _Prefix(prefix_ids, cache, time.perf_counter() - started)
            self._prefixes[key] = entry
            self.stats["prefix_builds"] += 1
            log.info("prefix cache built: %d tokens in %.3f s", len(prefix_ids), entry.build_seconds)
        n = len(entry.ids)
        if n == 0 or n >= len(ids) or tuple(ids[:n]) != entry.ids:
            self.stats["prefix_misses"] += 1
            return self._new_cache(), 0, info
        started = time.perf_counter()
        cache = copy.deepcopy(entry.cache)
        info.update(prefix_hit=True, prefix_tokens=n, prefix_copy_s=time.perf_counter() - started,
                    prefix_build_s=entry.build_seconds)
        self.stats["prefix_hits"] += 1
        return cache, n, info

    def _generate_sync(self, request: GenerationRequest, cancel: threading.Event, enqueued: float) -> Generation:
        import torch

        if cancel.is_set():
            self.stats["cancelled"] += 1
            raise GenerationCancelled("cancelled while queued")
        if self.model is None:
            raise RuntimeError("the transformers adapter is not loaded")
        started = time.perf_counter()
        self.stats["requests"] += 1
        constrained = request.constrained
        if constrained and (self.grammars is None or request.schema_key not in self.grammars):
            raise KeyError(f"grammar {request.schema_key!r} is not prepared")
        with torch.inference_mode(), self._activate_lora(request.lora):
            try:
                return self._decode(request, cancel, started, enqueued)
            except GenerationCancelled:
                self.stats["cancelled"] += 1
                raise

    def _decode(self, request: GenerationRequest, cancel: threading.Event, started: float, enqueued: float
                ) -> Generation:
        xgr = require_xgrammar() if request.constrained else None
        constrained = request.constrained
        ids = self._encode(self.render_prompt(request.messages))
        cache, cached, prefix_info = self._cache_for(ids, request.messages, request.lora)

        matcher = self.grammars.matcher(request.schema_key) if constrained and self.grammars else None
        bitmask = self._bitmask
        use_jf = constrained and self.jump_forward
        mask_s = 0.0
        mask_calls = 0

        def choose(rows: Any, i: int) -> int:
            """Greedy choice on logits row ``i``, under the grammar when constrained."""
            nonlocal mask_s, mask_calls
            row = rows[i:i + 1]
            if matcher is not None:
                t0 = time.perf_counter()
                matcher.fill_next_token_bitmask(bitmask)
                mask = bitmask if row.device.type == "cpu" else bitmask.to(row.device, non_blocking=True)
                xgr.apply_token_bitmask_inplace(row, mask)
                mask_s += time.perf_counter() - t0
                mask_calls += 1
            return int(row.argmax(dim=-1)[0])

        def check() -> None:
            if cancel.is_set():
                raise GenerationCancelled("cancelled")

        decoded = greedy_decode(
            ids[cached:],
            forward=lambda tokens, rows: self._forward(tokens, cache, rows),
            choose=choose,
            rewind=lambda count: _crop(cache, int(cache.get_seq_length()) - count),
            matcher=matcher,
            stop_ids=self._stop_ids if matcher is not None else self._eos_ids,
            max_new_tokens=request.max_new_tokens,
            draft=(lambda budget: jump_forward_draft(matcher, self._encode, budget)) if use_jf else None,
            verify_drafts=self.options.jump_forward_mode == "verify",
            check=check,
            started=started,
        )
        total = time.perf_counter() - started
        text = self.tokenizer.decode(decoded.tokens, skip_special_tokens=True)
        return decoded.generation(text, len(ids), mask_seconds=mask_s, extra={
            **prefix_info,
            "prefill_tokens": len(ids) - cached,
            "prefill_s": decoded.prefill_s,
            "decode_s": max(total - decoded.prefill_s - prefix_info["prefix_copy_s"], 0.0),
            "total_s": total,
            "queue_s": started - enqueued,
            "mask_calls": mask_calls,
            "drafted_tokens": decoded.drafted_tokens,
            "jump_forward": use_jf,
        })
