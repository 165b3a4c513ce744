"""What each layer may know (issue 13, item 1): the engine interface knows no fixtures (the fallback layer asks
them), and the adapters read their own options, never the settings (the slm engine maps them)."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any, ClassVar

import pytest

from adapters.options import MlxOptions, TransformersOptions, VllmOptions
from adapters.select import missing_packages
from adapters.transformers import TransformersAdapter
from core.settings import SlmSettings
from engines.base import Engine, PassOutput
from engines.deterministic.engine import DeterministicEngine
from engines.deterministic.fixtures import fixture
from engines.deterministic.render import merged_slot
from engines.fallback import PassRunner
from engines.slm.engine import SlmEngine, adapter_options_for

REPO = Path(__file__).resolve().parent.parent
TURN = {"event_type": "user_message", "event_payload": {"text": "find me a hotel in Lisbon for 2 adults from 3 to 6 June"},
        "slot_state": {}}


def _imported_modules(path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module)
    return out


def test_the_engine_interface_knows_no_fixtures() -> None:
    assert not any(m.startswith("engines.deterministic") for m in _imported_modules(REPO / "engines" / "base.py"))
    assert not hasattr(Engine, "tool_summary")


class _SummaryRecorder(Engine):
    """Answers like the oracle and keeps the tool summary each render got; its own ``tool_summary`` (the old
    engine hook) must not be consulted."""

    name: ClassVar[str] = "slm"
    adapter = "test"
    model = "recorder"

    def __init__(self) -> None:
        self.oracle = DeterministicEngine()
        self.summaries: list[dict[str, Any]] = []

    async def extract(self, turn: dict[str, Any]) -> PassOutput:
        return await self.oracle.extract(turn)

    async def render(self, turn: dict[str, Any], extraction: dict[str, Any], tool_summary: dict[str, Any]
                     ) -> PassOutput:
        self.summaries.append(tool_summary)
        return await self.oracle.render(turn, extraction, tool_summary)

    def tool_summary(self, extraction: dict[str, Any], slot: dict[str, Any]) -> dict[str, Any]:
        raise AssertionError("the fallback layer asked the engine for a fixture")


async def test_a_render_without_a_tool_summary_gets_the_oracle_fixture_on_every_engine() -> None:
    engine = _SummaryRecorder()
    runner = PassRunner({"slm": engine})
    extraction = (await runner.extract(TURN, "slm")).document
    served = await runner.render(TURN, extraction, None, "slm")
    assert not served.fallback_used
    expected = fixture(extraction, merged_slot(TURN, extraction))
    assert expected and engine.summaries == [expected]
    # a given summary wins over the fixture
    given = {"ok": True, "tool": "search_hotels", "data": {"hotels": []}}
    await runner.render(TURN, extraction, given, "slm")
    assert engine.summaries[-1]["tool"] == "search_hotels"


# --- the adapters read their own options, never the settings -------------------------------------------------


def test_no_adapter_reads_the_settings() -> None:
    for path in sorted((REPO / "adapters").glob("*.py")):
        imported = _imported_modules(path)
        assert not any(m.split(".")[0] in {"core", "engines", "server"} for m in imported), (path.name, imported)


def test_the_slm_settings_map_to_each_adapters_options(tmp_path: Path) -> None:
    settings = SlmSettings(model="bundled", device="cpu", cache_dir=tmp_path, jump_forward=False,
                           prefix_cache=False, quantize="int8", dtype="auto", max_batch=3)
    assert adapter_options_for(settings.model_copy(update={"adapter": "transformers"})) == TransformersOptions(
        model="bundled", device="cpu", cache_dir=tmp_path, jump_forward=False, prefix_cache=False, quantize="int8",
        dtype="float32")
    loras = settings.model_copy(update={"lora": "/a", "lora_render": "/b", "quantize": "none"})
    assert adapter_options_for(loras.model_copy(update={"adapter": "vllm"})) == VllmOptions(
        model="bundled", cache_dir=tmp_path, loras=("/a", "/b"), max_batch=3, prefix_cache=False)
    assert adapter_options_for(loras.model_copy(update={"adapter": "mlx"})) == MlxOptions(
        model="bundled", cache_dir=tmp_path, loras=("/a", "/b"), jump_forward=False, prefix_cache=False)
    # overrides replace option fields; a field the adapter does not have is an error, not ignored
    tuned = adapter_options_for(settings.model_copy(update={"adapter": "transformers"}), num_threads=3)
    assert isinstance(tuned, TransformersOptions) and tuned.num_threads == 3 and tuned.quantize == "int8"
    with pytest.raises(TypeError):
        adapter_options_for(settings.model_copy(update={"adapter": "vllm"}), num_threads=3)


def test_bad_transformers_options_are_refused() -> None:
    with pytest.raises(ValueError, match="quantize"):
        TransformersOptions(quantize="int4")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="jump_forward_mode"):
        TransformersOptions(jump_forward_mode="sometimes")  # type: ignore[arg-type]


def test_the_slm_engine_builds_its_adapter_from_the_options() -> None:
    if missing_packages("transformers"):
        pytest.skip(f"needs {missing_packages('transformers')}")
    engine = SlmEngine(SlmSettings(adapter="transformers", model="bundled", jump_forward=False, quantize="int8"),
                       adapter_options={"num_threads": 2})
    adapter = engine._build_adapter(engine._adapter_overrides())
    assert isinstance(adapter, TransformersAdapter)
    assert adapter.options == TransformersOptions(model=engine.settings.model, jump_forward=False, quantize="int8",
                                                  num_threads=2)
    assert (adapter.jump_forward, adapter.quantize, adapter.options.num_threads) == (False, "int8", 2)


def test_vllm_and_mlx_take_their_loras_from_the_options(tmp_path: Path) -> None:
    from adapters.mlx import MlxAdapter
    from adapters.models import ResolvedModel
    from adapters.vllm import VllmAdapter

    a, b = tmp_path / "a", tmp_path / "b"
    model = ResolvedModel(name="m", path=tmp_path, source="folder")
    for cls, options in ((VllmAdapter, VllmOptions(loras=(str(a), str(b), str(a)), max_batch=2)),
                         (MlxAdapter, MlxOptions(loras=(str(a), str(b), str(a)), jump_forward=False))):
        adapter = cls(model, options)
        assert adapter._configured_loras() == [str(a.resolve()), str(b.resolve())]
        assert adapter.options is options
    assert MlxAdapter(model, MlxOptions(jump_forward=False)).jump_forward is False
