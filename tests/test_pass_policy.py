"""One way to build a pass runner from the settings (issue 13, item 4): ``PassRunner.from_settings`` with the
fallback policy named at each call site (``serve``, ``shadow``, ``measure``)."""

from __future__ import annotations

import ast
import asyncio
import time
from pathlib import Path
from typing import Any, ClassVar

import pytest

from core.settings import Settings
from engines.base import Engine, EngineError, PassOutput
from engines.fallback import PASS_POLICIES, PassRunner, pass_timeouts_ms

REPO = Path(__file__).resolve().parent.parent
TURN = {"event_type": "user_message", "event_payload": {"text": "flights to Paris"}, "slot_state": {}}


class _Failing(Engine):
    name: ClassVar[str] = "slm"
    adapter = "test"
    model = "failing"

    def __init__(self) -> None:
        self.calls = 0

    async def extract(self, turn: dict[str, Any]) -> PassOutput:
        self.calls += 1
        raise EngineError("invalid_json", "half a JSON object")

    async def render(self, turn: dict[str, Any], extraction: dict[str, Any], tool_summary: dict[str, Any]
                     ) -> PassOutput:
        self.calls += 1
        raise EngineError("invalid_json", "half a JSON object")


class _Sleepy(_Failing):
    async def extract(self, turn: dict[str, Any]) -> PassOutput:
        self.calls += 1
        await asyncio.sleep(3600)
        raise AssertionError("not reached")


def _settings() -> Settings:
    return Settings(slm={"timeout_ms_extract": 123, "timeout_ms_render": 456},
                    openai={"timeout_ms_extract": 7000, "timeout_ms_render": 8000},
                    fallback={"failure_threshold": 2, "cooldown_s": 60.0})


def test_the_policies_differ_in_pass_timeouts_and_breakers() -> None:
    settings = _settings()
    expected = {("slm", "extract"): 123.0, ("slm", "render"): 456.0,
                ("openai", "extract"): 7000.0, ("openai", "render"): 8000.0}
    assert pass_timeouts_ms(settings) == expected
    serve = PassRunner.from_settings(settings, {"slm": _Failing()}, policy="serve")
    assert serve.timeouts_ms == expected
    assert set(serve.breakers) == {("slm", "extract"), ("slm", "render")}
    assert {(b.threshold, b.cooldown_s) for b in serve.breakers.values()} == {(2, 60.0)}
    shadow = PassRunner.from_settings(settings, {"slm": _Failing()}, policy="shadow")
    assert shadow.timeouts_ms == {} and set(shadow.breakers) == set(serve.breakers)
    # the shadow runner's deadline is the engine's budget (counts toward the breaker); a caller's is not
    assert shadow.deadline_is_engine_budget and not serve.deadline_is_engine_budget
    measure = PassRunner.from_settings(settings, {"slm": _Failing()}, policy="measure")
    assert measure.timeouts_ms == expected and measure.breakers == {}
    own = PassRunner.from_settings(settings, {"slm": _Failing()}, policy="measure", timeouts_ms={})
    assert own.timeouts_ms == {}


@pytest.mark.parametrize(("policy", "calls", "reasons"), [
    ("serve", 2, ["invalid_json", "invalid_json", "circuit_open", "circuit_open", "circuit_open"]),
    ("shadow", 2, ["invalid_json", "invalid_json", "circuit_open", "circuit_open", "circuit_open"]),
    ("measure", 5, ["invalid_json"] * 5),
])
async def test_a_failing_engine_is_skipped_except_when_measuring(policy: str, calls: int, reasons: list[str]) -> None:
    engine = _Failing()
    runner = PassRunner.from_settings(_settings(), {"slm": engine}, policy=policy)  # type: ignore[arg-type]
    served = [await runner.extract(TURN, "slm") for _ in range(5)]
    assert [s.fallback_reason for s in served] == reasons
    assert all(s.fallback_used for s in served) and engine.calls == calls


async def test_serve_bounds_a_pass_by_the_settings_timeout_and_shadow_leaves_it_to_the_caller() -> None:
    settings = Settings(slm={"timeout_ms_extract": 1})
    served = await PassRunner.from_settings(settings, {"slm": _Sleepy()}, policy="serve").extract(TURN, "slm")
    assert served.fallback_reason == "timeout" and "exceeded 1 ms" in (served.error or "")
    shadow = PassRunner.from_settings(settings, {"slm": _Sleepy()}, policy="shadow")
    served = await shadow.extract(TURN, "slm", deadline=time.monotonic())  # a deadline already reached
    assert served.fallback_reason == "timeout" and "deadline" in (served.error or "")


def test_a_policy_is_named_and_known() -> None:
    assert PASS_POLICIES == ("serve", "shadow", "measure")
    with pytest.raises(ValueError, match="unknown pass policy"):
        PassRunner.from_settings(Settings(), {}, policy="lenient")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="shadow policy"):
        PassRunner.from_settings(Settings(), {}, policy="shadow", timeouts_ms={("slm", "extract"): 5.0})
    with pytest.raises(TypeError):
        PassRunner.from_settings(Settings(), {})  # type: ignore[call-arg]


def test_the_package_builds_runners_from_the_settings_with_an_explicit_policy() -> None:
    """server/, evaluation/ and training/ build every runner with from_settings and name its policy."""
    calls = []
    for folder in ("server", "evaluation", "training"):
        for path in sorted((REPO / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if not isinstance(node, ast.Call):
                    continue
                func = node.func
                if isinstance(func, ast.Name) and func.id == "PassRunner":
                    raise AssertionError(f"{path.relative_to(REPO)}:{node.lineno} builds a PassRunner by hand")
                if isinstance(func, ast.Attribute) and func.attr == "from_settings":
                    policy = next((k.value for k in node.keywords if k.arg == "policy"), None)
                    assert isinstance(policy, ast.Constant) and policy.value in PASS_POLICIES, (path, node.lineno)
                    calls.append((path.relative_to(REPO).as_posix(), policy.value))
    assert sorted(calls) == [("evaluation/evaluate.py", "serve"), ("server/app.py", "serve"),
                             ("server/predict_command.py", "serve")]
