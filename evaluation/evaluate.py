"""``travel-slm eval``: run an engine over labelled turns and report the metrics and gate of
docs/evaluation.md.

Each engine is scored on its OWN answer for each pass (the default view, ``own``): a pass that
fell back to the oracle (timeout, invalid output, open circuit...) scores as a miss on every field
of that pass and as invalid in the validity metrics, so a candidate that does not answer fails the
gate. ``fallback_rate`` and the fallback reasons are reported beside the metrics. ``--served``
scores what the server would serve instead, the oracle's substitutes included; every output of
that view says so.

Extract is scored on the engine's answer for the turn. Render is scored on the labelled
extraction and the labelled tool_summary (the oracle's fixtures), so a wrong extraction does not
hide a right render. Every pass goes through the same fallback layer as the server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from contracts.validation import envelope_validity, extract_errors, intent_in_vocab, tools_in_vocab
from contracts.vocab import ENGINES
from core.cli import positive_int
from core.stats import percentile, share
from engines.agreement import extract_agreement, render_agreement, turn_class
from evaluation.corpus import CorpusProblem, LabelledTurn, read_corpora

if TYPE_CHECKING:
    from core.settings import Settings

VIEWS: dict[str, str] = {
    "own": "own answers: a pass that fell back scores as a miss",
    "served": "SERVED answers: the oracle's fallback substitutes are scored as if the engine had answered",
}

#: metric -> minimum value for the gate (docs/evaluation.md §6).
GATE: dict[str, float] = {
    "tool_match": 0.98,
    "render_intent_match": 0.98,
    "widget_type_match": 0.98,
    "arg_fidelity": 0.95,
    "slot_update_match": 0.95,
    "extract_schema_validity": 1.0,
    "widget_schema_validity": 1.0,
    "tool_vocab_validity": 1.0,
    "render_intent_vocab_validity": 1.0,
}

METRICS: tuple[str, ...] = (
    "tool_match", "arg_fidelity", "slot_update_match", "render_intent_match", "widget_type_match",
    "extract_exact", "render_exact", "extract_schema_validity", "widget_schema_validity", "tool_vocab_validity",
    "render_intent_vocab_validity", "fallback_rate",
)


@dataclass
class TurnResult:
    """One scored turn: the served answers beside the labels."""

    expected_extract: dict[str, Any]
    expected_render: dict[str, Any]
    extract: Any
    render: Any
    extract_fallback: bool = False
    render_fallback: bool = False
    extract_ms: float = 0.0
    render_ms: float = 0.0
    id: Any = None
    extract_reason: str | None = None
    render_reason: str | None = None


@dataclass
class EvalReport:
    n: int
    metrics: dict[str, float | None]
    latency_ms: dict[str, dict[str, float | None]]
    gate: dict[str, Any]
    problems: list[str] = field(default_factory=list)
    engine: str = ""
    view: str = "own"
    fallback_reasons: dict[str, dict[str, int]] = field(default_factory=dict)
    per_class: dict[str, dict[str, Any]] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"n": self.n, "view": self.view, "view_note": VIEWS[self.view],
                               "metrics": self.metrics, "fallback_reasons": self.fallback_reasons,
                               "latency_ms": self.latency_ms, "gate": self.gate, "per_class": self.per_class}
        if self.engine:
            out["engine"] = self.engine
        if self.problems:
            out["problems"] = self.problems
        return out


def compute_metrics(results: list[TurnResult], view: str = "own") -> dict[str, float | None]:
    """The per-field metrics over scored turns (``None`` when there is no turn).

    ``view="own"``: a pass that fell back is a miss on every field of that pass and is invalid
    (one invalid envelope for a render); ``view="served"``: the answers are scored as given.
    """
    if view not in VIEWS:
        raise ValueError(f"unknown view {view!r}")
    n = len(results)
    counts = dict.fromkeys(METRICS, 0)
    envelopes_valid = envelopes_total = 0
    for r in results:
        counts["fallback_rate"] += r.extract_fallback + r.render_fallback
        if not (view == "own" and r.extract_fallback):
            ex = extract_agreement(r.extract, r.expected_extract)
            counts["tool_match"] += ex["tool_match"]
            counts["arg_fidelity"] += ex["arg_match"]
            counts["slot_update_match"] += ex["slot_match"]
            counts["render_intent_match"] += ex["render_intent_match"]
            counts["extract_exact"] += r.extract == r.expected_extract
            counts["extract_schema_validity"] += not extract_errors(r.extract)
            counts["tool_vocab_validity"] += tools_in_vocab(r.extract)
            counts["render_intent_vocab_validity"] += intent_in_vocab(r.extract)
        if view == "own" and r.render_fallback:
            envelopes_total += 1
            continue
        rd = render_agreement(r.render, r.expected_render)
        counts["widget_type_match"] += rd["widget_type_match"]
        counts["render_exact"] += r.render == r.expected_render
        valid, total = envelope_validity(r.render)
        envelopes_valid += valid
        envelopes_total += total
    metrics: dict[str, float | None] = {}
    for name in METRICS:
        if name == "widget_schema_validity":
            metrics[name] = share(envelopes_valid, envelopes_total)
        elif name == "fallback_rate":
            metrics[name] = share(counts[name], 2 * n)
        else:
            metrics[name] = share(counts[name], n)
    return metrics


def evaluate_gate(metrics: dict[str, float | None]) -> dict[str, Any]:
    failures = []
    for name, target in GATE.items():
        value = metrics.get(name)
        if value is None or value < target:
            shown = "n/a" if value is None else f"{value:.4f}"
            failures.append(f"{name} {shown} < {target}")
    return {"passed": not failures, "failures": failures}


def latency_summary(results: list[TurnResult]) -> dict[str, dict[str, float | None]]:
    def summary(values: list[float]) -> dict[str, float | None]:
        p50, p95 = percentile(values, 50), percentile(values, 95)
        return {"p50": None if p50 is None else round(p50, 3), "p95": None if p95 is None else round(p95, 3)}

    return {"extract": summary([r.extract_ms for r in results]),
            "render": summary([r.render_ms for r in results]),
            "turn": summary([r.extract_ms + r.render_ms for r in results])}


def fallback_reasons(results: list[TurnResult]) -> dict[str, dict[str, int]]:
    """``pass -> reason -> count`` over the passes that fell back."""
    out: dict[str, dict[str, int]] = {"extract": {}, "render": {}}
    for r in results:
        for pass_name, fell, reason in (("extract", r.extract_fallback, r.extract_reason),
                                        ("render", r.render_fallback, r.render_reason)):
            if fell:
                key = reason or "unknown"
                out[pass_name][key] = out[pass_name].get(key, 0) + 1
    return out


CLASS_METRICS: tuple[str, ...] = ("render_intent_match", "tool_match", "arg_fidelity", "slot_update_match",
                                  "widget_type_match", "fallback_rate")


def per_class(results: list[TurnResult], view: str = "own") -> dict[str, dict[str, Any]]:
    """The main metrics per class of the LABEL (render-intent kind | first tool)."""
    groups: dict[str, list[TurnResult]] = {}
    for r in results:
        groups.setdefault(turn_class(r.expected_extract), []).append(r)
    out = {}
    for cls in sorted(groups):
        metrics = compute_metrics(groups[cls], view)
        out[cls] = {"n": len(groups[cls]), **{k: metrics[k] for k in CLASS_METRICS}}
    return out


def build_report(results: list[TurnResult], problems: list[CorpusProblem], engine: str = "",
                 view: str = "own") -> EvalReport:
    metrics = compute_metrics(results, view)
    return EvalReport(len(results), metrics, latency_summary(results), evaluate_gate(metrics),
                      [str(p) for p in problems], engine, view, fallback_reasons(results), per_class(results, view))


async def _score(runner: Any, engine: str, item: LabelledTurn) -> TurnResult:
    turn = item.turn
    expected = item.record.expected
    t0 = time.perf_counter()
    ex = await runner.extract(turn, engine)
    t1 = time.perf_counter()
    rd = await runner.render(turn, expected.extract, expected.tool_summary, engine)
    t2 = time.perf_counter()
    # own view: a fallen-back pass is scored as a miss by compute_metrics; its engine_document is kept
    # only for the served view, where what the caller got (the oracle's substitute) is scored.
    return TurnResult(expected.extract, expected.render, ex.document, rd.document, ex.fallback_used,
                      rd.fallback_used, (t1 - t0) * 1000.0, (t2 - t1) * 1000.0, item.record.id,
                      ex.fallback_reason, rd.fallback_reason)


async def run_eval(
    engine_name: str, corpora: list[str], *, split: str | None = None, limit: int | None = None,
    settings: Settings | None = None, progress: bool = False, view: str = "own",
) -> EvalReport:
    from core.settings import load_settings
    from engines.fallback import PassRunner
    from engines.registry import build_engine

    settings = settings or load_settings()
    problems: list[CorpusProblem] = []
    items: list[LabelledTurn] = []
    for item in read_corpora(corpora, problems, split):
        if limit is not None and len(items) >= limit:
            break
        items.append(item)
    engine = build_engine(engine_name, settings)
    await engine.start()
    runner = PassRunner.from_settings(settings, {engine_name: engine}, policy="serve")
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(items), unit="turn", desc=f"eval {engine_name}", file=sys.stderr)
    results = []
    try:
        for item in items:
            results.append(await _score(runner, engine_name, item))
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
        await engine.aclose()
    return build_report(results, problems, engine_name, view)


def _metric_rows(report: EvalReport, passed: str, failed: str) -> Iterator[tuple[str, str, str]]:
    """``(metric, value as shown, verdict)`` per metric: ``passed``, or ``failed (>= target)``, or empty for a
    metric the gate does not check."""
    for name in METRICS:
        value = report.metrics[name]
        target = GATE.get(name)
        shown = "n/a" if value is None else f"{value:.4f}"
        verdict = "" if target is None else (passed if value is not None and value >= target
                                             else f"{failed} (>= {target})")
        yield name, shown, verdict


def _fallbacks(report: EvalReport) -> Iterator[tuple[str, str]]:
    """``(pass, "reason count, ...")`` for each pass that fell back."""
    for pass_name, reasons in report.fallback_reasons.items():
        if reasons:
            yield pass_name, ", ".join(f"{k} {v}" for k, v in sorted(reasons.items()))


def format_table(report: EvalReport) -> str:
    lines = [f"engine {report.engine}   turns {report.n}   view: {VIEWS[report.view]}", "",
             f"{'metric':32} {'value':>8}  gate"]
    for name, shown, verdict in _metric_rows(report, "ok", "FAIL"):
        lines.append(f"{name:32} {shown:>8}  {verdict}")
    for pass_name, reasons in _fallbacks(report):
        lines.append(f"fallbacks {pass_name:8} {reasons}")
    lines.append("")
    for pass_name, figures in report.latency_ms.items():
        p50, p95 = figures["p50"], figures["p95"]
        lines.append(f"latency {pass_name:8} p50 {p50 if p50 is not None else 'n/a'} ms   "
                     f"p95 {p95 if p95 is not None else 'n/a'} ms")
    lines.append("")
    lines.append(("gate: PASSED" if report.gate["passed"] else "gate: FAILED: " + "; ".join(report.gate["failures"]))
                 + ("   (served view)" if report.view == "served" else ""))
    return "\n".join(lines)


def format_per_class(report: EvalReport) -> str:
    """The per-class table (class of the label: render-intent kind | first tool)."""
    head = f"{'class':42} {'n':>4} " + " ".join(f"{m[:10]:>10}" for m in CLASS_METRICS)
    lines = [head]
    for cls, row in report.per_class.items():
        cells = " ".join(f"{row[m]:>10.3f}" if row[m] is not None else f"{'n/a':>10}" for m in CLASS_METRICS)
        lines.append(f"{cls:42} {row['n']:>4} {cells}")
    return "\n".join(lines)


def format_markdown(report: EvalReport) -> str:
    lines = [f"# travel-slm eval: {report.engine}", "", f"{report.n} turns. View: {VIEWS[report.view]}.", "",
             "| metric | value | gate |", "|---|---:|---|"]
    for name, shown, verdict in _metric_rows(report, "pass", "**fail**"):
        lines.append(f"| {name} | {shown} | {verdict} |")
    lines += ["", "| pass | p50 ms | p95 ms |", "|---|---:|---:|"]
    for pass_name, figures in report.latency_ms.items():
        lines.append(f"| {pass_name} | {figures['p50']} | {figures['p95']} |")
    for pass_name, reasons in _fallbacks(report):
        lines += ["", f"Fallbacks ({pass_name}): {reasons}"]
    lines += ["", "| class | n | " + " | ".join(CLASS_METRICS) + " |", "|---|---:|" + "---:|" * len(CLASS_METRICS)]
    for cls, row in report.per_class.items():
        lines.append(f"| {cls} | {row['n']} | " + " | ".join("n/a" if row[m] is None else f"{row[m]:.3f}"
                                                            for m in CLASS_METRICS) + " |")
    lines += ["", "**Gate: passed**" if report.gate["passed"] else "**Gate: failed**: " + "; ".join(report.gate["failures"])]
    if report.problems:
        lines += ["", "Corpus problems:", *[f"- `{p}`" for p in report.problems]]
    return "\n".join(lines) + "\n"


def _command(args: argparse.Namespace) -> int:
    from core.settings import ConfigFileError, load_settings

    try:
        settings = load_settings(args.config)
    except (ConfigFileError, ValueError) as exc:
        print(f"travel-slm eval: {exc}", file=sys.stderr)
        return 2
    missing = [c for c in args.corpus if not Path(c).is_file()]
    if missing:
        print(f"travel-slm eval: corpus file not found: {', '.join(missing)}", file=sys.stderr)
        return 2
    progress = not args.json and sys.stderr.isatty()
    try:
        report = asyncio.run(run_eval(args.engine, args.corpus, split=args.split, limit=args.limit,
                                      settings=settings, progress=progress,
                                      view="served" if args.served else "own"))
    except Exception as exc:  # engine failed to start: one clear line, no traceback
        print(f"travel-slm eval: engine {args.engine!r} could not run: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    for problem in report.problems:
        print(f"travel-slm eval: skipped {problem}", file=sys.stderr)
    if args.markdown:
        Path(args.markdown).write_text(format_markdown(report), encoding="utf-8")
    if args.json:
        print(json.dumps(report.as_json()))
    else:
        print(format_table(report))
        if args.per_class:
            print()
            print(format_per_class(report))
    return 0 if report.gate["passed"] else 1


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "eval",
        help="score an engine over labelled turns (metrics and gate of docs/evaluation.md)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Exit status: 0 gate passed, 1 gate failed, 2 usage error or engine failure. "
               "Bad corpus lines are reported on stderr with file:line and skipped.",
    )
    p.add_argument("--engine", required=True, choices=ENGINES, help="engine to evaluate")
    p.add_argument("--corpus", required=True, nargs="+", metavar="FILE", help="labelled .jsonl corpus files")
    p.add_argument("--split", help="only records whose 'split' equals this value")
    p.add_argument("--limit", type=positive_int, metavar="N", help="only the first N records (after --split)")
    p.add_argument("--config", metavar="FILE", help="settings file (.toml, .json, .yaml) for the engines")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table; no progress bar")
    p.add_argument("--markdown", metavar="FILE", help="also write a Markdown report to FILE")
    p.add_argument("--served", action="store_true",
                   help="score what the server would SERVE (fallback substitutes included) instead of the "
                        "engine's own answers; every output is labelled 'served'")
    p.add_argument("--per-class", action="store_true", help="also print the per-class table (JSON always has it)")
    p.set_defaults(func=_command)
