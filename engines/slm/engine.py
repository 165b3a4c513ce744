"""The ``slm`` engine: a local small model under xgrammar-constrained decoding.

``start()`` builds the adapter chosen by :mod:`adapters.select`, loads the model, loads every
configured LoRA, compiles the grammars of :mod:`engines.slm.grammars` and then warms both passes
(one real generation each, see :data:`WARM_TURN`) so that whatever the first request would build
lazily (the system prompt's KV cache per pass and LoRA, a LoRA's weights, the runtime's kernels) is
built before ``readiness()`` turns true. Until then ``readiness()`` is ``(False, reason)`` and
:attr:`SlmEngine.step` names the step (:data:`STEPS`); each step is logged as a JSON line. A failed
step (a LoRA folder that does not load, say) leaves the engine not ready with the reason: never a
silent fallback at the first request.
Each pass sends the pass prompt (:mod:`engines.slm.prompts`) to the adapter and returns the
parsed document UNVALIDATED: :mod:`engines.fallback` validates it and falls back on a length
stop (``truncated``), unparsable text (``invalid_json``) or a contract failure.

``render_mode=plan`` (default): the model chooses ``bot_message`` and the widget plan; every
envelope is then filled by :func:`engines.deterministic.render.build_envelope` from tool data
and slots, so offers, hotels and receipts are copied, never invented. ``render_mode=full``: the
model writes whole envelopes under the typed-envelope grammar.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import ValidationError

from adapters.base import Adapter, AdapterUnavailableError, Generation, GenerationRequest
from adapters.models import ModelPackage, model_package
from adapters.options import AdapterOptions, MlxOptions, TransformersOptions, VllmOptions
from engines.base import Engine, EngineError, PassOutput
from engines.slm import extract_plan, grammars, prompts

if TYPE_CHECKING:
    from core.settings import SlmSettings

log = logging.getLogger("travel_slm.slm")

#: the start-up steps of the engine, in order; ``failed`` and ``closed`` may follow any of them.
STEPS: tuple[str, ...] = ("not started", "building adapter", "loading model", "loading LoRA", "compiling grammars",
                          "warming extract", "warming render", "ready")
#: the turn both passes are warmed with: a plain request in the domain (its answer is not used).
WARM_TURN: dict[str, Any] = {
    "event_type": "user_message",
    "event_payload": {"text": "Find me a hotel in Lisbon for two adults from 3 to 6 June"},
    "slot_state": {},
}


class StartupError(Exception):
    """A start-up step failed; the message is the operator-facing reason (``/readyz``)."""


def parse_document(text: str) -> Any:
    """The JSON document of a generation, or None when the text is not JSON."""
    try:
        return json.loads(text)
    except (json.JSONDecodeError, TypeError, ValueError):
        return None


def effective_settings(settings: SlmSettings, package: ModelPackage | None) -> SlmSettings:
    """The settings a model package implies: its base model, its LoRA, its extract mode and prompt style.

    Explicit settings win: a LoRA set by the operator replaces the package's, and ``extract_mode`` /
    ``prompt_style`` other than ``auto`` are kept. Without a package, ``auto`` means ``full`` /
    ``fewshot`` (an untrained model needs the whole contract and examples in its prompt).
    """
    update: dict[str, Any] = {}
    if package is not None:
        update["model"] = package.base
        if package.weights == "lora" and not (settings.lora or settings.lora_extract or settings.lora_render):
            update["lora"] = str(package.path)
    if settings.extract_mode == "auto":
        update["extract_mode"] = package.setting("extract_mode", "full") if package else "full"
    if settings.dtype == "auto":
        update["dtype"] = package.setting("dtype", "float32") if package else "float32"
    if settings.prompt_style == "auto":
        update["prompt_style"] = package.setting("prompt_style", "fewshot") if package else "fewshot"
    return settings.model_copy(update=update)


def adapter_options_for(settings: SlmSettings, **overrides: Any) -> AdapterOptions:
    """The options of the adapter ``settings.adapter`` picks (:func:`adapters.select.choose_adapter`: ``auto``
    may probe CUDA, so call it off the event loop), from ``settings``; ``overrides`` replace option fields
    (benchmarks: ``num_threads``; a LoRA package on transformers: ``merge_lora``, ``model_name``).

    The adapters never read the settings: this is the one place that maps them.
    """
    from adapters.select import choose_adapter

    name = choose_adapter(settings.adapter)
    options: AdapterOptions
    if name == "transformers":  # per-request LoRAs load lazily (load_lora): they are not options here
        options = TransformersOptions(
            model=settings.model, device=settings.device, cache_dir=settings.cache_dir,
            jump_forward=settings.jump_forward, prefix_cache=settings.prefix_cache, quantize=settings.quantize,
            dtype="float32" if settings.dtype == "auto" else settings.dtype,
        )
    else:
        loras = tuple(p for p in (settings.lora, settings.lora_extract, settings.lora_render) if p)
        if name == "vllm":
            options = VllmOptions(model=settings.model, cache_dir=settings.cache_dir, loras=loras,
                                  max_batch=settings.max_batch, prefix_cache=settings.prefix_cache)
        else:
            options = MlxOptions(model=settings.model, cache_dir=settings.cache_dir, loras=loras,
                                 jump_forward=settings.jump_forward, prefix_cache=settings.prefix_cache,
                                 cpu_blas=settings.mlx_cpu_blas)
    return dataclasses.replace(options, **overrides)


class SlmEngine(Engine):
    name: ClassVar[str] = "slm"
    constrained = True

    def __init__(self, settings: SlmSettings, adapter: Adapter | None = None,
                 adapter_options: dict[str, Any] | None = None) -> None:
        """``adapter``: a ready adapter (tests); ``adapter_options``: option fields that replace the ones the
        settings give the adapter :func:`adapters.select.build_adapter` builds (:func:`adapter_options_for`;
        benchmarks: ``num_threads``)."""
        self._adapter_options = dict(adapter_options or {})
        self._package_error: str | None = None
        self.package = None
        try:
            self.package = model_package(settings.model)
        except (OSError, ValueError) as exc:
            self._package_error = str(exc)
        self.requested = settings
        self.settings = effective_settings(settings, self.package)
        self._adapter: Adapter | None = adapter
        self.adapter = adapter.name if adapter is not None else settings.adapter
        self.model = self.package.name if self.package is not None else settings.model
        self._ready = False
        self._warming = False
        self._reason = "not started"
        self.step = "not started"
        """The start-up step the engine is on (:data:`STEPS`, or ``failed`` / ``closed``)."""
        self.step_seconds: dict[str, float] = {}
        """Seconds each finished start-up step took."""
        self.warmup: dict[str, dict[str, Any]] = {}
        """Per pass: what its warm-up generation did (seconds, tokens, finish reason, prefix cache use)."""
        self._start_lock = asyncio.Lock()
        self.grammar_compile_seconds: dict[str, float] = {}
        self.load_seconds: float | None = None
        self.render_grammar = grammars.render_key(self.settings.render_mode)
        self.extract_grammar = grammars.extract_key(self.settings.extract_mode)
        self.prompt_style = self.settings.prompt_style

    # --- lifecycle --------------------------------------------------------------------------------

    @property
    def runtime(self) -> Adapter | None:
        """The loaded adapter object (None before ``start``)."""
        return self._adapter

    def readiness(self) -> tuple[bool, str]:
        return (True, "ready") if self._ready else (False, f"slm engine: {self._reason}")

    async def start(self) -> None:
        """Build and load the adapter, load the LoRAs, compile the grammars, warm both passes.

        Each step sets :attr:`step` (and the ``readiness()`` reason) before it runs and logs a JSON line;
        a failure leaves the engine not ready, its reason naming the step and the error.
        """
        async with self._start_lock:
            if self._ready:
                return
            started = time.perf_counter()
            self._started_at = started
            try:
                if self._package_error is not None:
                    raise StartupError(f"unavailable: {self._package_error}")
                self._check_lora_folders()
                if self._adapter is None:
                    self._enter("building adapter")
                    self._adapter = await asyncio.to_thread(self._build_adapter, self._adapter_overrides())
                self.adapter = self._adapter.name
                merged = getattr(getattr(self._adapter, "options", None), "merge_lora", None)  # transformers
                detail = f"{self.settings.model!r} on adapter {self.adapter}" + (
                    f", LoRA {Path(merged).name} merged" if merged else "")
                self._enter("loading model", detail)
                await self._adapter.load()
                self.model = self._adapter.model_id
                loras = self._configured_loras()
                if loras:
                    self._enter("loading LoRA", ", ".join(Path(p).name for p in loras))
                    for path, names in loras.items():
                        try:
                            await self._adapter.load_lora(path)
                        except AdapterUnavailableError:
                            raise
                        except Exception as exc:
                            raise StartupError(f"failed to load LoRA {path!r} ({', '.join(names)}): "
                                               f"{type(exc).__name__}: {exc}") from exc
                self._enter("compiling grammars")
                self.grammar_compile_seconds = await self._adapter.prepare(
                    grammars.schema_texts(self.settings.render_mode, self.settings.extract_mode)
                )
                if self.settings.warmup:
                    await self._warm()
            except StartupError as exc:
                self._fail(str(exc))
                return
            except AdapterUnavailableError as exc:
                self._fail(f"unavailable: {exc}")
                return
            except Exception as exc:
                self._fail(f"failed at {self.step}: {type(exc).__name__}: {exc}", exc_info=True)
                return
            finally:
                self._warming = False
            self._finish_step()
            self.load_seconds = time.perf_counter() - started
            self._ready = True
            self.step = self._reason = "ready"
            log.info("slm engine ready: adapter=%s model=%s in %.1f s", self.adapter, self.model, self.load_seconds,
                     extra={"engine": self.name, "step": "ready", "elapsed_s": round(self.load_seconds, 3),
                            "steps_s": {k: round(v, 3) for k, v in self.step_seconds.items()},
                            "grammars_s": {k: round(v, 3) for k, v in self.grammar_compile_seconds.items()},
                            "warmup": self.warmup})

    _started_at: float = 0.0
    _step_started: float | None = None

    def _finish_step(self) -> None:
        if self._step_started is not None:
            self.step_seconds[self.step] = round(time.perf_counter() - self._step_started, 4)
            self._step_started = None

    def _enter(self, step: str, detail: str | None = None) -> None:
        """Start step ``step``: ``readiness()`` says it, and a JSON line logs it (with the time since start)."""
        self._finish_step()
        self.step = step
        self._reason = f"{step} {detail}" if detail else step
        self._step_started = time.perf_counter()
        log.info("slm engine start-up: %s", step, extra={
            "engine": self.name, "step": step, "detail": detail,
            "elapsed_s": round(self._step_started - self._started_at, 3)})

    def _fail(self, reason: str, *, exc_info: bool = False) -> None:
        failed_at = self.step
        self._finish_step()
        self.step = "failed"
        self._reason = reason[:500]
        log.error("slm engine failed to start: %s", self._reason, exc_info=exc_info,
                  extra={"engine": self.name, "step": "failed", "failed_step": failed_at,
                         "elapsed_s": round(time.perf_counter() - self._started_at, 3)})

    def _configured_loras(self) -> dict[str, list[str]]:
        """Per-request LoRA folders (resolved) and the settings that name them; a LoRA merged at load is not one."""
        out: dict[str, list[str]] = {}
        for key in ("lora", "lora_extract", "lora_render"):
            value = getattr(self.settings, key)
            if value:
                origin = "slm.model (its LoRA)" if self.package is not None and value == str(self.package.path) \
                    else f"slm.{key}"
                out.setdefault(str(Path(value).expanduser().resolve()), []).append(origin)
        return out

    def _check_lora_folders(self) -> None:
        """A configured LoRA folder that is not there fails the start at once, before the model loads."""
        for path, names in self._configured_loras().items():
            if not Path(path).is_dir():
                raise StartupError(f"failed to load LoRA {path!r} ({', '.join(names)}): no such folder")

    async def _warm(self) -> None:
        """One real generation per pass through the pass code itself (prompts, grammar, LoRA, plan assembly):
        the runtime builds each pass's prompt-prefix cache, loads what it loads lazily and runs its kernels
        once, so the first request after ready is as fast as the next ones. The answers are not used; a
        generation that raises fails the start."""
        from contracts.turn import Turn
        from engines.deterministic.extract import extract as oracle_extract
        from engines.deterministic.fixtures import fixture
        from engines.deterministic.render import merged_slot

        self._warming = True
        turn = Turn.model_validate(WARM_TURN).engine_input()
        self._enter("warming extract")
        t0 = time.perf_counter()
        out = await self.extract(turn)
        self.warmup["extract"] = self._warm_figures(out, time.perf_counter() - t0)
        extraction = oracle_extract(turn)
        summary = fixture(extraction, merged_slot(turn, extraction))
        self._enter("warming render")
        t0 = time.perf_counter()
        out = await self.render(turn, extraction, summary)
        self.warmup["render"] = self._warm_figures(out, time.perf_counter() - t0)

    @staticmethod
    def _warm_figures(out: PassOutput, seconds: float) -> dict[str, Any]:
        figures: dict[str, Any] = {"seconds": round(seconds, 3), "prompt_tokens": out.prompt_tokens,
                                   "completion_tokens": out.completion_tokens, "finish_reason": out.finish_reason}
        for key in ("prefix_hit", "prefix_tokens", "cached_prompt_tokens"):
            if key in out.extra:
                figures[key] = out.extra[key]
        return figures

    def _build_adapter(self, overrides: dict[str, Any]) -> Adapter:
        """Blocking (a worker thread): pick the adapter, map the settings to its options, build it."""
        from adapters.select import build_adapter

        return build_adapter(adapter_options_for(self.settings, **overrides), requested=self.settings.adapter)

    def _adapter_overrides(self) -> dict[str, Any]:
        """A LoRA package on transformers: merge the adapter into the weights at load (no per-step cost)."""
        pkg = self.package
        options = dict(self._adapter_options)
        if pkg is None or pkg.weights != "lora" or self.settings.lora != str(pkg.path):
            return options
        from adapters.select import choose_adapter

        if choose_adapter(self.settings.adapter) != "transformers":
            return options
        self.settings = self.settings.model_copy(update={"lora": None})
        return {**options, "merge_lora": str(pkg.path), "model_name": pkg.name}

    async def aclose(self) -> None:
        self._ready = False
        self.step = self._reason = "closed"
        if self._adapter is not None:
            await self._adapter.close()

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "render_mode": self.settings.render_mode,
                "extract_mode": self.settings.extract_mode, "prompt_style": self.prompt_style, "ready": self._ready,
                "step": self.step}

    # --- passes ------------------------------------------------------------------------------------

    async def _generate(self, pass_name: str, grammar: str, messages: list[dict[str, str]]) -> Generation:
        if not (self._ready or self._warming) or self._adapter is None:
            raise EngineError("unavailable", self.readiness()[1])
        request = GenerationRequest(
            messages=messages,
            schema_key=grammar,
            max_new_tokens=self.settings.max_new_tokens(pass_name),
            lora=self.settings.lora_for(pass_name),
        )
        try:
            return await self._adapter.generate(request)
        except AdapterUnavailableError as exc:
            raise EngineError("unavailable", str(exc)) from exc

    @staticmethod
    def _stats(gen: Generation, grammar: str) -> dict[str, Any]:
        return {
            "grammar": grammar,
            "mask_seconds": gen.mask_seconds,
            "mask_seconds_per_token": gen.mask_seconds / gen.completion_tokens if gen.completion_tokens else 0.0,
            "forced_tokens": gen.forced_tokens,
            "model_steps": gen.model_steps,
            **{k: v for k, v in gen.extra.items() if isinstance(v, int | float | bool | str)},
        }

    async def extract(self, turn: dict[str, Any]) -> PassOutput:
        plan_mode = self.extract_grammar == grammars.EXTRACT_PLAN
        messages = prompts.extract_messages(turn, self.prompt_style, plan=plan_mode)
        gen = await self._generate("extract", self.extract_grammar, messages)
        document = parse_document(gen.text)
        extra = self._stats(gen, self.extract_grammar)
        if plan_mode and gen.finish_reason != "length" and isinstance(document, dict):
            try:
                plan = extract_plan.plan_model().model_validate(document, strict=True)
            except ValidationError:
                plan = None
            if plan is not None:  # an invalid plan stays as it is: the fallback layer refuses it
                extra["plan"] = document
                document = extract_plan.realise(turn, plan.model_dump(exclude_none=True))
        return PassOutput(
            document=document, finish_reason=gen.finish_reason, prompt_tokens=gen.prompt_tokens,
            completion_tokens=gen.completion_tokens, time_to_first_token_s=gen.time_to_first_token_s,
            text=gen.text, extra=extra,
        )

    async def render(
        self, turn: dict[str, Any], extraction: dict[str, Any], tool_summary: dict[str, Any]
    ) -> PassOutput:
        full = self.settings.render_mode == "full"
        messages = prompts.render_messages(turn, extraction, tool_summary, full=full, style=self.prompt_style)
        gen = await self._generate("render", self.render_grammar, messages)
        document = parse_document(gen.text)
        extra = self._stats(gen, self.render_grammar)
        if not full and gen.finish_reason != "length" and isinstance(document, dict):
            assembled = self.assemble(turn, extraction, tool_summary, document)
            if assembled is not None:
                extra["plan"] = [f"{w['widget_type']}/{w['variant']}" for w in document["widgets"]]
                document = assembled
        return PassOutput(
            document=document, finish_reason=gen.finish_reason, prompt_tokens=gen.prompt_tokens,
            completion_tokens=gen.completion_tokens, time_to_first_token_s=gen.time_to_first_token_s,
            text=gen.text, extra=extra,
        )

    @staticmethod
    def assemble(
        turn: dict[str, Any], extraction: dict[str, Any], tool_summary: dict[str, Any], plan: dict[str, Any]
    ) -> dict[str, Any] | None:
        """Plan -> ``{bot_message, widgets}`` with payloads from tool data and slots; None if the plan is invalid."""
        from engines.deterministic.render import build_envelope, merged_slot

        try:
            checked = grammars.plan_model().model_validate(plan, strict=True)
        except ValidationError:
            return None
        slot = merged_slot(turn, extraction if isinstance(extraction, dict) else {})
        summary = tool_summary if isinstance(tool_summary, dict) else {}
        try:
            widgets = [build_envelope(w.widget_type, w.variant, slot, summary) for w in checked.widgets]
        except ValueError:
            return None
        return {"bot_message": checked.bot_message, "widgets": widgets}
