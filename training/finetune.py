"""``travel-slm finetune``: train a LoRA (or the full model) on a built dataset.

A plain PyTorch loop over transformers and PEFT:

- the prompts come from the serving code (:mod:`training.examples`), and the loss is on the
  completion only;
- batches are grouped by length (little padding), in a seeded order;
- bf16 autocast on CPU (oneDNN bf16 kernels, about 3x float32 here) and on CUDA; float32 master
  weights for the trained parameters;
- a checkpoint is scored by grammar-constrained exact match on validation turns (the model's
  own constrained answer, realised into the contract document, equal to the label), not by loss,
  and the best one is kept in ``OUT/adapter``;
- ``--resume`` continues from ``OUT/checkpoint`` (saved every ``--save-every`` steps);
  ``OUT/progress.json`` holds the step, recent losses and tokens/s while it runs.

``OUT/train_report.json`` records the hyperparameters, the dataset manifest's hash, the loss
curve, the validation scores, tokens per second and the wall time, which the command also prints.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from training.examples import Example, build_examples, length_grouped_batches, pass_examples
from training.progress import bar

DEFAULTS: dict[str, Any] = {"method": "lora", "epochs": 2.0, "lr": 3e-4, "batch_size": 16, "rank": 16,
                            "alpha": 32, "render_share": 1.0, "val_turns": 60, "seed": 0, "evals": 3,
                            "warmup": 0.03, "save_every": 100}


def _records(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def pick_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("travel-slm finetune: --device cuda but torch sees no CUDA device")
    if name == "mps" and not torch.backends.mps.is_available():
        raise SystemExit("travel-slm finetune: --device mps but torch sees no MPS device")
    return name


def load_base(base: str, device: str, method: str, rank: int, alpha: int, seed: int) -> tuple[Any, Any, str]:
    """The base model (float32 master weights) wrapped for training, its tokenizer and resolved name."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from adapters.models import resolve_model

    resolved = resolve_model(base)
    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(resolved.path, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(resolved.path, dtype=torch.float32, local_files_only=True)
    model.to(device)
    if method == "lora":
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, target_modules="all-linear",
                            task_type="CAUSAL_LM")
        model = get_peft_model(model, config)
    return model, tokenizer, resolved.name


def _collate(batch: list[Example], pad_id: int, device: str) -> tuple[Any, Any, Any]:
    import torch

    width = max(len(e.input_ids) for e in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), -100, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, e in enumerate(batch):
        n = len(e.input_ids)
        ids[row, :n] = torch.tensor(e.input_ids)
        labels[row, :n] = torch.tensor(e.labels)
        mask[row, :n] = 1
    return ids.to(device), labels.to(device), mask.to(device)


def completion_loss(model: Any, ids: Any, labels: Any, mask: Any) -> Any:
    """Next-token cross-entropy on the completion tokens only.

    The output head runs only on the positions that predict a completion token (a sixth of the
    tokens here): the 49k-wide logits of the prompt positions are never computed.
    """
    import torch.nn.functional as F

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    hidden = base.model(input_ids=ids, attention_mask=mask).last_hidden_state
    targets = labels[:, 1:]
    keep = targets != -100
    logits = base.lm_head(hidden[:, :-1][keep])
    return F.cross_entropy(logits.float(), targets[keep])


def constrained_exact(model: Any, tokenizer: Any, records: list[dict[str, Any]]) -> dict[str, float]:
    """Grammar-constrained exact match of the model's own answers on ``records`` (both passes).

    extract: the decoded plan, realised into the contract document, equals the labelled extraction;
    render: the decoded render plan equals the labelled plan.
    """
    from adapters.base import GenerationRequest
    from adapters.options import TransformersOptions
    from adapters.transformers import TransformersAdapter
    from contracts.turn import Turn
    from engines.slm import grammars
    from engines.slm.extract_plan import realise
    from training.examples import render_plan_of

    model.eval()
    merged = hasattr(model, "merge_adapter")
    if merged:  # decode on merged weights (as served); unmerged afterwards to go on training
        model.merge_adapter()
    adapter = TransformersAdapter(TransformersOptions(prefix_cache=False, num_threads=os.cpu_count()),
                                  preloaded=(model, tokenizer))

    async def run() -> dict[str, float]:
        await adapter.load()
        await adapter.prepare(grammars.schema_texts("plan", "plan"))
        hits = {"extract": 0, "render": 0}
        for record in records:
            turn = Turn.model_validate(record["input"]).engine_input()
            per_pass = pass_examples(record)
            gen = await adapter.generate(GenerationRequest(per_pass["extract"][0], grammars.EXTRACT_PLAN, 64))
            try:
                plan = json.loads(gen.text)
                hits["extract"] += realise(turn, plan) == record["expected"]["extract"]
            except (ValueError, TypeError, AttributeError, KeyError):
                pass
            gen = await adapter.generate(GenerationRequest(per_pass["render"][0], grammars.RENDER_PLAN, 96))
            with contextlib.suppress(ValueError):
                hits["render"] += json.loads(gen.text) == render_plan_of(record["expected"]["render"])
        await adapter.close()
        n = max(1, len(records))
        return {"extract_exact": hits["extract"] / n, "render_exact": hits["render"] / n}

    try:
        return asyncio.run(run())
    finally:
        if merged:
            model.unmerge_adapter()
        model.train()


def _save_adapter(model: Any, folder: Path) -> None:
    if folder.exists():
        shutil.rmtree(folder)
    model.save_pretrained(str(folder))


def train(data: Path, out: Path, *, base: str = "bundled", method: str = DEFAULTS["method"],
          epochs: float = DEFAULTS["epochs"], lr: float = DEFAULTS["lr"], batch_size: int = DEFAULTS["batch_size"],
          rank: int = DEFAULTS["rank"], alpha: int = DEFAULTS["alpha"], render_share: float = DEFAULTS["render_share"],
          val_turns: int = DEFAULTS["val_turns"], seed: int = DEFAULTS["seed"], evals: int = DEFAULTS["evals"],
          warmup: float = DEFAULTS["warmup"], device: str = "auto", resume: bool = False,
          save_every: int = DEFAULTS["save_every"], max_steps: int | None = None, threads: int | None = None,
          progress: bool = True) -> dict[str, Any]:
    import torch

    started = time.perf_counter()
    device = pick_device(device)
    if device == "cpu":
        torch.set_num_threads(threads or os.cpu_count() or 1)
    random.seed(seed)
    manifest_path = data / "manifest.json"
    if not manifest_path.is_file():
        raise SystemExit(f"travel-slm finetune: {data} has no manifest.json (run 'travel-slm dataset build')")
    from training.dataset import manifest_hash

    model, tokenizer, base_name = load_base(base, device, method, rank, alpha, seed)
    train_records = _records(data / "train.jsonl")
    val_records = _records(data / "val.jsonl")
    val_sample = random.Random(seed).sample(val_records, min(val_turns, len(val_records)))
    examples = build_examples(tokenizer, train_records, render_share=render_share, seed=seed)
    steps_per_epoch = math.ceil(len(examples) / batch_size)
    total_steps = max(1, math.ceil(steps_per_epoch * epochs))
    if max_steps is not None:
        total_steps = min(total_steps, max_steps)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    warm = max(1, int(total_steps * warmup))

    def lr_at(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return max(0.0, 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total_steps - warm))))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)
    eval_at = sorted({total_steps} | {round(total_steps * (i + 1) / max(1, evals)) for i in range(max(1, evals))})
    out.mkdir(parents=True, exist_ok=True)
    state: dict[str, Any] = {"step": 0, "losses": [], "evals": [], "best": None, "tokens": 0, "train_seconds": 0.0}
    ckpt = out / "checkpoint"
    if resume and (ckpt / "state.json").is_file():
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        state = json.loads((ckpt / "state.json").read_text())
        set_peft_model_state_dict(model, load_file(str(ckpt / "adapter" / "adapter_model.safetensors")))
        optimizer.load_state_dict(torch.load(ckpt / "optimizer.pt", weights_only=True))
        scheduler.load_state_dict(torch.load(ckpt / "scheduler.pt", weights_only=True))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    autocast_device = "cuda" if device == "cuda" else "cpu"
    use_autocast = device in ("cpu", "cuda")
    pbar = bar(total_steps, f"finetune {method}", enabled=progress, unit="step")
    pbar.update(state["step"])
    model.train()
    order: list[list[int]] = []
    epoch = -1
    t_train = time.perf_counter() - state["train_seconds"]
    while state["step"] < total_steps:
        step = state["step"]
        this_epoch = step // steps_per_epoch
        if this_epoch != epoch:
            epoch = this_epoch
            order = length_grouped_batches(examples, batch_size, seed + epoch)
        batch = [examples[i] for i in order[step % steps_per_epoch]]
        ids, labels, mask = _collate(batch, pad, device)
        with torch.autocast(autocast_device, dtype=torch.bfloat16, enabled=use_autocast):
            loss = completion_loss(model, ids, labels, mask)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        state["step"] = step + 1
        state["tokens"] += int(mask.sum())
        state["losses"].append(round(float(loss.detach()), 4))
        state["train_seconds"] = time.perf_counter() - t_train
        pbar.update(1)
        pbar.set_postfix(loss=f"{state['losses'][-1]:.3f}", tok_s=f"{state['tokens'] / max(state['train_seconds'], 1e-9):.0f}")
        if state["step"] in eval_at:
            scores = constrained_exact(model, tokenizer, val_sample)
            score = (scores["extract_exact"] + scores["render_exact"]) / 2
            state["evals"].append({"step": state["step"], **scores, "score": score})
            if state["best"] is None or score > state["best"]["score"]:
                state["best"] = {"step": state["step"], **scores, "score": score}
                _save_adapter(model, out / "adapter")
            if not progress or not sys.stderr.isatty():
                print(json.dumps({"event": "validation", "step": state["step"], **scores}), file=sys.stderr)
            t_train = time.perf_counter() - state["train_seconds"]  # validation time is not training time
        if state["step"] % 10 == 0 or state["step"] == total_steps:  # for a look from another terminal
            (out / "progress.json").write_text(json.dumps({
                "step": state["step"], "steps": total_steps, "loss_last_10": state["losses"][-10:],
                "tokens_per_second": round(state["tokens"] / max(state["train_seconds"], 1e-9), 1),
                "train_seconds": round(state["train_seconds"], 1), "evals": state["evals"]}))
        if save_every and state["step"] % save_every == 0 and state["step"] < total_steps:
            _save_adapter(model, ckpt / "adapter")
            torch.save(optimizer.state_dict(), ckpt / "optimizer.pt")
            torch.save(scheduler.state_dict(), ckpt / "scheduler.pt")
            (ckpt / "state.json").write_text(json.dumps(state))
    pbar.close()
    tokenizer.save_pretrained(str(out / "adapter"))
    report = {
        "base": base, "base_name": base_name, "method": method, "device": device, "torch": torch.__version__,
        "threads": torch.get_num_threads() if device == "cpu" else None,
        "hyperparameters": {"epochs": epochs, "lr": lr, "batch_size": batch_size, "rank": rank, "alpha": alpha,
                            "render_share": render_share, "warmup": warmup, "seed": seed, "steps": total_steps,
                            "autocast": "bfloat16" if use_autocast else None, "loss": "completion only",
                            "batches": "length-grouped", "selection": "constrained exact match on validation"},
        "dataset": {"folder": str(data), "manifest_sha256": manifest_hash(data),
                    "train_records": len(train_records), "examples": len(examples), "val_sample": len(val_sample)},
        "loss_first": state["losses"][:1], "loss_last_50_mean": round(sum(state["losses"][-50:]) / max(1, len(state["losses"][-50:])), 4),
        "losses": state["losses"],
        "evals": state["evals"], "best": state["best"],
        "tokens": state["tokens"], "train_seconds": round(state["train_seconds"], 1),
        "tokens_per_second": round(state["tokens"] / max(state["train_seconds"], 1e-9), 1),
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    (out / "train_report.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    if ckpt.exists():
        shutil.rmtree(ckpt)
    return report


def _command(args: argparse.Namespace) -> int:
    if args.method == "full":
        print("travel-slm finetune: --method full trains every weight; the shipped form is a LoRA "
              "(under 25 MB). Full fine-tuning writes a merged model folder.", file=sys.stderr)
    report = train(Path(args.data), Path(args.out), base=args.base, method=args.method, epochs=args.epochs,
                   lr=args.lr, batch_size=args.batch_size, rank=args.rank, alpha=args.alpha,
                   render_share=args.render_share, val_turns=args.val_turns, seed=args.seed, evals=args.evals,
                   device=args.device, resume=args.resume, save_every=args.save_every, max_steps=args.max_steps,
                   threads=args.threads, progress=not args.json)
    if args.method == "full":
        shutil.copytree(Path(args.out) / "adapter", Path(args.out) / "model", dirs_exist_ok=True)
    summary = {k: report[k] for k in ("device", "tokens", "tokens_per_second", "train_seconds", "wall_seconds",
                                      "best")}
    if args.json:
        print(json.dumps(summary))
    else:
        best = report["best"] or {}
        print(f"trained {report['hyperparameters']['steps']} steps on {report['device']} in "
              f"{report['wall_seconds']:.0f} s wall ({report['train_seconds']:.0f} s training, "
              f"{report['tokens_per_second']:.0f} tokens/s); best checkpoint step {best.get('step')}: "
              f"extract exact {best.get('extract_exact', 0):.3f}, render exact {best.get('render_exact', 0):.3f} "
              f"on {report['dataset']['val_sample']} validation turns; adapter in {Path(args.out) / 'adapter'}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("finetune", help="fine-tune the base model on a built dataset (LoRA by default)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, metavar="DIR", help="a folder written by 'travel-slm dataset build'")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (adapter/, train_report.json)")
    p.add_argument("--base", default="bundled", help="base model spec, as slm.model (default: bundled)")
    p.add_argument("--method", choices=("lora", "full"), default=DEFAULTS["method"])
    p.add_argument("--epochs", type=float, default=DEFAULTS["epochs"], help="passes over the data (fractions allowed)")
    p.add_argument("--lr", type=float, default=DEFAULTS["lr"], help="peak learning rate (cosine decay)")
    p.add_argument("--batch-size", type=int, default=DEFAULTS["batch_size"])
    p.add_argument("--rank", type=int, default=DEFAULTS["rank"], help="LoRA rank (all linear layers)")
    p.add_argument("--alpha", type=int, default=DEFAULTS["alpha"], help="LoRA alpha")
    p.add_argument("--render-share", type=float, default=DEFAULTS["render_share"],
                   help="share of records that also give a render example")
    p.add_argument("--val-turns", type=int, default=DEFAULTS["val_turns"],
                   help="validation turns decoded under the grammar at each checkpoint")
    p.add_argument("--evals", type=int, default=DEFAULTS["evals"], help="checkpoints scored on validation")
    p.add_argument("--seed", type=int, default=DEFAULTS["seed"])
    p.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default="auto")
    p.add_argument("--threads", type=int, help="CPU threads (default: all cores)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint")
    p.add_argument("--save-every", type=int, default=DEFAULTS["save_every"], help="checkpoint every N steps")
    p.add_argument("--max-steps", type=int, help="stop after N steps (tests, smoke runs)")
    p.add_argument("--json", action="store_true", help="print one JSON summary; no progress bar")
    p.set_defaults(func=_command)
