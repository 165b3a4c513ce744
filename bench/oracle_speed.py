"""Microseconds per turn of the deterministic engine (both passes, in process) over the corpora.

Baseline in the same run: a bare pass over the same turns that only copies the input dict, so the
printed ratio says what the rules cost above touching the data at all.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from core.stats import percentile
from engines.deterministic import extract, fixture, render
from engines.deterministic.render import merged_slot

DEFAULT_CORPORA = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "corpora"


def load_turns(paths: list[Path]) -> list[dict]:
    turns = []
    for path in paths:
        with open(path, encoding="utf-8") as handle:
            turns.extend(json.loads(line)["input"] for line in handle if line.strip())
    return turns


def time_per_turn(turns: list[dict], repeats: int, fn, progress: bool) -> list[float]:
    samples: list[float] = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=repeats * len(turns), unit="turn", file=sys.stderr, desc=fn.__name__)
    clock = time.perf_counter_ns
    for _ in range(repeats):
        for turn in turns:
            start = clock()
            fn(turn)
            samples.append((clock() - start) / 1000.0)
        if bar is not None:
            bar.update(len(turns))
    if bar is not None:
        bar.close()
    return samples


def both_passes(turn: dict) -> None:
    ex = extract(turn)
    render(turn, ex, fixture(ex, merged_slot(turn, ex)))


def copy_only(turn: dict) -> None:
    dict(turn)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.oracle_speed", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", nargs="+", type=Path, help="labelled .jsonl files (default: ../shared corpora)")
    parser.add_argument("--repeats", type=int, default=5, help="passes over the corpus (default 5)")
    parser.add_argument("--json", action="store_true", help="print one JSON object; no progress bar")
    args = parser.parse_args(argv)
    paths = args.corpus or sorted(DEFAULT_CORPORA.glob("*.labeled.jsonl"))
    if not paths:
        parser.error(f"no corpus given and none found in {DEFAULT_CORPORA}")
    turns = load_turns(paths)
    progress = not args.json and sys.stderr.isatty()
    time_per_turn(turns, 1, both_passes, False)  # warm-up
    oracle = time_per_turn(turns, args.repeats, both_passes, progress)
    baseline = time_per_turn(turns, args.repeats, copy_only, progress)
    figures = {
        "turns": len(turns), "repeats": args.repeats,
        "oracle_us": {"p50": percentile(oracle, 50), "p95": percentile(oracle, 95), "mean": sum(oracle) / len(oracle)},
        "baseline_copy_us": {"p50": percentile(baseline, 50), "p95": percentile(baseline, 95)},
        "turns_per_second": 1e6 / (sum(oracle) / len(oracle)),
        "target_p50_us": 50.0,
    }
    figures["ratio_p50_vs_baseline"] = figures["oracle_us"]["p50"] / max(figures["baseline_copy_us"]["p50"], 1e-9)
    figures["target_met"] = figures["oracle_us"]["p50"] < 50.0
    if args.json:
        print(json.dumps(figures))
        return 0
    o, b = figures["oracle_us"], figures["baseline_copy_us"]
    print(f"deterministic engine, both passes, {len(turns)} turns x {args.repeats}")
    print(f"{'':24}{'p50 us':>10}{'p95 us':>10}")
    print(f"{'extract+fixture+render':24}{o['p50']:>10.2f}{o['p95']:>10.2f}")
    print(f"{'baseline (dict copy)':24}{b['p50']:>10.2f}{b['p95']:>10.2f}")
    print(f"ratio p50 oracle/baseline {figures['ratio_p50_vs_baseline']:.1f}x; "
          f"{figures['turns_per_second']:.0f} turns/s; target p50 < 50 us: "
          f"{'met' if figures['target_met'] else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
