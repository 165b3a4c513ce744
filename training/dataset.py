"""``travel-slm dataset build``: train and validation sets from the reference corpora and synthetic turns.

Sources:

- the reference corpora's training records: split ``train``, ``both`` and unsplit files (never
  ``eval``, never ``roadmap``);
- the oracle-labelled synthetic generator (:mod:`training.synth`), balanced over every class.

No text of an ``eval`` record may reach the training files. Candidates whose normalised text
(lower case, punctuation and repeated spaces removed) equals an eval text are left out and
counted; then :func:`check_leaks` re-reads the written files and FAILS the build if any eval text
is in them. The validation set is a seeded share of both sources. ``manifest.json`` records the
sha256 of every file, the seed, the generator and contract versions, and the per-class counts.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from contracts.planner import payload_text
from contracts.vocab import CONTRACT_VERSION
from evaluation.corpus import CorpusProblem, json_lines
from training.progress import bar
from training.synth import GENERATOR_VERSION, generate, turn_class

DEFAULT_CORPORA = "../shared/reference/corpora"
"""Relative to the repository root (the checkout beside ``shared/``), else to the working folder."""
TRAIN_SPLITS = ("train", "both", None)
EVAL_SPLIT = "eval"
DATASET_FORMAT = 1
_PUNCT = re.compile(r"[^\w\s]")
_SPACES = re.compile(r"\s+")


class LeakError(RuntimeError):
    """An eval-split text is in a training file."""


def normalise(text: str) -> str:
    return _SPACES.sub(" ", _PUNCT.sub(" ", text.lower())).strip()


def turn_text(turn: dict[str, Any]) -> str:
    """The turn's text as the oracle reads it."""
    payload = turn.get("event_payload")
    return payload_text(payload) if isinstance(payload, dict) else ""


def _refuse(problem: CorpusProblem) -> None:
    raise ValueError(str(problem))


def _read(paths: list[Path]) -> list[dict[str, Any]]:
    """The labelled records of ``paths``; the first bad line (not JSON, not a record) is a ValueError."""
    records = []
    for name, number, record in json_lines(paths, _refuse):
        if not isinstance(record, dict) or "input" not in record or "expected" not in record:
            raise ValueError(f"{name}:{number}: not a labelled record (needs input and expected)")
        record["source_file"] = Path(name).name
        records.append(record)
    return records


def eval_texts(records: list[dict[str, Any]]) -> set[str]:
    return {n for r in records if r.get("split") == EVAL_SPLIT and (n := normalise(turn_text(r["input"])))}


def check_leaks(train_files: list[Path], forbidden: set[str]) -> None:
    """Raise :class:`LeakError` naming the first training line whose text is an eval text."""
    for path in train_files:
        with open(path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                text = normalise(turn_text(json.loads(line)["input"]))
                if text and text in forbidden:
                    raise LeakError(f"{path}:{number}: eval text in the training data: {text!r}")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _write(path: Path, records: list[dict[str, Any]]) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n")


def build(out: Path, corpora: list[Path], *, seed: int = 0, synthetic: int = 5000, val_share: float = 0.06,
          progress: bool = False) -> dict[str, Any]:
    """Write ``train.jsonl``, ``val.jsonl`` and ``manifest.json`` into ``out``; return the manifest."""
    started = time.perf_counter()
    records = _read(corpora)
    forbidden = eval_texts(records)
    rng = random.Random(seed)
    reference, dropped = [], 0
    for record in records:
        if record.get("split") not in TRAIN_SPLITS:
            continue
        if normalise(turn_text(record["input"])) in forbidden:
            dropped += 1
            continue
        reference.append({"id": record.get("id"), "source": "reference:" + record["source_file"],
                          "input": record["input"], "expected": record["expected"]})
    pbar = bar(synthetic, "synthetic turns", enabled=progress, unit="turn")
    synth, synth_counts = generate(synthetic, seed, text_is_excluded=lambda t: normalise(t) in forbidden,
                                   progress=pbar.update)
    pbar.close()
    for record in synth:
        record["source"] = "synthetic:" + GENERATOR_VERSION
    pool = reference + [{k: r[k] for k in ("id", "source", "input", "expected")} for r in synth]
    rng.shuffle(pool)
    n_val = int(len(pool) * val_share)
    val, train = pool[:n_val], pool[n_val:]
    out.mkdir(parents=True, exist_ok=True)
    files = {"train": out / "train.jsonl", "val": out / "val.jsonl"}
    _write(files["train"], train)
    _write(files["val"], val)
    check_leaks([files["train"], files["val"]], forbidden)
    classes = {name: dict(sorted(Counter(turn_class(r["expected"]["extract"]) for r in recs).items()))
               for name, recs in (("train", train), ("val", val))}
    manifest = {
        "format": DATASET_FORMAT,
        "seed": seed,
        "synthetic": synthetic,
        "val_share": val_share,
        "generator_version": GENERATOR_VERSION,
        "contract_version": CONTRACT_VERSION,
        "corpora": {p.name: _sha256(p) for p in corpora},
        "files": {name: {"path": path.name, "sha256": _sha256(path), "records": len(recs)}
                  for (name, path), recs in zip(files.items(), (train, val), strict=True)},
        "reference_records": len(reference),
        "reference_dropped_as_eval_text": dropped,
        "synthetic_classes": dict(sorted(synth_counts.items())),
        "classes": classes,
        "seconds": round(time.perf_counter() - started, 2),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return manifest


def manifest_hash(folder: Path) -> str:
    return _sha256(folder / "manifest.json")


def corpus_files(spec: list[str] | None) -> list[Path]:
    if spec:
        return [Path(p) for p in spec]
    for root in (Path(__file__).resolve().parents[1], Path.cwd()):
        found = sorted((root / DEFAULT_CORPORA).glob("*.labeled.jsonl"))
        if found:
            return found
    return []


def _command(args: argparse.Namespace) -> int:
    corpora = corpus_files(args.corpus)
    missing = [str(p) for p in corpora if not p.is_file()]
    if not corpora or missing:
        print(f"travel-slm dataset build: corpus file(s) not found: {', '.join(missing) or DEFAULT_CORPORA}",
              file=sys.stderr)
        return 2
    try:
        manifest = build(Path(args.out), corpora, seed=args.seed, synthetic=args.synthetic,
                         val_share=args.val_share, progress=not args.json)
    except (LeakError, ValueError) as exc:
        print(f"travel-slm dataset build: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(manifest))
        return 0
    print(f"wrote {args.out}: train {manifest['files']['train']['records']} records, "
          f"val {manifest['files']['val']['records']} ({manifest['reference_records']} reference, "
          f"{manifest['synthetic']} synthetic; {manifest['reference_dropped_as_eval_text']} reference records "
          f"left out because their text is an eval text)")
    print(f"{'class':45} {'train':>6} {'val':>5}")
    for cls in sorted(set(manifest["classes"]["train"]) | set(manifest["classes"]["val"])):
        print(f"{cls:45} {manifest['classes']['train'].get(cls, 0):>6} {manifest['classes']['val'].get(cls, 0):>5}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("dataset", help="build training data (train/val sets) from labelled turns",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="dataset_command", metavar="ACTION", required=True)
    b = sub.add_parser("build", help="write train.jsonl, val.jsonl and manifest.json",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="Exit status: 0 written, 1 leak or bad corpus line, 2 usage error.")
    b.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")
    b.add_argument("--corpus", nargs="+", metavar="FILE",
                   help=f"labelled .jsonl corpora (default: {DEFAULT_CORPORA}/*.labeled.jsonl)")
    b.add_argument("--seed", type=int, default=0, help="seed of the generator and the split (default 0)")
    b.add_argument("--synthetic", type=int, default=5000, metavar="N", help="synthetic turns (default 5000)")
    b.add_argument("--val-share", type=float, default=0.06, help="share of records held out for validation")
    b.add_argument("--json", action="store_true", help="print the manifest as JSON; no progress bar")
    b.set_defaults(func=_command)
