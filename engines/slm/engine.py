"""The ``slm`` engine: a local small model under xgrammar-constrained decoding.

``start()`` builds the adapter chosen by :mod:`adapters.select`, loads the model and compiles
the grammars of :mod:`engines.slm.grammars` once; until then ``readiness()`` is ``(False, reason)``.
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
import json
import logging
import time
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import ValidationError

from adapters.base import Adapter, AdapterUnavailableError, Generation, GenerationRequest
from adapters.models import ModelPackage, model_package
from engines.base import Engine, EngineError, PassOutput
from engines.slm import extract_plan, grammars, prompts

if TYPE_CHECKING:
    from server.config import SlmSettings

log = logging.getLogger("travel_slm.slm")


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


class SlmEngine(Engine):
    name: ClassVar[str] = "slm"
    constrained = True

    def __init__(self, settings: SlmSettings, adapter: Adapter | None = None,
                 adapter_options: dict[str, Any] | None = None) -> None:
        """``adapter``: a ready adapter (tests); ``adapter_options``: extra keyword arguments for the one
        :func:`adapters.select.build_adapter` builds (benchmarks: ``num_threads``)."""
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
        self._reason = "not started"
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
        """Build and load the adapter, compile the grammars. Failures leave the engine not ready."""
        async with self._start_lock:
            if self._ready:
                return
            started = time.perf_counter()
            if self._package_error is not None:
                self._reason = f"unavailable: {self._package_error}"
                log.error("slm engine unavailable: %s", self._package_error)
                return
            try:
                if self._adapter is None:
                    from adapters.select import build_adapter

                    self._reason = "building the adapter"
                    self._adapter = await asyncio.to_thread(build_adapter, self.settings, **self._adapter_overrides())
                self.adapter = self._adapter.name
                self._reason = f"loading model {self.settings.model!r} on adapter {self.adapter}"
                await self._adapter.load()
                self.model = self._adapter.model_id
                self._reason = "compiling grammars"
                self.grammar_compile_seconds = await self._adapter.prepare(
                    grammars.schema_texts(self.settings.render_mode, self.settings.extract_mode)
                )
            except AdapterUnavailableError as exc:
                self._reason = f"unavailable: {exc}"
                log.error("slm engine unavailable: %s", exc)
                return
            except Exception as exc:
                self._reason = f"failed to start: {type(exc).__name__}: {exc}"
                log.exception("slm engine failed to start")
                return
            self.load_seconds = time.perf_counter() - started
            self._ready = True
            self._reason = "ready"
            log.info("slm engine ready: adapter=%s model=%s in %.1f s, grammars %s", self.adapter, self.model,
                     self.load_seconds, {k: round(v, 3) for k, v in self.grammar_compile_seconds.items()})

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
        self._reason = "closed"
        if self._adapter is not None:
            await self._adapter.close()

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "render_mode": self.settings.render_mode,
                "extract_mode": self.settings.extract_mode, "prompt_style": self.prompt_style, "ready": self._ready}

    # --- passes ------------------------------------------------------------------------------------

    async def _generate(self, pass_name: str, grammar: str, messages: list[dict[str, str]]) -> Generation:
        if not self._ready or self._adapter is None:
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
