"""What each runtime adapter is built with: one frozen options object per adapter.

The adapters read these, never the settings: the slm engine (:func:`engines.slm.engine.adapter_options_for`, the
layer that knows :class:`core.settings.SlmSettings`) maps its settings to the options of the adapter it
picked, and :func:`adapters.select.build_adapter` builds the adapter from them. This module imports no
runtime, so building options costs nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar, Literal


@dataclass(frozen=True)
class _ModelOptions:
    """What every adapter is built with: the model, where conversions are cached, prefix KV reuse."""

    model: str = "bundled"
    """A model spec :func:`adapters.models.resolve_model` resolves (``bundled``, a folder, a ``.gguf``)."""
    cache_dir: Path | str | None = None
    """Where converted models (and PEFT LoRAs converted to mlx-lm's format) are cached (None: the user cache)."""
    prefix_cache: bool = True
    """Reuse the KV cache of a prompt's prefix (the fixed system prompt of a pass) across requests."""


@dataclass(frozen=True)
class _LoraOptions(_ModelOptions):
    """An adapter that loads the LoRAs requests may name up front (vllm: they also size its LoRA slots)."""

    loras: tuple[str, ...] = ()
    """The LoRA folders requests may name; they load with the model."""


@dataclass(frozen=True)
class TransformersOptions(_ModelOptions):
    """The ``transformers`` adapter (:class:`adapters.transformers.TransformersAdapter`)."""

    name: ClassVar[str] = "transformers"

    device: str = "auto"
    """``auto`` (CUDA when torch sees it, else CPU), ``cpu`` or ``cuda``."""
    jump_forward: bool = True
    jump_forward_mode: Literal["verify", "force"] = "verify"
    """``verify`` commits a forced token only when it is also the masked greedy choice (the output equals plain
    greedy decoding); ``force`` commits the grammar's own tokenization (fewer model steps, output may differ)."""
    num_threads: int | None = None
    """CPU threads (None: the cores this process may use, at most 8)."""
    dtype: Literal["float32", "bfloat16"] = "float32"
    """Weight dtype on CPU; CUDA runs bf16 (fp16 without bf16) for a float32 setting."""
    attn_implementation: str | None = "eager"
    """The attention kernel on CPU (eager beats SDPA for one-token decode steps on short contexts)."""
    quantize: Literal["none", "int8"] = "none"
    """``int8``: dynamic int8 linear layers on CPU (see :class:`~adapters.transformers.TransformersAdapter`)."""
    model_name: str | None = None
    """The model id to report (None: the resolved model's name)."""
    merge_lora: str | None = None
    """A PEFT LoRA folder merged into the weights at load (a trained model package served on both passes)."""

    def __post_init__(self) -> None:
        if self.quantize not in ("none", "int8"):
            raise ValueError("quantize must be 'none' or 'int8'")
        if self.jump_forward_mode not in ("verify", "force"):
            raise ValueError("jump_forward_mode must be 'verify' or 'force'")
        if self.dtype not in ("float32", "bfloat16"):
            raise ValueError("dtype must be 'float32' or 'bfloat16'")


@dataclass(frozen=True)
class VllmOptions(_LoraOptions):
    """The ``vllm`` adapter (:class:`adapters.vllm.VllmAdapter`)."""

    name: ClassVar[str] = "vllm"

    max_batch: int = 8
    """vLLM's ``max_num_seqs``."""
    max_model_len: int | None = 4096
    gpu_memory_utilization: float | None = None
    """vLLM's share of GPU memory (None: vLLM's default); ignored on CPU."""
    engine_kwargs: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    """Further ``AsyncEngineArgs`` (they win over the ones above)."""


@dataclass(frozen=True)
class MlxOptions(_LoraOptions):
    """The ``mlx`` adapter (:class:`adapters.mlx.MlxAdapter`)."""

    name: ClassVar[str] = "mlx"

    jump_forward: bool = True
    jump_forward_on_cpu: bool = False
    """With its reference BLAS (no ``cpu_blas`` loaded), MLX's CPU backend costs the same per row whatever the
    batch, so jump-forward saves nothing there and is off unless this is set (to measure it)."""
    cpu_blas: str = "auto"
    """Linux only: the BLAS library loaded before ``mlx.core`` (see :func:`adapters.mlx.load_cpu_blas`): ``auto``
    (the system OpenBLAS when installed), ``off`` (mlx's own reference BLAS), or a library path."""


#: the options of any adapter
AdapterOptions = TransformersOptions | VllmOptions | MlxOptions
