"""Dataset builder, synthetic generator, fine-tuning and packaging; the whole path on a tiny model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.reference import CORPORA, load_records, require_reference
from training.dataset import LeakError, build, check_leaks, normalise
from training.synth import expected_classes, generate, turn_class

ROOT = Path(__file__).resolve().parents[1]


def test_generator_covers_and_balances_every_class():
    records, counts = generate(660, seed=3)
    assert set(counts) >= expected_classes()
    quota = 660 // len(expected_classes())
    assert min(counts[c] for c in expected_classes()) >= quota // 2
    for record in records[:50]:  # labels are the oracle's, so the class comes from the label
        assert turn_class(record["expected"]["extract"]) in counts


def _mini_corpus(tmp_path: Path) -> Path:
    """Reference records (read from ../shared) with a planted eval text also in a train record."""
    require_reference()
    rows = load_records(CORPORA / "travel_v4_corpus.labeled.jsonl")
    train = [r for r in rows if r["split"] == "train"][:40]
    evals = [r for r in rows if r["split"] == "eval"][:6]
    planted = json.loads(json.dumps(train[0]))
    planted["input"]["event_payload"] = {"text": "Planted: an EVAL text!"}
    eval_copy = json.loads(json.dumps(evals[0]))
    eval_copy["input"]["event_payload"] = {"text": "planted an eval text"}
    path = tmp_path / "mini.labeled.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in [*train, planted, *evals, eval_copy]))
    return path


def test_build_leaves_eval_texts_out_and_the_leak_check_fails_on_a_planted_one(tmp_path):
    corpus = _mini_corpus(tmp_path)
    manifest = build(tmp_path / "ds", [corpus], seed=1, synthetic=60)
    assert manifest["reference_dropped_as_eval_text"] == 1  # the planted train record
    lines = (tmp_path / "ds" / "train.jsonl").read_text().splitlines()
    assert all(normalise(json.loads(x)["input"]["event_payload"].get("text", "")) != "planted an eval text"
               for x in lines)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(lines[0] + "\n" + json.dumps({"input": {"event_payload": {"text": "PLANTED an eval text."}}}) + "\n")
    with pytest.raises(LeakError, match=r"bad\.jsonl:2"):
        check_leaks([bad], {"planted an eval text"})


def test_build_is_reproducible_and_its_manifest_hashes_the_files(tmp_path):
    corpus = _mini_corpus(tmp_path)
    one = build(tmp_path / "a", [corpus], seed=5, synthetic=80)
    two = build(tmp_path / "b", [corpus], seed=5, synthetic=80)
    assert one["files"] == two["files"]
    import hashlib

    for name in ("train", "val"):
        entry = one["files"][name]
        assert hashlib.sha256((tmp_path / "a" / entry["path"]).read_bytes()).hexdigest() == entry["sha256"]
    assert one["generator_version"] and one["contract_version"] and one["seed"] == 5
    assert set(one["classes"]["train"]) <= expected_classes()



@pytest.mark.parametrize(("lines", "expected"), [
    (['{"input": {}, "expected": {}}', "{oops", "[1]"], r"bad\.jsonl:2: not valid JSON"),
    (['{"input": {}, "expected": {}}', '{"input": {}}', "{oops"],
     r"bad\.jsonl:2: not a labelled record \(needs input and expected\)"),
])
def test_build_refuses_the_first_bad_corpus_line_by_file_and_line(tmp_path, lines, expected):
    """The corpora are read by the evaluation's reader (evaluation.corpus.json_lines); the builder stops at
    the first bad line, in file order, whatever kind it is, and writes nothing."""
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=expected):
        build(tmp_path / "ds", [bad], seed=1, synthetic=10)
    assert not (tmp_path / "ds").exists()

@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    """A 2-layer random-weight Llama with the bundled tokenizer, saved as a model folder."""
    from tests.conftest_slm import require_bundled

    require_bundled()
    from tests.conftest_slm import tiny_model

    model, tokenizer = tiny_model(structure_bias=0.0)
    folder = tmp_path_factory.mktemp("tiny") / "tiny-llama"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "server.cli", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=900)


def test_pipeline_on_a_tiny_model_build_finetune_package_serve_eval(tmp_path, tiny_base, live_server):
    pytest.importorskip("peft")
    corpus = _mini_corpus(tmp_path)
    data, out, pkg = tmp_path / "ds", tmp_path / "ft", tmp_path / "pkg"
    proc = _cli("dataset", "build", "--out", str(data), "--corpus", str(corpus), "--synthetic", "60", "--json")
    assert proc.returncode == 0, proc.stderr
    proc = _cli("finetune", "--data", str(data), "--out", str(out), "--base", str(tiny_base), "--max-steps", "4",
                "--batch-size", "4", "--val-turns", "2", "--evals", "1", "--json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["best"]["step"] == 4 and summary["tokens"] > 0
    report = json.loads((out / "train_report.json").read_text())
    assert len(report["losses"]) == 4 and report["hyperparameters"]["loss"] == "completion only"
    proc = _cli("package", "--model", str(out), "--data", str(data), "--out", str(pkg), "--corpus", str(corpus),
                "--val-limit", "2", "--json")
    assert proc.returncode in (0, 1), proc.stderr  # 1: packaged, but a random model fails the gate
    for name in ("adapter_model.safetensors", "adapter_config.json", "tokenizer.json", "travel_slm_model.json",
                 "MODEL_CARD.md", "eval_report.json", "lineage.json"):
        assert (pkg / name).is_file(), name
    lineage = json.loads((pkg / "lineage.json").read_text())
    assert lineage["dataset"]["manifest_sha256"] == report["dataset"]["manifest_sha256"]
    evals = json.loads((pkg / "eval_report.json").read_text())
    assert evals["eval"]["view"] == "own" and evals["eval"]["n"] == 7
    assert "| eval | 7 |" in (pkg / "MODEL_CARD.md").read_text()

    url = live_server({"extraction_engine": "slm", "render_engine": "slm"},
                      env={"TRAVEL_SLM_SLM__MODEL": str(pkg), "TRAVEL_SLM_SLM__ADAPTER": "transformers",
                           "TRAVEL_SLM_SLM__TIMEOUT_MS_EXTRACT": "120000",
                           "TRAVEL_SLM_SLM__TIMEOUT_MS_RENDER": "120000"})
    for _ in range(600):
        if httpx.get(url + "/readyz", timeout=10).status_code == 200:
            break
        import time

        time.sleep(0.5)
    turn = {"event_type": "user_message", "event_payload": {"text": "hotels in Paris"}, "slot_state": {}}
    body = httpx.post(url + "/extract", json={"turn": turn}, timeout=300).json()
    assert body["llm_contract"]["engine"] == "slm"
    assert body["llm_contract"]["model"] == "pkg"
    assert body["schema_valid"] is True
