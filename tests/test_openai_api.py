"""The OpenAI-compatible API (docs/api.md §3) with the official ``openai`` client, unchanged but for base_url.

Request bodies sent with httpx are built with the protocol models of :mod:`contracts.openai_api` (the routes
validate with the same models); bodies that test the wire itself (invalid JSON, wrong types) stay hand-written.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest

from contracts.export import PACKAGE_SCHEMAS
from contracts.openai_api import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatMessage,
    ErrorBody,
    ErrorResponse,
    StreamOptions,
)
from contracts.strict import contract_schema, strict_schema
from contracts.vocab import CONTRACT_VERSION

HOTELS = {"event_type": "user_message", "event_payload": {"text": "hotels in Paris for 2 adults"},
          "slot_state": {"check_in_date": "2026-05-01", "check_out_date": "2026-05-04"}}


@pytest.fixture(scope="module")
def client(default_server: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=default_server + "/v1", api_key="unused", max_retries=0)


def _chat(payload: Any) -> list[ChatMessage]:
    return [ChatMessage(role="system", content="You are a travel planner. (ignored by the server)"),
            ChatMessage(role="user", content=json.dumps(payload))]


def _messages(payload: Any) -> list[dict[str, Any]]:
    return [m.model_dump(exclude_unset=True) for m in _chat(payload)]


def _body(model: str, payload: Any, **params: Any) -> dict[str, Any]:
    """A chat request as sent: built with the protocol model (so it is one the routes accept by type)."""
    return ChatCompletionRequest(model=model, messages=_chat(payload), **params).wire()


def test_models_lists_passes_and_aliases(client: openai.OpenAI) -> None:
    ids = {m.id for m in client.models.list()}
    assert {"travel-extract", "travel-render", "gpt-4o", "gpt-4o-mini"} <= ids
    assert client.models.retrieve("travel-render").id == "travel-render"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")


def test_plain_completions_equal_the_planner_endpoints(client: openai.OpenAI, default_server: str,
                                                       reference_records: list) -> None:
    for record in reference_records[::9]:
        turn = record["input"]
        planner_ex = httpx.post(default_server + "/extract", json={"turn": turn}).json()
        planner_rd = httpx.post(default_server + "/render", json={"turn": turn}).json()

        ex = client.chat.completions.create(model="travel-extract", messages=_messages(turn))
        assert ex.object == "chat.completion"
        assert ex.choices[0].finish_reason == "stop"
        assert json.loads(ex.choices[0].message.content or "") == planner_ex["extract"]
        assert ex.system_fingerprint == f"deterministic:none:oracle:{CONTRACT_VERSION}"
        assert ex.usage is not None and ex.usage.completion_tokens > 0
        assert ex.usage.total_tokens == ex.usage.prompt_tokens + ex.usage.completion_tokens

        rd = client.chat.completions.create(model="travel-render", messages=_messages({"turn": turn}))
        assert json.loads(rd.choices[0].message.content or "") == planner_rd["render"]

        # with the extraction and tool_summary given, the render equals the label
        rd2 = client.chat.completions.create(model="travel-render", messages=_messages(
            {"turn": turn, "extraction": record["expected"]["extract"],
             "tool_summary": record["expected"]["tool_summary"]}))
        assert json.loads(rd2.choices[0].message.content or "") == record["expected"]["render"]


def test_streaming_both_passes(client: openai.OpenAI, default_server: str) -> None:
    planner_ex = httpx.post(default_server + "/extract", json={"turn": HOTELS}).json()["extract"]
    planner_rd = httpx.post(default_server + "/render", json={"turn": HOTELS}).json()["render"]
    for model, payload, expected in (("travel-extract", HOTELS, planner_ex),
                                     ("travel-render", {"turn": HOTELS}, planner_rd)):
        stream = client.chat.completions.create(model=model, messages=_messages(payload), stream=True,
                                                stream_options={"include_usage": True})
        pieces, finish, usage = [], None, None
        for chunk in stream:
            assert chunk.object == "chat.completion.chunk"
            if chunk.usage is not None:
                usage = chunk.usage
            for choice in chunk.choices:
                if choice.delta.content:
                    pieces.append(choice.delta.content)
                finish = choice.finish_reason or finish
        assert json.loads("".join(pieces)) == expected
        assert finish == "stop"
        assert usage is not None and usage.completion_tokens > 0


def test_raw_stream_ends_with_done(default_server: str) -> None:
    with httpx.stream("POST", default_server + "/v1/chat/completions",
                      json={"model": "gpt-4o", "stream": True, "messages": _messages(HOTELS)}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    assert all(line.startswith("data: ") for line in lines)
    first = json.loads(lines[0][len("data: "):])
    assert first["choices"][0]["delta"]["role"] == "assistant"


def test_aliases_select_the_pass(client: openai.OpenAI, live_server: Any) -> None:
    ex = client.chat.completions.create(model="gpt-4o", messages=_messages(HOTELS))
    assert "render_intent" in json.loads(ex.choices[0].message.content or "")
    rd = client.chat.completions.create(model="gpt-4o-mini", messages=_messages({"turn": HOTELS}))
    assert "widgets" in json.loads(rd.choices[0].message.content or "")
    # configured aliases
    base = live_server({"model_aliases": {"planner-extract": "extract"}})
    custom = openai.OpenAI(base_url=base + "/v1", api_key="x", max_retries=0)
    assert {m.id for m in custom.models.list()} == {"travel-extract", "travel-render", "planner-extract"}
    out = custom.chat.completions.create(model="planner-extract", messages=_messages(HOTELS))
    assert out.model == "planner-extract"
    with pytest.raises(openai.NotFoundError):
        custom.chat.completions.create(model="gpt-4o", messages=_messages(HOTELS))


@pytest.mark.parametrize("pass_", ["extract", "render"])
def test_response_format_contract_schemas_are_accepted(client: openai.OpenAI, pass_: str) -> None:
    model = f"travel-{pass_}"
    payload = HOTELS if pass_ == "extract" else {"turn": HOTELS}
    exported = json.loads((PACKAGE_SCHEMAS / f"{pass_}_output.schema.json").read_text(encoding="utf-8"))
    formats: list[dict[str, Any]] = [
        {"type": "json_object"},
        {"type": "json_schema", "json_schema": {"name": pass_, "schema": contract_schema(pass_)}},
        {"type": "json_schema", "json_schema": {"name": pass_, "strict": True, "schema": strict_schema(pass_)}},
        {"type": "json_schema", "json_schema": {"name": pass_, "schema": exported}},
    ]
    # key order and annotations do not matter
    reordered = json.loads(json.dumps(contract_schema(pass_), sort_keys=True))
    reordered.pop("title", None)
    reordered.pop("description", None)
    formats.append({"type": "json_schema", "json_schema": {"name": pass_, "schema": reordered}})
    for fmt in formats:
        out = client.chat.completions.create(model=model, messages=_messages(payload), response_format=fmt)  # type: ignore[arg-type]
        assert json.loads(out.choices[0].message.content or "")


def test_a_foreign_schema_is_refused_with_400(client: openai.OpenAI) -> None:
    foreign = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="travel-extract", messages=_messages(HOTELS), response_format={
            "type": "json_schema", "json_schema": {"name": "x", "schema": foreign}})
    err = info.value.body
    assert isinstance(err, dict) and err["code"] == "unsupported_response_format"
    assert err["param"] == "response_format.json_schema.schema"
    # the render schema on the extract pass is foreign too
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="travel-extract", messages=_messages(HOTELS), response_format={
            "type": "json_schema", "json_schema": {"name": "x", "schema": contract_schema("render")}})
    # a subtly changed contract schema (one enum value dropped) is foreign
    changed = contract_schema("extract")
    changed["$defs"]["PlainIntent"]["properties"]["kind"]["enum"] = \
        changed["$defs"]["PlainIntent"]["properties"]["kind"]["enum"][1:]
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="travel-extract", messages=_messages(HOTELS), response_format={
            "type": "json_schema", "json_schema": {"name": "x", "schema": changed}})
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="travel-extract", messages=_messages(HOTELS),
                                       extra_body={"structured_outputs": {"json": foreign}})
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="travel-extract", messages=_messages(HOTELS),
                                       extra_body={"guided_json": foreign})
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="travel-extract", messages=_messages(HOTELS),
                                       response_format={"type": "xml"})  # type: ignore[arg-type, typeddict-item]


@pytest.mark.parametrize(("params", "param"), [
    ({"response_format": {"type": "xml"}}, "response_format.type"),
    ({"response_format": {"type": "json_schema"}}, "response_format.json_schema"),
    ({"structured_outputs": {"regex": "[a-z]+"}}, "structured_outputs"),
    ({"structured_outputs": "json"}, "structured_outputs"),
    ({"guided_regex": "[a-z]+"}, "guided_regex"),
    ({"guided_choice": ["a", "b"]}, "guided_choice"),
    ({"guided_grammar": "root ::= \"a\""}, "guided_grammar"),
])
def test_other_output_constraints_are_refused_naming_the_param(default_server: str, params: dict[str, Any],
                                                               param: str) -> None:
    """Only the pass contract is answered: any other response_format or vLLM structured-output parameter is a
    400 invalid_response_format naming it (the contract itself in any of them is accepted)."""
    r = httpx.post(default_server + "/v1/chat/completions", json={**_body("travel-extract", HOTELS), **params})
    assert r.status_code == 400, r.text
    err = ErrorResponse.model_validate(r.json()).error
    assert (err.param, err.code) == (param, "invalid_response_format"), err
    foreign = httpx.post(default_server + "/v1/chat/completions", json=_body(
        "travel-extract", HOTELS, guided_json={"type": "object"}))  # a schema, not the contract's
    assert ErrorResponse.model_validate(foreign.json()).error.code == "unsupported_response_format"
    ok = httpx.post(default_server + "/v1/chat/completions", json=_body(
        "travel-extract", HOTELS, structured_outputs={"json": strict_schema("extract"), "disable_any_whitespace": True},
        guided_json=contract_schema("extract")))
    assert ok.status_code == 200, ok.text


def test_bad_inputs_have_the_openai_error_shape(default_server: str) -> None:
    url = default_server + "/v1/chat/completions"

    def check(r: httpx.Response, status: int) -> dict[str, Any]:
        assert r.status_code == status, r.text
        err = r.json()["error"]
        assert set(err) == set(ErrorBody.model_fields)
        assert ErrorResponse.model_validate(r.json()).model_dump() == r.json()  # the protocol's error, exactly
        assert "Traceback" not in r.text
        return err

    check(httpx.post(url, content=b"{nope", headers={"Content-Type": "application/json"}), 400)
    err = check(httpx.post(url, json={"model": "travel-extract",
                                      "messages": [{"role": "user", "content": "not json"}]}), 400)
    assert err["param"] == "messages.0.content" and err["code"] == "invalid_json"
    # a request or pass input of the wrong shape is a 400 naming the field, as OpenAI and vLLM answer it
    err = check(httpx.post(url, json={"model": "travel-extract", "messages": _messages({"event_payload": "x"})}),
                400)
    assert err["param"] == "messages.1.content.event_payload" and err["code"] == "invalid_type"
    err = check(httpx.post(url, json={"model": "travel-render", "messages": _messages({"turn": {},
                                                                                      "extraction": {}})}), 400)
    assert err["param"].startswith("messages.1.content.extraction")
    err = check(httpx.post(url, json=_body("travel-render", HOTELS)), 400)  # not {turn}
    assert err["param"] == "messages.1.content.turn" and err["code"] == "missing_required_parameter"
    assert check(httpx.post(url, json={"model": "travel-extract", "messages": []}), 400)["param"] == "messages"
    assert check(httpx.post(url, json={"messages": _messages(HOTELS)}), 400)["param"] == "model"
    err = check(httpx.post(url, json={"model": "travel-extract",
                                      "messages": [{"role": "system", "content": "{}"}]}), 400)
    assert err["code"] == "missing_user_message"
    check(httpx.post(url, json=_body("unknown", HOTELS)), 404)
    check(httpx.post(url, json=_body("travel-extract", HOTELS, n=2)), 400)
    check(httpx.post(url, json=_body("travel-extract", HOTELS), headers={"X-Engine": "bogus"}), 400)


def test_content_parts_and_the_last_user_message(client: openai.OpenAI) -> None:
    parts = [{"type": "text", "text": json.dumps(HOTELS)}]
    a = client.chat.completions.create(model="travel-extract", messages=[{"role": "user", "content": parts}])
    b = client.chat.completions.create(model="travel-extract", messages=[
        {"role": "user", "content": json.dumps({"event_payload": {"text": "flights to Miami"}})},
        {"role": "assistant", "content": "{}"},
        {"role": "user", "content": json.dumps(HOTELS)},
    ])
    assert a.choices[0].message.content == b.choices[0].message.content
    assert "hotelbeds.search_hotels" in (a.choices[0].message.content or "")


# --- request parameters: typed as OpenAI types them (issue 11, small HTTP fixes) --------------------------------


@pytest.mark.parametrize(("params", "param", "code"), [
    ({"stream": "yes"}, "stream", "invalid_type"),
    ({"stream": 1}, "stream", "invalid_type"),
    ({"stream": True, "stream_options": {"include_usage": "yes"}}, "stream_options.include_usage", "invalid_type"),
    ({"max_tokens": -1}, "max_tokens", "invalid_value"),
    ({"max_tokens": 0}, "max_tokens", "invalid_value"),
    ({"max_tokens": "100"}, "max_tokens", "invalid_type"),
    ({"max_tokens": 1.5}, "max_tokens", "invalid_type"),
    ({"max_completion_tokens": -5}, "max_completion_tokens", "invalid_value"),
    ({"temperature": 3}, "temperature", "invalid_value"),
    ({"temperature": "0"}, "temperature", "invalid_type"),
    ({"top_p": 1.5}, "top_p", "invalid_value"),
    ({"n": "2"}, "n", "invalid_type"),
    ({"seed": "7"}, "seed", "invalid_type"),
    ({"stop": 5}, "stop", "invalid_type"),
    ({"tools": "search"}, "tools", "invalid_type"),
    ({"tools": [{"type": "function", "function": {"name": "search_hotels", "parameters": {}}}]}, "tools",
     "unsupported_parameter"),
    ({"tool_choice": "auto"}, "tool_choice", "unsupported_parameter"),
    ({"tool_choice": {"type": "function", "function": {"name": "x"}}}, "tool_choice", "unsupported_parameter"),
    ({"functions": [{"name": "f", "parameters": {}}]}, "functions", "unsupported_parameter"),
    ({"function_call": "auto"}, "function_call", "unsupported_parameter"),
    ({"logprobs": True}, "logprobs", "unsupported_parameter"),
    ({"top_logprobs": 3}, "top_logprobs", "unsupported_parameter"),
])
def test_wrong_parameters_are_400_naming_the_param(client: openai.OpenAI, params: dict[str, Any], param: str,
                                                   code: str) -> None:
    """Before: ``stream: "yes"`` streamed, ``max_tokens: -1`` and ``tools`` were silently accepted."""
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="travel-extract", messages=_messages(HOTELS), extra_body=params)
    err = info.value.body
    assert isinstance(err, dict) and err["param"] == param and err["code"] == code, err
    assert info.value.status_code == 400


def test_accepted_parameters_change_nothing(client: openai.OpenAI) -> None:
    """max_tokens (a positive integer) is not applied: the answer is the whole contract document, whatever
    the limit; sampling parameters are checked and ignored; tool_choice "none" keeps a tools list unused."""
    plain = client.chat.completions.create(model="travel-extract", messages=_messages(HOTELS))
    tools = [{"type": "function", "function": {"name": "search_hotels", "parameters": {"type": "object"}}}]
    for kwargs in ({"max_tokens": 1}, {"max_completion_tokens": 3}, {"temperature": 0, "top_p": 1, "seed": 7,
                                                                       "stop": ["\n"], "presence_penalty": 0.5,
                                                                       "frequency_penalty": -0.5, "user": "u"},
                   {"tools": tools, "tool_choice": "none"}, {"tools": []}, {"logprobs": False}, {"n": 1}):
        out = client.chat.completions.create(model="travel-extract", messages=_messages(HOTELS), **kwargs)  # type: ignore[call-overload]
        assert out.choices[0].message.content == plain.choices[0].message.content, kwargs
        assert out.choices[0].finish_reason == "stop" and out.choices[0].message.tool_calls is None
        assert json.loads(out.choices[0].message.content or "")


def test_stream_true_is_served_with_max_tokens(client: openai.OpenAI) -> None:
    """stream=true with the client's streaming API: the same answer as chunks, max_tokens not applied."""
    plain = client.chat.completions.create(model="travel-render", messages=_messages({"turn": HOTELS}))
    stream = client.chat.completions.create(model="travel-render", messages=_messages({"turn": HOTELS}),
                                            stream=True, max_tokens=5)
    pieces = [c.choices[0].delta.content or "" for c in stream if c.choices]
    assert "".join(pieces) == plain.choices[0].message.content
    assert len(pieces) > 2  # really streamed in pieces


# --- the answers are the protocol's models, exactly ----------------------------------------------------------


def _events(r: httpx.Response) -> list[str]:
    lines = [line for line in r.text.split("\n") if line]
    assert lines[-1] == "data: [DONE]" and all(line.startswith("data: ") for line in lines), lines
    return [line[len("data: "):] for line in lines[:-1]]


@pytest.mark.parametrize(("model", "payload"), [("travel-extract", HOTELS), ("travel-render", {"turn": HOTELS})])
def test_answers_are_exactly_the_protocol_models(default_server: str, model: str, payload: Any) -> None:
    """A completion and every streamed chunk parse as the protocol models and dump back to the same JSON: no
    field the models lack, none they would write differently; usage only when asked for, on the last chunk."""
    url = default_server + "/v1/chat/completions"
    r = httpx.post(url, json=_body(model, payload))
    assert r.status_code == 200, r.text
    answer = ChatCompletion.model_validate(r.json())
    assert answer.model_dump() == r.json()
    assert answer.choices[0].finish_reason == "stop" and answer.usage is not None
    content = answer.choices[0].message.content or ""
    for include_usage in (False, True):
        r = httpx.post(url, json=_body(model, payload, stream=True,
                                       stream_options=StreamOptions(include_usage=include_usage)))
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        chunks = [json.loads(event) for event in _events(r)]
        parsed = [ChatCompletionChunk.model_validate(c) for c in chunks]
        for chunk, data in zip(parsed, chunks, strict=True):
            assert chunk.model_dump(exclude=None if include_usage else {"usage"}) == data
            assert ("usage" in data) is include_usage
        with_choice = [c for c in parsed if c.choices]
        assert with_choice[0].choices[0].delta.role == "assistant"
        assert "".join(c.choices[0].delta.content or "" for c in with_choice) == content
        assert with_choice[-1].choices[0].finish_reason == "stop"
        assert {c.id for c in parsed} == {parsed[0].id} and parsed[0].id.startswith("chatcmpl-")
        if include_usage:
            assert parsed[-1].choices == [] and parsed[-1].usage == answer.usage
            assert all(c.usage is None for c in parsed[:-1])
