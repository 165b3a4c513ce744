"""The small interface every runtime adapter implements (mlx, vllm, transformers).

An adapter loads one model (plus optional LoRA adapters), and generates text for a chat prompt
under a JSON-Schema grammar. Grammars are compiled once per (tokenizer, schema) and cached by
the adapter; ``prepare`` compiles them ahead of serving so that ``/readyz`` can wait for it, and
``load_lora`` loads a per-request LoRA ahead of serving. What a runtime builds on first use (a prompt
prefix's KV cache) is built by the engine's warm-up generations (:mod:`engines.slm.engine`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from adapters.models import ResolvedModel
    from adapters.options import MlxOptions, VllmOptions


class AdapterUnavailableError(RuntimeError):
    """The adapter's runtime package is missing or cannot run here; the message names the package."""


@dataclass(frozen=True)
class GenerationRequest:
    messages: list[dict[str, str]]
    """Chat messages (``system`` + ``user``); the adapter applies the model's chat template."""
    schema_key: str
    """Name of a grammar registered with :meth:`Adapter.prepare` (e.g. ``"extract"``)."""
    max_new_tokens: int
    lora: str | None = None
    """LoRA adapter folder, when the runtime supports per-request adapters."""
    constrained: bool = True
    """False only for benchmarks (unconstrained decoding of the same prompt)."""


@dataclass
class Generation:
    text: str
    finish_reason: str
    """``stop`` (end of grammar / EOS) or ``length``."""
    prompt_tokens: int
    completion_tokens: int
    time_to_first_token_s: float | None = None
    mask_seconds: float = 0.0
    """Total time spent computing and applying grammar masks."""
    forced_tokens: int = 0
    """Tokens emitted by jump-forward without a model step."""
    model_steps: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


class Adapter(ABC):
    name: str

    @abstractmethod
    async def load(self) -> None:
        """Load the model and tokenizer (blocking work runs off the event loop)."""

    @abstractmethod
    async def prepare(self, schemas: dict[str, str]) -> dict[str, float]:
        """Compile the grammars (``key -> JSON Schema text``); returns compile seconds per key."""

    async def load_lora(self, folder: str) -> None:
        """Load the LoRA adapter of ``folder`` (one that requests will name) ahead of serving, so that a bad
        folder fails the start instead of the first request. The default only checks that the folder is
        there; runtimes that load adapters lazily also load it during the engine's warm-up generations."""
        if not Path(folder).expanduser().is_dir():
            raise FileNotFoundError(f"LoRA folder {folder!r} does not exist")

    @abstractmethod
    async def generate(self, request: GenerationRequest) -> Generation:
        """Generate one completion under the request's grammar."""

    @property
    @abstractmethod
    def model_id(self) -> str:
        """A short, label-safe model name (for ``llm_contract.model`` and metrics)."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Free the model."""


class ModelFolderAdapter(Adapter):
    """An adapter over a model folder the caller resolved (:func:`adapters.models.resolve_model`): vllm and mlx.

    It keeps the folder and the options, and what every such adapter reports before and after loading: the
    model's name (``model_id``), the device and the load time."""

    def __init__(self, model: ResolvedModel, options: VllmOptions | MlxOptions) -> None:
        """``model``: the resolved model folder; ``options``: the adapter's own."""
        self._model = model
        self.options = options
        self.device = "unknown"
        self.load_seconds: float | None = None

    @property
    def model_id(self) -> str:
        return self._model.name

    def _configured_loras(self) -> list[str]:
        """The LoRA folders of the options, resolved, each once, in order (they load with the model)."""
        return list(dict.fromkeys(str(Path(p).expanduser().resolve()) for p in self.options.loras if p))
