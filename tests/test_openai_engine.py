"""The ``openai`` engine against real HTTP upstreams: a second instance of this server, and small
scripted servers that misbehave. Every failure must serve the deterministic output with the right
``fallback_reason``; the circuit breaker must open and close."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest

from contracts.extract import SlotUpdates
from contracts.openai_api import ChatCompletion, ChatCompletionRequest, ChatMessage, ErrorBody, ErrorResponse
from contracts.render import TypedRenderOutput
from contracts.strict import OPENAI_FORMATS, destrict, resolve, schema_nodes, strict_schema, typed_schema
from contracts.vocab import EVENT_TYPES, MISSING_VALUES, PASSES, TOOLS
from contracts.widgets import TYPED_ENVELOPES
from engines.deterministic.extract import extract as oracle_extract
from engines.openai_engine import SYSTEM_PROMPTS
from engines.slm import grammars
from tests.conftest import completion

TURN = {"event_type": "user_message", "event_payload": {"text": "hotels in Paris for 2 adults"},
        "slot_state": {"check_in_date": "2026-05-01", "check_out_date": "2026-05-04"}}


def _openai_settings(base_url: str, **extra: Any) -> dict[str, Any]:
    return {"extraction_engine": "openai", "render_engine": "openai",
            "openai": {"base_url": base_url, "model_extract": "travel-extract", "model_render": "travel-render",
                       **extra.pop("openai", {})}, **extra}


def _oracle(base: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    return httpx.post(base + path, json=body, headers={"X-Engine": "deterministic"}).json()


def test_second_instance_of_this_server_as_upstream(live_server: Any, reference_records: list) -> None:
    upstream = live_server()
    for mode in ("response_format", "vllm"):
        base = live_server(_openai_settings(upstream + "/v1", openai={"structured_outputs": mode}),
                           env={"OPENAI_API_KEY": "sk-test-upstream-key"})
        ready = httpx.get(base + "/readyz")
        assert ready.status_code == 200, ready.text
        for record in reference_records[::11]:
            turn = record["input"]
            ex = httpx.post(base + "/extract", json={"turn": turn})
            assert ex.status_code == 200
            body = ex.json()
            assert body["llm_contract"]["engine"] == "openai"
            assert body["llm_contract"]["adapter"] == "http"
            assert body["llm_contract"]["fallback_used"] is False, body["llm_contract"]
            assert body["extract"] == record["expected"]["extract"]
            rd = httpx.post(base + "/render", json={"turn": turn, "extraction": body["extract"],
                                                     "tool_summary": record["expected"]["tool_summary"]})
            assert rd.json()["llm_contract"]["fallback_used"] is False, rd.json()["llm_contract"]
            assert rd.json()["render"] == record["expected"]["render"]
        # the OpenAI route of the downstream server, served through the upstream
        request = ChatCompletionRequest(model="travel-extract",
                                        messages=[ChatMessage(role="user", content=json.dumps(TURN))])
        chat = ChatCompletion.model_validate(httpx.post(base + "/v1/chat/completions", json=request.wire()).json())
        assert (chat.system_fingerprint or "").startswith("openai:http:")
        assert chat.usage is not None and chat.usage.prompt_tokens > 0


def test_request_shape_key_and_vllm_field(live_server: Any, scripted_upstream: Any) -> None:
    def answer(body: dict[str, Any]) -> tuple[int, Any, float]:
        turn = json.loads(body["messages"][-1]["content"])
        return 200, completion(json.dumps(oracle_extract(turn))), 0.0

    with scripted_upstream(answer) as up:
        base = live_server(_openai_settings(up.base_url, openai={"structured_outputs": "vllm",
                                                                 "model_extract": "small-extract"}),
                           env={"OPENAI_API_KEY": "sk-live-abcdef123456"})
        r = httpx.post(base + "/extract", json={"turn": TURN})
        assert r.status_code == 200
        assert r.json()["llm_contract"]["fallback_used"] is False
        sent = up.requests[-1]
        # the engine's request is one the OpenAI routes accept: the same protocol model, strictly typed
        request = ChatCompletionRequest.model_validate(sent)
        assert request.model == "small-extract"
        assert [m.role for m in request.messages] == ["system", "user"]
        assert json.loads(request.messages[1].text() or "")["event_payload"] == TURN["event_payload"]
        fmt = request.response_format
        assert fmt is not None and fmt.type == "json_schema" and fmt.json_schema is not None
        assert fmt.json_schema.strict is True and fmt.json_schema.name == "travel_extract"
        assert fmt.json_schema.schema_ == strict_schema("extract")
        assert request.model_extra == {"structured_outputs": {"json": strict_schema("extract")}}
        assert request.temperature == 0 and request.n == 1
        assert "max_tokens" not in sent and "stream" not in sent  # only what was set: the upstream's defaults
        assert up.headers[-1]["authorization"] == "Bearer sk-live-abcdef123456"
        health = httpx.get(base + "/healthz").text
        assert "sk-live-abcdef123456" not in health
        assert json.loads(health)["engines"]["openai"]["ready"] is True


def test_the_extract_prompt_names_the_contract_vocabularies() -> None:
    """The prompt's lists come from the contract: every tool, event type, slot key and missing value, in order."""
    prompt = SYSTEM_PROMPTS["extract"]
    for values in (TOOLS, tuple(SlotUpdates.model_fields), MISSING_VALUES):
        assert ", ".join(values) in prompt, values
    assert f"{', '.join(EVENT_TYPES[:-1])} or {EVENT_TYPES[-1]}" in prompt
    assert "amadeus" not in prompt and set(SYSTEM_PROMPTS) == set(PASSES)


def test_output_cap_is_sent_per_pass_and_a_cut_answer_is_truncated(live_server: Any, scripted_upstream: Any) -> None:
    def answer(body: dict[str, Any]) -> tuple[int, Any, float]:
        # An upstream that honours max_tokens: stops at the cap with finish_reason "length".
        return 200, completion('{"slot_updates": {"region"', finish_reason="length"), 0.0

    with scripted_upstream(answer) as up:
        base = live_server(_openai_settings(up.base_url, openai={"max_tokens_extract": 7, "max_tokens_render": 9}))
        r = httpx.post(base + "/extract", json={"turn": TURN}).json()
        assert up.requests[-1]["max_tokens"] == 7
        assert r["llm_contract"]["fallback_reason"] == "truncated" and r["schema_valid"] is True
        httpx.post(base + "/render", json={"turn": TURN, "extraction": r["extract"]})
        assert up.requests[-1]["max_tokens"] == 9


SCHEMA_INVALID = {"slot_updates": {"nights": "three"}, "tool_requests": [], "render_intent": {"kind": "summary"}}
OUT_OF_VOCAB = {"slot_updates": {}, "tool_requests": [{"tool": "mcp/amadeus.search_hotels", "arguments": {}}],
                "render_intent": {"kind": "show_hotels"}}


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        ((200, completion("{not json at all"), 0.0), "invalid_json"),
        ((200, completion(json.dumps(SCHEMA_INVALID)), 0.0), "schema_invalid"),
        ((200, completion(json.dumps(OUT_OF_VOCAB)), 0.0), "out_of_vocab"),
        ((200, completion('{"slot_updates": {"region": {"label": "Par', finish_reason="length"), 0.0), "truncated"),
        ((500, ErrorResponse(error=ErrorBody(message="upstream exploded", type="server_error")).model_dump(), 0.0),
         "error"),
        ((200, b"<html>not an API</html>", 0.0), "error"),
        ((200, {"id": "x", "object": "chat.completion", "choices": []}, 0.0), "error"),
        ((200, completion(json.dumps(oracle_extract(TURN))), 1.0), "timeout"),
    ],
    ids=["invalid_json", "schema_invalid", "out_of_vocab", "truncated", "http_500", "not_a_completion", "no_choices",
         "timeout"],
)
def test_upstream_failures_fall_back_to_the_oracle(live_server: Any, scripted_upstream: Any,
                                                   reply: tuple[int, Any, float], reason: str) -> None:
    with scripted_upstream(lambda body: reply) as up:
        base = live_server(_openai_settings(up.base_url, openai={"timeout_ms_extract": 200}))
        r = httpx.post(base + "/extract", json={"turn": TURN})
        assert r.status_code == 200
        body = r.json()
        assert body["llm_contract"]["fallback_used"] is True
        assert body["llm_contract"]["fallback_reason"] == reason
        assert body["llm_contract"]["engine"] == "openai"
        assert body["extract"] == _oracle(base, "/extract", {"turn": TURN})["extract"]
        assert body["schema_valid"] is True
        assert len(up.requests) == 1


def test_connection_refused_is_error(live_server: Any) -> None:
    from tests.conftest import free_socket

    sock = free_socket()  # bound, never listening: connections are refused
    port = sock.getsockname()[1]
    try:
        base = live_server(_openai_settings(f"http://127.0.0.1:{port}/v1"))
        body = httpx.post(base + "/render", json={"turn": TURN}).json()
        assert body["llm_contract"]["fallback_reason"] == "error"
        assert body["render"] == _oracle(base, "/render", {"turn": TURN})["render"]
    finally:
        sock.close()


#: what OpenAI-compatible upstreams write beside OpenAI's fields, and what they leave out (hand-written wire JSON)
LENIENT_ANSWERS = {
    "minimal": {"choices": [{"message": {"content": None}}]},
    "vllm": {"id": "cmpl-1", "object": "chat.completion", "created": 1, "model": "m", "prompt_logprobs": None,
             "choices": [{"index": 0, "message": {"role": "assistant", "content": None, "reasoning_content": "hmm",
                                                  "tool_calls": []},
                          "logprobs": None, "finish_reason": "stop", "stop_reason": None}],
             "usage": {"prompt_tokens": 3, "total_tokens": 5, "completion_tokens": 2, "prompt_tokens_details": None}},
    "null_finish_and_usage": {"id": "x", "model": "m", "system_fingerprint": None, "usage": None,
                              "choices": [{"message": {"role": "assistant", "content": None}, "finish_reason": None}]},
}


@pytest.mark.parametrize("shape", sorted(LENIENT_ANSWERS))
def test_an_upstream_answer_is_read_leniently(live_server: Any, scripted_upstream: Any, shape: str) -> None:
    """The protocol model reads answers as OpenAI-compatible servers write them: fields left out (id, created,
    usage, system_fingerprint, finish_reason) or added (vLLM's reasoning_content, stop_reason) are no failure."""
    def answer(body: dict[str, Any]) -> tuple[int, Any, float]:
        document = json.dumps(oracle_extract(json.loads(body["messages"][-1]["content"])))
        raw = json.loads(json.dumps(LENIENT_ANSWERS[shape]))
        raw["choices"][0]["message"]["content"] = document
        return 200, raw, 0.0

    with scripted_upstream(answer) as up:
        base = live_server(_openai_settings(up.base_url))
        body = httpx.post(base + "/extract", json={"turn": TURN}).json()
        assert body["llm_contract"]["fallback_used"] is False, body["llm_contract"]
        assert body["extract"] == _oracle(base, "/extract", {"turn": TURN})["extract"]
        assert len(up.requests) == 1


def test_circuit_breaker_opens_and_closes(live_server: Any, scripted_upstream: Any) -> None:
    mode = {"fail": True}

    def answer(body: dict[str, Any]) -> tuple[int, Any, float]:
        if mode["fail"]:
            return 503, ErrorResponse(error=ErrorBody(message="overloaded")).model_dump(), 0.0
        return 200, completion(json.dumps(oracle_extract(json.loads(body["messages"][-1]["content"])))), 0.0

    with scripted_upstream(answer) as up:
        base = live_server(_openai_settings(up.base_url, fallback={"failure_threshold": 2, "cooldown_s": 0.5}))

        def reason() -> str | None:
            return httpx.post(base + "/extract", json={"turn": TURN}).json()["llm_contract"]["fallback_reason"]

        assert [reason(), reason()] == ["error", "error"]
        assert len(up.requests) == 2
        assert reason() == "circuit_open"
        assert reason() == "circuit_open"
        assert len(up.requests) == 2  # the open circuit skipped the upstream
        circuit = httpx.get(base + "/healthz").json()["engines"]["openai"]["circuit"]
        assert circuit["extract"] == "open" and circuit["render"] == "closed"

        mode["fail"] = False
        time.sleep(0.6)  # past the cooldown: half-open, one trial goes through
        assert reason() is None
        assert len(up.requests) == 3
        assert httpx.get(base + "/healthz").json()["engines"]["openai"]["circuit"]["extract"] == "closed"
        assert reason() is None


KEY = "sk-proj-SECRET0123456789"


@pytest.mark.parametrize("echo", [KEY, KEY.upper(), "sk-p****6789", f"...{KEY[5:17]}..."],
                         ids=["whole", "upper-case", "masked", "a-piece"])
def test_the_upstream_key_never_leaks(live_server: Any, scripted_upstream: Any, caplog: Any, echo: str) -> None:
    key = KEY

    def answer(body: dict[str, Any]) -> tuple[int, Any, float]:
        error = ErrorBody(message=f"Incorrect API key provided: {echo}", type="invalid_request_error")
        return 401, ErrorResponse(error=error).model_dump(), 0.0

    caplog.set_level(logging.DEBUG)
    with scripted_upstream(answer) as up:
        base = live_server(_openai_settings(up.base_url), env={"OPENAI_API_KEY": key})
        app = live_server.apps[base]
        r = httpx.post(base + "/extract", json={"turn": TURN})
        assert r.json()["llm_contract"]["fallback_reason"] == "error"
        texts = [r.text, httpx.get(base + "/healthz").text, httpx.get(base + "/metrics").text,
                 httpx.get(base + "/readyz").text, caplog.text]
        pieces = {key[i:i + 8].lower() for i in range(len(key) - 7)}
        assert all(key not in t and echo not in t for t in texts)
        # the engine keeps the upstream message, scrubbed of the key wholly (any case, masked, in part)
        served = await_extract(app, TURN)
        error = (served.error or "").lower()
        assert served.fallback_reason == "error" and "[redacted]" in error
        assert not any(piece in error for piece in pieces) and "****" not in error, served.error


def await_extract(app: Any, turn: dict[str, Any]) -> Any:
    """Run one pass on the app's own runner from this thread (the server's loop is another thread)."""
    import asyncio

    return asyncio.run(_on_fresh_engine(app, turn))


async def _on_fresh_engine(app: Any, turn: dict[str, Any]) -> Any:
    from engines.fallback import PassRunner
    from engines.openai_engine import OpenAIEngine

    engine = OpenAIEngine(app.state.settings.openai)
    engine._api_key = app.state.runner.engines["openai"]._api_key  # the key the server read from its env
    await engine.start()
    try:
        return await PassRunner({"openai": engine}).extract(turn, "openai")
    finally:
        await engine.aclose()


# --- strict form <-> contract -----------------------------------------------------------------------------


def _fill_nulls(value: Any, schema: Any, defs: dict[str, Any]) -> Any:
    """What a strict-mode model answers: every optional key present, null when it has no value."""
    schema = resolve(schema, defs)
    if not isinstance(schema, dict):
        return value
    if "anyOf" in schema:
        if value is None:
            return None
        for branch in schema["anyOf"]:
            if resolve(branch, defs).get("type") == "null":
                continue
            filled = _fill_nulls(value, branch, defs)
            if jsonschema.Draft202012Validator({"$defs": defs, **branch}).is_valid(filled):
                return filled
        return value
    if isinstance(value, dict) and "properties" in schema:
        return {k: _fill_nulls(value.get(k), sub, defs) for k, sub in schema["properties"].items()}
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [_fill_nulls(v, schema["items"], defs) for v in value]
    return value


@pytest.mark.parametrize("pass_", ["extract", "render"])
def test_strict_form_round_trip_on_reference_outputs(pass_: str, reference_records: list) -> None:
    schema = strict_schema(pass_)
    defs = schema.get("$defs", {})
    validator = jsonschema.Draft202012Validator(schema)
    changed = free_form = 0
    for record in reference_records:
        document = record["expected"][pass_]
        strict_answer = _fill_nulls(document, schema, defs)
        validator.validate(strict_answer)  # the strict form admits every contract document
        changed += strict_answer != document
        if any(w["widget_type"] == "itinerary_summary" and w["payload"].get("traveller_party")
               for w in document.get("widgets", [])):
            # ``traveller_party`` is "any object" in the contract: strict mode cannot express an open
            # object, so the strict form closes it to {} (still a valid document, with less in it)
            free_form += 1
            back = destrict(pass_, strict_answer)
            summary = next(w for w in back["widgets"] if w["widget_type"] == "itinerary_summary")
            assert summary["payload"]["traveller_party"] == {}
            continue
        assert destrict(pass_, strict_answer) == document, record["id"]
    assert changed > 0  # the strict form really differs (nulls were added), so the round trip means something
    assert free_form < len(reference_records) / 4


@pytest.mark.parametrize("pass_", ["extract", "render"])
def test_strict_form_is_what_openai_structured_outputs_accept(pass_: str) -> None:
    """Every object closed with every key required; no oneOf, const, default, discriminator or foreign format."""
    schema = strict_schema(pass_)
    objects = 0
    for node in schema_nodes(schema):
        assert not {"oneOf", "const", "default", "discriminator", "patternProperties"} & set(node), node
        assert node.get("format", "date") in OPENAI_FORMATS, node
        if node.get("type") == "object":
            objects += 1
            assert node["additionalProperties"] is False and node["required"] == list(node["properties"]), node
    assert objects > (2 * len(TYPED_ENVELOPES) if pass_ == "render" else 5)  # every envelope and payload visited
    assert strict_schema(pass_) == schema and strict_schema(pass_) is not schema  # a fresh copy each call


def test_one_typed_render_union_for_the_openai_engine_and_the_slm_grammar() -> None:
    """The strict form and the full-render grammar type the envelopes from one union: every widget type once,
    the same envelope definitions as the exported render contract."""
    strict = strict_schema("render")
    grammar = json.loads(grammars.schema_texts("full")[grammars.RENDER_FULL])
    exported = TypedRenderOutput.model_json_schema()
    for schema in (typed_schema("render"), grammar):
        branches = schema["properties"]["widgets"]["items"]["anyOf" if schema is grammar else "oneOf"]
        names = [b["$ref"].rsplit("/", 1)[-1] for b in branches]
        assert sorted(names) == sorted(m.__name__ for m in TYPED_ENVELOPES.values())
        assert schema["$defs"].keys() == exported["$defs"].keys()
    assert len(strict["properties"]["widgets"]["items"]["anyOf"]) == len(TYPED_ENVELOPES)
    assert grammar["additionalProperties"] is False  # the grammar is closed; the strict form closes every object


def test_the_shared_contract_modules_import_only_contracts() -> None:
    """contracts/ is the bottom layer: the strict form and the OpenAI protocol import no engine, adapter or server."""
    import ast

    root = Path(__file__).resolve().parent.parent / "contracts"
    for name in ("strict.py", "openai_api.py"):
        tree = ast.parse((root / name).read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            modules = ([a.name for a in node.names] if isinstance(node, ast.Import)
                       else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for module in modules:
                top = module.split(".")[0]
                assert top not in {"engines", "adapters", "server", "bench", "evaluation", "training"}, (name, module)
