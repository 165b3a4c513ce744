"""xgrammar helpers shared by the local adapters (transformers, mlx).

- :class:`GrammarStore`: one :class:`xgrammar.GrammarCompiler` per tokenizer and the compiled
  grammars by key, compiled once (compact JSON: no free whitespace, ``,``/``:`` separators).
- :func:`jump_forward_draft`: the grammar-forced continuation as token ids, ready to be fed to
  the model in one step and verified token by token (see ``adapters/transformers.py``).
- :func:`token_allowed`: read one bit of a filled token bitmask.

xgrammar itself is imported lazily so that this module can be imported (and report a clear
error) where the package is missing.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from adapters.base import AdapterUnavailableError

log = logging.getLogger(__name__)

XGRAMMAR_PACKAGE = "xgrammar==0.2.8"

#: Compact JSON: one canonical spelling per document, fewest tokens, longest forced strings.
JSON_SEPARATORS: tuple[str, str] = (",", ":")


def require_xgrammar() -> Any:
    """Import xgrammar or raise :class:`AdapterUnavailableError` naming the package."""
    if importlib.util.find_spec("xgrammar") is None:
        raise AdapterUnavailableError(
            f"grammar-constrained decoding needs the Python package '{XGRAMMAR_PACKAGE}' "
            f"(python -m pip install '{XGRAMMAR_PACKAGE}', or the project's 'slm' extra)"
        )
    import xgrammar

    return xgrammar


def tokenizer_info(tokenizer: Any, vocab_size: int, stop_token_ids: list[int] | None = None) -> Any:
    """xgrammar's view of a Hugging Face tokenizer, sized to the MODEL's vocabulary.

    The model's logits may be wider than the tokenizer (padding rows); the bitmask must cover
    the logits, so ``vocab_size`` is the model's ``config.vocab_size``.
    """
    xgr = require_xgrammar()
    kwargs: dict[str, Any] = {"vocab_size": vocab_size}
    if stop_token_ids:
        kwargs["stop_token_ids"] = stop_token_ids
    return xgr.TokenizerInfo.from_huggingface(tokenizer, **kwargs)


@dataclass
class GrammarStore:
    """Compiled grammars of one tokenizer, by key. Thread-safe; compile once, reuse forever."""

    info: Any
    max_threads: int = 2
    compile_seconds: dict[str, float] = field(default_factory=dict)
    _compiled: dict[str, Any] = field(default_factory=dict)
    _sources: dict[str, str] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _compiler: Any = None

    def __post_init__(self) -> None:
        xgr = require_xgrammar()
        self._compiler = xgr.GrammarCompiler(self.info, max_threads=self.max_threads, cache_enabled=True)

    def compile_json_schema(self, key: str, schema_text: str) -> float:
        """Compile ``schema_text`` under ``key`` (no-op if the same text is already compiled)."""
        with self._lock:
            if self._sources.get(key) == schema_text:
                return 0.0
        started = time.perf_counter()
        compiled = self._compiler.compile_json_schema(
            schema_text, any_whitespace=False, separators=JSON_SEPARATORS, strict_mode=True
        )
        seconds = time.perf_counter() - started
        with self._lock:
            self._compiled[key] = compiled
            self._sources[key] = schema_text
            self.compile_seconds[key] = seconds
        log.info("compiled grammar %s in %.3f s", key, seconds)
        return seconds

    def get(self, key: str) -> Any:
        try:
            return self._compiled[key]
        except KeyError:
            raise KeyError(f"no grammar compiled under {key!r} (known: {sorted(self._compiled)})") from None

    def __contains__(self, key: str) -> bool:
        return key in self._compiled

    def matcher(self, key: str) -> Any:
        """A fresh matcher for one request."""
        xgr = require_xgrammar()
        return xgr.GrammarMatcher(self.get(key))


def jump_forward_draft(matcher: Any, encode: Callable[[str], list[int]], budget: int) -> list[int]:
    """Tokens of the grammar-forced continuation after the matcher's current state.

    ``encode`` tokenizes without special tokens. The tokenization of the forced string alone may
    differ from what the model would emit at the boundary (BPE merges across it); callers must
    verify each draft token (``matcher.accept_token``) and the model's own choice before
    committing it, and fall back to single stepping on a mismatch.
    """
    if budget <= 0:
        return []
    forced = matcher.find_jump_forward_string()
    if not forced:
        return []
    return encode(forced)[:budget]


def token_allowed(bitmask_row: Any, token_id: int) -> bool:
    """Whether bit ``token_id`` of a filled int32 bitmask row (tensor or array) is set."""
    word = int(bitmask_row[token_id >> 5])
    return bool((word >> (token_id & 31)) & 1)
