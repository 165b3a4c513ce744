"""Decode benchmark: constrained vs unconstrained decoding, and the served passes, per runtime adapter.

For each installed adapter (``transformers``, ``vllm``, ``mlx``), on the configured model (the
bundled SmolLM2-135M-Instruct by default), over the same reference turns:

- **tokens/s** of the extract prompt decoded under the extract grammar (constrained) and without
  it (``GenerationRequest(constrained=False)``), same prompt, same ``max_new_tokens``; both the
  end-to-end rate (completion tokens / generation wall time) and the decode rate that excludes the
  time to the first token (``(completion_tokens - 1) / (wall - ttft)``). Unconstrained outputs
  are of other lengths (often much shorter), so prefill weighs differently on the end-to-end rate:
  the **ratio** checked against the target is the decode-rate ratio; the end-to-end ratio is shown
  beside it. Before each turn's two timed runs an untimed one-token run primes the runtime's
  prompt cache, so both timed runs find the same cache state (vLLM and mlx reuse the KV of a
  prompt they have just seen; the transformers adapter caches the system prefix only);
- **mask time per token** (``mask_seconds / completion_tokens`` of the constrained runs;
  ``n/a`` when the adapter does not report it: vLLM applies masks inside its engine core);
- **model steps saved by jump-forward**: constrained completion tokens minus model steps (and the
  forced-token count); for ``transformers`` the same turns are also decoded with jump-forward off
  (step count, latency and whether the outputs are identical), and with the prefix KV cache off
  (extract latency p50 with the lever on vs off);
- **served passes**: extract and render through :class:`engines.slm.engine.SlmEngine` and
  :class:`engines.fallback.PassRunner` (validation, timeouts, fallback to the oracle), with the
  serving timeouts of the settings; latency p50/p95 per pass, the share that fell back and the
  fallback reasons. Render gets the labelled extraction and tool_summary (as ``travel-slm eval``
  does), so every adapter renders the same inputs. The circuit breaker is disabled so that every
  turn reaches the model.

Each adapter is built from the slm settings as the server builds it (for ``transformers`` on CPU
that includes ``slm.quantize``, none by default: ``--quantize int8`` measures int8), warmed up
(untimed generations) before timing, and runs in its own event loop (vLLM binds to one). Turns
are spread evenly and deterministically over the corpora.

    python -m bench.decode_bench                                  # every adapter, 20 turns (mlx: 2)
    python -m bench.decode_bench --adapters transformers --turns 5 --json
    python -m bench.decode_bench --check                          # exit 1 when a target is missed

Targets: constrained/unconstrained decode tokens/s ratio >= 0.95; served extract p50 <= 600 ms; served render
(plan mode) p50 <= 300 ms. `--models bundled,shipped` measures the untrained and the trained model in one run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import os
import platform
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from adapters.base import Generation
from contracts.vocab import PASSES
from core.cli import positive_int
from core.settings import Settings
from core.stats import percentile, share

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CORPORA = REPO.parent / "shared" / "reference" / "corpora"
ADAPTER_NAMES: tuple[str, ...] = ("transformers", "vllm", "mlx")
TARGET_RATIO = 0.95
TARGET_EXTRACT_P50_MS = 600.0
TARGET_RENDER_P50_MS = 300.0
WARMUP_TOKENS = 16


# --- turns --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BenchTurn:
    id: Any
    source: str
    turn: dict[str, Any]
    """The engine input (``Turn.engine_input()``)."""
    extraction: dict[str, Any]
    """The labelled extraction (render input)."""
    tool_summary: dict[str, Any]
    """The labelled tool_summary (render input)."""


def spread_indices(sizes: Sequence[int], n: int) -> list[tuple[int, int]]:
    """``n`` (file, line) picks spread evenly over files of ``sizes`` lines; deterministic.

    Files get equal quotas (round robin; a small file gives its surplus to the others); within a
    file the picks are evenly spaced; the result interleaves the files, so any prefix of it is
    spread too.
    """
    quotas = [0] * len(sizes)
    remaining = max(0, n)
    while remaining and any(q < s for q, s in zip(quotas, sizes, strict=True)):
        for i, size in enumerate(sizes):
            if remaining and quotas[i] < size:
                quotas[i] += 1
                remaining -= 1
    picks = [[int((j + 0.5) * size / quota) for j in range(quota)] if quota else []
             for size, quota in zip(sizes, quotas, strict=True)]
    out: list[tuple[int, int]] = []
    for j in range(max(quotas, default=0)):
        for i, lines in enumerate(picks):
            if j < len(lines):
                out.append((i, lines[j]))
    return out


def default_corpora() -> list[Path]:
    return sorted(DEFAULT_CORPORA.glob("*.labeled.jsonl"))


def load_turns(paths: Sequence[str | Path], n: int, problems: list[str] | None = None) -> list[BenchTurn]:
    """``n`` labelled turns spread evenly over ``paths`` (read in place); bad lines go to ``problems``."""
    from pydantic import ValidationError

    from evaluation.corpus import Record

    files: list[tuple[str, list[str]]] = []
    for path in paths:
        with open(path, encoding="utf-8") as handle:
            files.append((str(path), [line for line in handle if line.strip()]))
    turns: list[BenchTurn] = []
    for file_index, line_index in spread_indices([len(lines) for _, lines in files], n):
        name, lines = files[file_index]
        try:
            record = Record.model_validate(json.loads(lines[line_index]))
        except (ValueError, ValidationError) as exc:
            if problems is not None:
                problems.append(f"{name}: record {line_index + 1} skipped: {type(exc).__name__}")
            continue
        turns.append(BenchTurn(record.id, Path(name).name, record.input.engine_input(),
                               record.expected.extract, record.expected.tool_summary))
    return turns


# --- samples and summaries (pure) ------------------------------------------------------------------------


@dataclass
class Sample(Generation):
    """One timed generation: the adapter's :class:`~adapters.base.Generation` and the wall time of its
    ``generate`` call."""

    seconds: float = 0.0

    @classmethod
    def of(cls, gen: Generation, seconds: float) -> Sample:
        return cls(**{f.name: getattr(gen, f.name) for f in fields(Generation)}, seconds=float(seconds))


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 1)


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def _ttfts(samples: Sequence[Sample]) -> list[float]:
    return [s.time_to_first_token_s for s in samples if s.time_to_first_token_s is not None]


def decode_rate(sample: Sample) -> float | None:
    """Tokens after the first over the time after the first token; None without a decode phase."""
    ttft = sample.time_to_first_token_s
    if ttft is None or sample.completion_tokens < 2 or sample.seconds <= ttft:
        return None
    return (sample.completion_tokens - 1) / (sample.seconds - ttft)


def _rates(samples: Sequence[Sample]) -> tuple[float | None, float | None]:
    """(end-to-end tok/s, decode tok/s), unrounded: total tokens over total time, not a mean of rates.

    The decode rate counts the tokens after the first over the time after the first token, over
    the generations with at least two tokens and a known time to first token.
    """
    tokens = sum(s.completion_tokens for s in samples)
    seconds = sum(s.seconds for s in samples)
    eligible = [s for s in samples if decode_rate(s) is not None]
    decode_tokens = sum(s.completion_tokens - 1 for s in eligible)
    decode_seconds = sum(s.seconds - (s.time_to_first_token_s or 0.0) for s in eligible)
    return ratio(tokens, seconds), ratio(decode_tokens, decode_seconds)


def rate_summary(samples: Sequence[Sample]) -> dict[str, Any]:
    """Aggregate figures of a set of generations (rates as in :func:`_rates`)."""
    tokens = sum(s.completion_tokens for s in samples)
    seconds = sum(s.seconds for s in samples)
    tok_s, decode_tok_s = _rates(samples)
    mask = sum(s.mask_seconds for s in samples)
    steps = sum(s.model_steps for s in samples)
    ttfts = _ttfts(samples)
    return {
        "n": len(samples),
        "completion_tokens": tokens,
        "mean_completion_tokens": _round(tokens / len(samples), 1) if samples else None,
        "seconds": _round(seconds),
        "tok_s": _round(tok_s, 2),
        "decode_tok_s": _round(decode_tok_s, 2),
        "decode_n": sum(decode_rate(s) is not None for s in samples),
        "latency_p50_ms": _ms(percentile([s.seconds for s in samples], 50)),
        "latency_p95_ms": _ms(percentile([s.seconds for s in samples], 95)),
        "ttft_p50_ms": _ms(percentile(ttfts, 50)),
        # 0 means "not reported" (vLLM masks inside its engine core), never "free"
        "mask_ms_per_token": _round(mask / tokens * 1000.0, 4) if mask > 0 and tokens else None,
        "mask_share": _round(mask / seconds, 4) if mask > 0 and seconds else None,
        "model_steps": steps,
        "forced_tokens": sum(s.forced_tokens for s in samples),
        "steps_saved": tokens - steps,
        "finish": dict(sorted(Counter(s.finish_reason for s in samples).items())),
    }


def decode_comparison(constrained: Sequence[Sample], unconstrained: Sequence[Sample]) -> dict[str, Any]:
    """Constrained vs unconstrained on the same turns; ``ratio`` uses the decode rate when both have one."""
    c, u = rate_summary(constrained), rate_summary(unconstrained)
    (c_tok_s, c_dec), (u_tok_s, u_dec) = _rates(constrained), _rates(unconstrained)
    e2e = ratio(c_tok_s, u_tok_s)
    dec = ratio(c_dec, u_dec)
    basis = "decode" if dec is not None else "end_to_end"
    paired = [ratio(decode_rate(a), decode_rate(b)) for a, b in zip(constrained, unconstrained, strict=False)]
    return {
        "constrained": c,
        "unconstrained": u,
        "ratio_tok_s": _round(e2e),
        "ratio_decode_tok_s": _round(dec),
        # robust to one slow outlier on a shared CPU: the lower median of the per-turn decode-rate ratios
        "ratio_decode_median": _round(percentile([r for r in paired if r is not None], 50)),
        "ratio": _round(dec if dec is not None else e2e),
        "ratio_basis": basis,
    }


@dataclass(frozen=True)
class ServedSample:
    latency_ms: float
    fallback_reason: str | None = None
    completion_tokens: int = 0


def pass_summary(samples: Sequence[ServedSample]) -> dict[str, Any]:
    """Latency p50/p95 (nearest rank), the share that fell back, and the fallback reasons."""
    latencies = [s.latency_ms for s in samples]
    fell = [s.fallback_reason for s in samples if s.fallback_reason is not None]
    return {
        "n": len(samples),
        "p50_ms": _round(percentile(latencies, 50), 1),
        "p95_ms": _round(percentile(latencies, 95), 1),
        "fallback_share": _round(share(len(fell), len(samples)), 4),
        "fallback_reasons": dict(sorted(Counter(fell).items())),
        "mean_completion_tokens": _round(sum(s.completion_tokens for s in samples) / len(samples), 1)
        if samples else None,
    }


def jump_forward_lever(on: Sequence[Sample], off: Sequence[Sample], identical: int) -> dict[str, Any]:
    """The same turns decoded with jump-forward on and off (constrained)."""
    steps_on, steps_off = sum(s.model_steps for s in on), sum(s.model_steps for s in off)
    p50_on = percentile([s.seconds for s in on], 50)
    p50_off = percentile([s.seconds for s in off], 50)
    return {
        "n": len(on),
        "steps_on": steps_on,
        "steps_off": steps_off,
        "steps_saved": steps_off - steps_on,
        "steps_saved_share": _round(ratio(steps_off - steps_on, steps_off)),
        "forced_tokens": sum(s.forced_tokens for s in on),
        "p50_on_ms": _ms(p50_on),
        "p50_off_ms": _ms(p50_off),
        "decode_tok_s_on": rate_summary(on)["decode_tok_s"],
        "decode_tok_s_off": rate_summary(off)["decode_tok_s"],
        "identical_outputs": identical,
    }


def prefix_lever(on: Sequence[Sample], off: Sequence[Sample], identical: int | None = None) -> dict[str, Any]:
    """The same turns (constrained extract) with the prefix KV cache on and off."""
    p50_on = percentile([s.seconds for s in on], 50)
    p50_off = percentile([s.seconds for s in off], 50)
    return {
        "n": len(on),
        "p50_on_ms": _ms(p50_on),
        "p50_off_ms": _ms(p50_off),
        "p50_saved_ms": _ms(p50_off - p50_on) if p50_on is not None and p50_off is not None else None,
        "ttft_p50_on_ms": _ms(percentile(_ttfts(on), 50)),
        "ttft_p50_off_ms": _ms(percentile(_ttfts(off), 50)),
        "identical_outputs": identical,
    }


def row_label(r: dict[str, Any]) -> str:
    """``adapter`` or ``adapter:model`` when the run names models (``--models``)."""
    return f"{r['adapter']}:{r['model_spec']}" if r.get("model_spec") else r["adapter"]


def evaluate_targets(results: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per measured adapter and model: tokens/s ratio, served extract p50 and (plan) render p50 targets."""
    checks: dict[str, dict[str, Any]] = {}
    for r in results:
        if r.get("status") != "ok":
            continue
        name = row_label(r)
        value = r["decode"]["ratio"]
        checks[f"{name}_tok_s_ratio"] = {"value": value, "basis": r["decode"]["ratio_basis"], "target": TARGET_RATIO,
                                         "ok": value is not None and value >= TARGET_RATIO}
        p50 = r["served"]["extract"]["p50_ms"]
        checks[f"{name}_extract_p50_ms"] = {"value": p50, "target": TARGET_EXTRACT_P50_MS,
                                            "ok": p50 is not None and p50 <= TARGET_EXTRACT_P50_MS}
        if r.get("meta", {}).get("render_mode") == "plan":
            p50 = r["served"]["render"]["p50_ms"]
            checks[f"{name}_render_p50_ms"] = {"value": p50, "target": TARGET_RENDER_P50_MS,
                                               "ok": p50 is not None and p50 <= TARGET_RENDER_P50_MS}
    return checks


def _fmt(value: Any, spec: str = ".1f", suffix: str = "") -> str:
    if value is None:
        return "n/a"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value}{suffix}"
    if isinstance(value, float):
        return f"{value:{spec}}{suffix}"
    return str(value)


def _reasons(reasons: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in reasons.items()) or "none"


COLUMNS: tuple[str, ...] = (
    "adapter", "turns", "c tok/s", "u tok/s", "ratio", "c dec tok/s", "u dec tok/s", "dec ratio",
    "mask ms/tok", "steps saved", "forced", "extract p50/p95 ms", "extract fb", "render p50/p95 ms", "render fb",
)


def table_rows(results: Sequence[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for r in results:
        if r.get("status") != "ok":
            continue
        d, s = r["decode"], r["served"]
        c, u = d["constrained"], d["unconstrained"]
        rows.append([
            row_label(r), str(r["turns"]), _fmt(c["tok_s"]), _fmt(u["tok_s"]), _fmt(d["ratio_tok_s"], ".2f"),
            _fmt(c["decode_tok_s"]), _fmt(u["decode_tok_s"]), _fmt(d["ratio_decode_tok_s"], ".2f"),
            _fmt(c["mask_ms_per_token"], ".3f"), f"{c['steps_saved']}/{c['completion_tokens']}",
            str(c["forced_tokens"]),
            f"{_fmt(s['extract']['p50_ms'], '.0f')}/{_fmt(s['extract']['p95_ms'], '.0f')}",
            _fmt(None if s["extract"]["fallback_share"] is None else s["extract"]["fallback_share"] * 100, ".0f", "%"),
            f"{_fmt(s['render']['p50_ms'], '.0f')}/{_fmt(s['render']['p95_ms'], '.0f')}",
            _fmt(None if s["render"]["fallback_share"] is None else s["render"]["fallback_share"] * 100, ".0f", "%"),
        ])
    return rows


def format_table(report: dict[str, Any]) -> str:
    """The one table (a row per measured adapter), then the levers, fallbacks, skips and targets."""
    results = report["adapters"]
    rows = [list(COLUMNS), *table_rows(results)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = []
    for k, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in
                               enumerate(zip(row, widths, strict=True))).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    for r in results:
        if r.get("status") != "ok":
            lines.append(f"{row_label(r):<{widths[0]}}  {r.get('status')}: {r.get('reason')}")
    lines += [
        "",
        "c/u = constrained/unconstrained extract prompt, same turns and max_new_tokens; tok/s = completion tokens / "
        "wall time; dec = decode rate excluding time to first token; 'ratio' columns are c/u; the target uses "
        "'dec ratio'. steps saved = constrained completion tokens - model steps (jump-forward), over all tokens. "
        "fb = share of served passes that fell back.",
    ]
    for r in results:
        if r.get("status") != "ok":
            continue
        name, meta = row_label(r), r.get("meta", {})
        lines.append("")
        lines.append(f"{name}: model {meta.get('model')} on {meta.get('device')} (extract {meta.get('extract_mode')}, "
                     f"render {meta.get('render_mode')}, prompts {meta.get('prompt_style')}), "
                     f"load {_fmt(meta.get('load_s'))} s, "
                     f"quantize {_fmt(meta.get('quantize'))}, jump_forward {_fmt(meta.get('jump_forward'))}, "
                     f"prefix_cache {_fmt(meta.get('prefix_cache'))}, "
                     f"max_new_tokens {meta.get('max_new_tokens_extract')}/{meta.get('max_new_tokens_render')}, "
                     f"timeouts {meta.get('timeouts_ms')}")
        c, u = r["decode"]["constrained"], r["decode"]["unconstrained"]
        lines.append(f"  extract decode: constrained {c['mean_completion_tokens']} tok/turn, p50 "
                     f"{_fmt(c['latency_p50_ms'], '.0f')} ms, finish {c['finish']}; unconstrained "
                     f"{u['mean_completion_tokens']} tok/turn, p50 {_fmt(u['latency_p50_ms'], '.0f')} ms, "
                     f"finish {u['finish']}; per-turn median dec ratio "
                     f"{_fmt(r['decode'].get('ratio_decode_median'), '.2f')}")
        levers = r.get("levers") or {}
        jf = levers.get("jump_forward")
        if jf:
            lines.append(f"  jump-forward on vs off: model steps {jf['steps_on']} vs {jf['steps_off']} (saved "
                         f"{jf['steps_saved']}, {_fmt(None if jf['steps_saved_share'] is None else jf['steps_saved_share'] * 100, '.0f', '%')}), "
                         f"p50 {_fmt(jf['p50_on_ms'], '.0f')} vs {_fmt(jf['p50_off_ms'], '.0f')} ms, decode tok/s "
                         f"{_fmt(jf['decode_tok_s_on'])} vs {_fmt(jf['decode_tok_s_off'])}, identical outputs "
                         f"{jf['identical_outputs']}/{jf['n']}")
            off_ratio = levers.get("ratio_decode_tok_s_jump_forward_off")
            if off_ratio is not None:
                lines.append(f"  mask overhead alone (jump-forward off): dec ratio {off_ratio:.2f}")
        px = levers.get("prefix_cache")
        if px:
            lines.append(f"  prefix KV cache on vs off: extract p50 {_fmt(px['p50_on_ms'], '.0f')} vs "
                         f"{_fmt(px['p50_off_ms'], '.0f')} ms (saved {_fmt(px['p50_saved_ms'], '.0f')} ms), ttft p50 "
                         f"{_fmt(px['ttft_p50_on_ms'], '.0f')} vs {_fmt(px['ttft_p50_off_ms'], '.0f')} ms, "
                         f"identical outputs {_fmt(px.get('identical_outputs'))}/{px['n']}")
        for pass_name in PASSES:
            sp = r["served"][pass_name]
            lines.append(f"  served {pass_name}: n {sp['n']}, p50 {_fmt(sp['p50_ms'], '.0f')} ms, p95 "
                         f"{_fmt(sp['p95_ms'], '.0f')} ms, fell back {_fmt(None if sp['fallback_share'] is None else sp['fallback_share'] * 100, '.0f', '%')} "
                         f"({_reasons(sp['fallback_reasons'])})")
    checks = report.get("targets") or {}
    if checks:
        lines.append("")
        for name, check in checks.items():
            shown = _fmt(check["value"], ".3f" if "ratio" in name else ".0f")
            relation = ">=" if "ratio" in name else "<="
            lines.append(f"{'PASS' if check['ok'] else 'FAIL'}  {name} {shown} {relation} {check['target']}")
    for problem in report.get("problems") or []:
        lines.append(f"corpus: {problem}")
    return "\n".join(lines)


def build_report(results: list[dict[str, Any]], meta: dict[str, Any], problems: list[str] | None = None
                 ) -> dict[str, Any]:
    return {"meta": meta, "adapters": results, "targets": evaluate_targets(results), "problems": problems or []}


# --- measurement ---------------------------------------------------------------------------------------


@dataclass
class BenchOptions:
    max_new_tokens: int | None = None
    """Extract budget (constrained, unconstrained and served); None: the settings' value."""
    max_new_tokens_render: int | None = None
    render_mode: str | None = None
    quantize: str | None = None
    """``slm.quantize`` (transformers on CPU: none, int8); None: the settings' value."""
    timeout_ms: float | None = None
    """Serving timeout per pass; None: the settings' timeouts; 0: no timeout."""
    levers: bool = True
    threads: int | None = None
    config: str | None = None
    slm_settings: Any = None
    """A ready :class:`core.settings.SlmSettings` (tests); overrides ``config``."""
    model: str | None = None
    """``slm.model`` for this run (``--models``); None: the settings' value."""


def _settings_for(name: str, options: BenchOptions) -> Any:
    from core.settings import load_settings

    base = options.slm_settings if options.slm_settings is not None else load_settings(options.config).slm
    update: dict[str, Any] = {"adapter": name}
    if options.model is not None:
        update["model"] = options.model
    if options.max_new_tokens is not None:
        update["max_new_tokens_extract"] = options.max_new_tokens
    if options.max_new_tokens_render is not None:
        update["max_new_tokens_render"] = options.max_new_tokens_render
    if options.render_mode is not None:
        update["render_mode"] = options.render_mode
    if options.quantize is not None:
        update["quantize"] = options.quantize
    return type(base).model_validate({**base.model_dump(), **update})


def skip_reason(name: str) -> str | None:
    """Why ``name`` cannot run here (its missing packages), or None."""
    from adapters.select import missing_packages

    missing = missing_packages(name)
    return f"missing Python package(s) {', '.join(missing)}" if missing else None


@contextlib.contextmanager
def _attribute(obj: Any, name: str, value: Any) -> Iterator[None]:
    saved = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, saved)


async def _bench_adapter(name: str, turns: Sequence[BenchTurn], options: BenchOptions,
                         tick: Callable[[], None]) -> dict[str, Any]:
    from adapters.base import GenerationRequest
    from engines.fallback import PassRunner
    from engines.slm import grammars, prompts
    from engines.slm.engine import SlmEngine

    settings = _settings_for(name, options)
    overrides: dict[str, Any] = {}
    if name == "transformers" and options.threads:
        overrides["num_threads"] = options.threads
    engine = SlmEngine(settings, adapter_options=overrides)
    try:
        await engine.start()
        ready, why = engine.readiness()
        if not ready:
            status = "skipped" if "unavailable" in why else "failed"
            return {"adapter": name, "model_spec": settings.model, "status": status, "reason": why}
        adapter = engine.runtime
        settings = engine.settings  # what the model package implied (base model, LoRA, modes)
        budget = settings.max_new_tokens("extract")
        plan_mode = engine.extract_grammar == grammars.EXTRACT_PLAN

        def request(turn: BenchTurn, constrained: bool = True, max_new: int | None = None) -> Any:
            return GenerationRequest(messages=prompts.extract_messages(turn.turn, engine.prompt_style, plan=plan_mode),
                                     schema_key=engine.extract_grammar, max_new_tokens=max_new or budget,
                                     lora=settings.lora_for("extract"), constrained=constrained)

        async def timed(req: Any) -> tuple[Sample, str]:
            started = time.perf_counter()
            gen = await adapter.generate(req)
            sample = Sample.of(gen, time.perf_counter() - started)
            tick()
            return sample, gen.text

        # warm-up (untimed): one constrained and one unconstrained generation
        await timed(request(turns[0], True, min(WARMUP_TOKENS, budget)))
        await timed(request(turns[0], False, min(WARMUP_TOKENS, budget)))

        levers = options.levers and name == "transformers"
        constrained: list[Sample] = []
        unconstrained: list[Sample] = []
        jf_off: list[Sample] = []
        prefix_off: list[Sample] = []
        identical = identical_prefix = 0
        for turn in turns:
            # prime the prompt cache so the two timed runs find the same state
            await adapter.generate(request(turn, False, 1))
            sample, text = await timed(request(turn, True))
            constrained.append(sample)
            unconstrained.append((await timed(request(turn, False)))[0])
            if levers:
                with _attribute(adapter, "jump_forward", False):
                    off, off_text = await timed(request(turn, True))
                jf_off.append(off)
                identical += off_text == text
                with _attribute(adapter, "prefix_cache", False):
                    off, off_text = await timed(request(turn, True))
                prefix_off.append(off)
                identical_prefix += off_text == text

        timeouts: dict[tuple[str, str], float] = {}
        for pass_name in PASSES:
            limit = settings.timeout_ms(pass_name) if options.timeout_ms is None else options.timeout_ms
            if limit:
                timeouts[("slm", pass_name)] = float(limit)
        runner = PassRunner.from_settings(Settings(slm=settings), {"slm": engine}, policy="measure", timeouts_ms=timeouts)
        served: dict[str, list[ServedSample]] = {"extract": [], "render": []}
        for turn in turns:
            ex = await runner.extract(turn.turn, "slm")
            served["extract"].append(ServedSample(ex.latency_ms, ex.fallback_reason, ex.completion_tokens))
            tick()
            rd = await runner.render(turn.turn, turn.extraction, turn.tool_summary, "slm")
            served["render"].append(ServedSample(rd.latency_ms, rd.fallback_reason, rd.completion_tokens))
            tick()

        result: dict[str, Any] = {
            "adapter": name,
            "model_spec": options.model,
            "status": "ok",
            "reason": None,
            "turns": len(turns),
            "meta": {
                "model": adapter.model_id,
                "device": str(getattr(adapter, "device", "unknown")),
                "load_s": _round(engine.load_seconds, 2),
                "grammar_compile_s": {k: _round(v) for k, v in engine.grammar_compile_seconds.items()},
                "quantize": getattr(adapter, "quantize", None),
                "jump_forward": getattr(adapter, "jump_forward", None),
                "prefix_cache": getattr(adapter, "prefix_cache", settings.prefix_cache),
                "max_new_tokens_extract": budget,
                "max_new_tokens_render": settings.max_new_tokens("render"),
                "render_mode": settings.render_mode,
                "extract_mode": settings.extract_mode,
                "prompt_style": engine.prompt_style,
                "timeouts_ms": {p: t for (_, p), t in timeouts.items()} or None,
                "turn_ids": [t.id for t in turns],
            },
            "decode": decode_comparison(constrained, unconstrained),
            "levers": {},
            "served": {p: pass_summary(v) for p, v in served.items()},
        }
        if levers:
            result["levers"] = {
                "jump_forward": jump_forward_lever(constrained, jf_off, identical),
                "prefix_cache": prefix_lever(constrained, prefix_off, identical_prefix),
                "ratio_decode_tok_s_jump_forward_off": decode_comparison(jf_off, unconstrained)["ratio_decode_tok_s"],
            }
        return result
    finally:
        await engine.aclose()


def planned_steps(name: str, turns: int, options: BenchOptions) -> int:
    """Progress units for one adapter: warm-up, timed generations and served passes."""
    per_turn = 2 + (2 if options.levers and name == "transformers" else 0) + 2
    return 2 + per_turn * turns


def run_adapter(name: str, turns: Sequence[BenchTurn], options: BenchOptions,
                tick: Callable[[], None] | None = None) -> dict[str, Any]:
    """Measure one adapter in its own event loop; a missing runtime or a failure is a row, not a crash."""
    reason = skip_reason(name)
    if reason:
        return {"adapter": name, "status": "skipped", "reason": reason}
    if not turns:
        return {"adapter": name, "status": "skipped", "reason": "no turns"}
    started = time.perf_counter()
    try:
        result = asyncio.run(_bench_adapter(name, turns, options, tick or (lambda: None)))
    except Exception as exc:
        logging.getLogger("travel_slm.bench").exception("decode bench: adapter %s failed", name)
        return {"adapter": name, "status": "failed", "reason": f"{type(exc).__name__}: {exc}"}
    finally:
        # free the runtime now (vLLM's engine sits in reference cycles), not at interpreter exit
        gc.collect()
    result["seconds"] = round(time.perf_counter() - started, 1)
    return result


# --- CLI -----------------------------------------------------------------------------------------------


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Send everything written to file descriptor 1 (runtimes' logs, child processes) to stderr."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _adapter_list(value: str) -> list[str]:
    names = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [n for n in names if n not in ADAPTER_NAMES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"expected a comma-separated subset of {','.join(ADAPTER_NAMES)}, "
                                         f"got {value!r}")
    return list(dict.fromkeys(names))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.decode_bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Exit status: 0 (with --check: 0 every target met, 1 a target missed or no adapter measured), "
               "2 usage error. Runtime logs go to stderr; stdout holds only the table or the JSON object.",
    )
    p.add_argument("--adapters", type=_adapter_list, default=list(ADAPTER_NAMES), metavar="A,B",
                   help=f"comma-separated adapters (default: {','.join(ADAPTER_NAMES)}; one whose package is "
                        "missing is listed as skipped with the reason)")
    p.add_argument("--models", type=lambda v: [m.strip() for m in v.split(",") if m.strip()], metavar="M,N",
                   help="slm.model specs measured one after the other in the same run, e.g. 'bundled,shipped' "
                        "(the untrained demo model beside the trained package); default: the settings' model")
    p.add_argument("--turns", type=positive_int, default=20, metavar="N",
                   help="reference turns per adapter (default 20)")
    p.add_argument("--mlx-turns", type=positive_int, default=2, metavar="N",
                   help="turns for the mlx adapter, whose CPU backend is slow (default 2; at most --turns)")
    p.add_argument("--corpus", nargs="+", metavar="FILE", type=Path,
                   help=f"labelled .jsonl files (default: every *.labeled.jsonl under {DEFAULT_CORPORA})")
    p.add_argument("--max-new-tokens", type=positive_int, metavar="N",
                   help="extract budget for every run (default: the settings' max_new_tokens_extract, 192)")
    p.add_argument("--max-new-tokens-render", type=positive_int, metavar="N",
                   help="render budget of the served render pass (default: the settings' value, 160)")
    p.add_argument("--render-mode", choices=("plan", "full"), help="render grammar (default: the settings', plan)")
    p.add_argument("--quantize", choices=("none", "int8"),
                   help="slm.quantize for the transformers adapter on CPU (default: the settings', none); "
                        "run twice to compare")
    p.add_argument("--timeout-ms", type=float, metavar="MS",
                   help="serving timeout per pass (default: the settings' timeouts, 800 ms; 0: none)")
    p.add_argument("--no-levers", action="store_true",
                   help="skip the transformers lever runs (jump-forward off, prefix cache off)")
    p.add_argument("--threads", type=positive_int, metavar="N",
                   help="torch threads of the transformers adapter (default: the adapter's, min(8, cores))")
    p.add_argument("--config", metavar="FILE", help="settings file (.toml, .json, .yaml) for the slm engine")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table; no progress bar")
    p.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("travel_slm.fallback").setLevel(logging.ERROR)  # counted in the report instead

    corpora = [Path(c) for c in args.corpus] if args.corpus else default_corpora()
    missing = [str(c) for c in corpora if not c.is_file()]
    if not corpora or missing:
        print(f"decode_bench: corpus file not found: {', '.join(missing) or DEFAULT_CORPORA}", file=sys.stderr)
        return 2
    options = BenchOptions(max_new_tokens=args.max_new_tokens, max_new_tokens_render=args.max_new_tokens_render,
                           render_mode=args.render_mode, quantize=args.quantize, timeout_ms=args.timeout_ms, levers=not args.no_levers,
                           threads=args.threads, config=args.config)
    if args.config:
        from core.settings import ConfigFileError, load_settings

        try:
            options = replace(options, slm_settings=load_settings(args.config).slm)
        except (ConfigFileError, ValueError) as exc:
            print(f"decode_bench: {exc}", file=sys.stderr)
            return 2
    problems: list[str] = []
    turns = load_turns(corpora, args.turns, problems)
    mlx_turns = load_turns(corpora, min(args.mlx_turns, args.turns), problems) if "mlx" in args.adapters else []
    show_progress = not args.json and sys.stderr.isatty()
    results = []
    with stdout_to_stderr():
        for model in args.models or [None]:
            run_options = replace(options, model=model)
            for name in args.adapters:
                chosen = mlx_turns if name == "mlx" else turns
                bar = None
                if show_progress and not skip_reason(name):
                    from tqdm import tqdm

                    bar = tqdm(total=planned_steps(name, len(chosen), options), unit="gen",
                               desc=name if model is None else f"{name}:{model}", file=sys.stderr)
                try:
                    result = run_adapter(name, chosen, run_options, bar.update if bar is not None else None)
                    result.setdefault("model_spec", model)
                    results.append(result)
                finally:
                    if bar is not None:
                        bar.close()
    meta = {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
            "corpora": [c.name for c in corpora], "turns": len(turns), "mlx_turns": len(mlx_turns),
            "argv": sys.argv[1:] if argv is None else argv}
    report = build_report(results, meta, sorted(set(problems)))
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        print(format_table(report))
    if args.check:
        checks = report["targets"]
        return 0 if checks and all(c["ok"] for c in checks.values()) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
