"""Bad input, limits, API key and readiness over a real server (docs/api.md §4 to §6): 400, 401, 413, 422, 503."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

TURN = {"event_type": "user_message", "event_payload": {"text": "flights to Miami"}, "slot_state": {}}


def _no_traceback(text: str) -> None:
    assert "Traceback" not in text and 'File "' not in text


@pytest.mark.parametrize("path", ["/extract", "/render", "/extract_turn", "/render_widget_chat"])
def test_invalid_json_is_400(default_server: str, path: str) -> None:
    r = httpx.post(default_server + path, content=b'{"turn": {', headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    assert "JSON" in r.json()["detail"]
    _no_traceback(r.text)


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"turn": {**TURN, "event_payload": "hello"}}, ["body", "turn", "event_payload"]),
        ({"turn": {**TURN, "event_payload": [1, 2]}}, ["body", "turn", "event_payload"]),
        ({"turn": {**TURN, "slot_state": "x"}}, ["body", "turn", "slot_state"]),
        ({"turn": {**TURN, "slot_state": [1]}}, ["body", "turn", "slot_state"]),
        ({"turn": "not a turn"}, ["body", "turn"]),
        ({}, ["body", "turn"]),
        ([1, 2, 3], ["body"]),
        ({"turn": TURN, "unexpected": 1}, ["body", "unexpected"]),
    ],
)
def test_wrong_shape_is_422_with_field_messages(default_server: str, body: Any, loc: list[Any]) -> None:
    for path in ("/extract", "/render"):
        r = httpx.post(default_server + path, json=body)
        assert r.status_code == 422, (path, r.text)
        detail = r.json()["detail"]
        assert isinstance(detail, list) and detail
        assert any(d["loc"] == loc for d in detail), detail
        assert all(isinstance(d["msg"], str) and d["msg"] for d in detail)
        _no_traceback(r.text)


def test_body_over_the_limit_is_413_by_content_length(live_server: Any) -> None:
    base = live_server({"max_body_bytes": 4096})
    big = {"turn": {**TURN, "event_payload": {"text": "x" * 5000}}}
    r = httpx.post(base + "/extract", json=big)
    assert r.status_code == 413
    assert "limit" in r.json()["detail"]
    # just under the limit is served: the text is not truncated, it is refused or served whole
    ok = httpx.post(base + "/extract", json={"turn": {**TURN, "event_payload": {"text": "x" * 3000}}})
    assert ok.status_code == 200
    v1 = httpx.post(base + "/v1/chat/completions", json={"model": "travel-extract", "messages": [
        {"role": "user", "content": json.dumps({"event_payload": {"text": "y" * 5000}})}]})
    assert v1.status_code == 413
    assert v1.json()["error"]["code"] == "request_too_large"


def test_chunked_body_over_the_limit_is_413(live_server: Any) -> None:
    """No Content-Length: the limit is enforced on the stream as it arrives."""
    base = live_server({"max_body_bytes": 4096})
    sent = {"bytes": 0}

    def chunks() -> Iterator[bytes]:
        yield b'{"turn": {"event_payload": {"text": "'
        for _ in range(64):
            sent["bytes"] += 1024
            yield b"x" * 1024
        yield b'"}}}'

    r = httpx.post(base + "/extract", content=chunks(), headers={"Content-Type": "application/json"})
    assert "content-length" not in r.request.headers
    assert r.request.headers.get("transfer-encoding") == "chunked"
    assert r.status_code == 413

    def small() -> Iterator[bytes]:
        yield b'{"turn": {"event_payload": '
        yield b'{"text": "hotels in Paris"}}}'

    ok = httpx.post(base + "/extract", content=small(), headers={"Content-Type": "application/json"})
    assert ok.status_code == 200, ok.text


def test_oversized_chunked_body_is_refused_without_reading_it_all(live_server: Any) -> None:
    """A raw socket client streams 64 MiB; the server answers 413 long before the end."""
    base = live_server({"max_body_bytes": 4096})
    host, port = urlsplit(base).hostname, urlsplit(base).port
    assert host and port
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(b"POST /extract HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n")
        chunk = b"x" * 65536
        frame = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
        sent = 0
        answer = b""
        sock.settimeout(0.05)
        for _ in range(1024):  # up to 64 MiB
            try:
                sock.sendall(frame)
                sent += len(chunk)
            except OSError:
                break
            try:
                answer += sock.recv(65536)
            except TimeoutError:
                continue
            if answer:
                break
        sock.settimeout(5)
        while b"\r\n\r\n" not in answer:
            more = sock.recv(65536)
            if not more:
                break
            answer += more
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert sent < 64 * 1024 * 1024


def test_api_key(live_server: Any) -> None:
    key = "s3cret-key-for-tests-only"
    base = live_server({"api_key": key})
    body = {"turn": TURN}
    missing = httpx.post(base + "/extract", json=body)
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    wrong = httpx.post(base + "/extract", json=body, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    basic = httpx.post(base + "/extract", json=body, headers={"Authorization": f"Basic {key}"})
    assert basic.status_code == 401
    assert key not in missing.text + wrong.text + basic.text
    good = httpx.post(base + "/extract", json=body, headers={"Authorization": f"Bearer {key}"})
    assert good.status_code == 200

    v1 = httpx.get(base + "/v1/models")
    assert v1.status_code == 401 and v1.json()["error"]["code"] == "invalid_api_key"
    assert httpx.get(base + "/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    # open endpoints
    assert httpx.get(base + "/healthz").status_code == 200
    assert httpx.get(base + "/readyz").status_code == 200
    assert httpx.get(base + "/metrics").status_code == 200
    health = httpx.get(base + "/healthz").text
    assert key not in health


def test_metrics_can_require_the_key(live_server: Any) -> None:
    base = live_server({"api_key": "another-test-key", "metrics_require_key": True})
    assert httpx.get(base + "/metrics").status_code == 401
    assert httpx.get(base + "/metrics", headers={"Authorization": "Bearer another-test-key"}).status_code == 200
    assert httpx.get(base + "/healthz").status_code == 200


def test_api_key_from_the_environment(live_server: Any) -> None:
    base = live_server(env={"TRAVEL_SLM_API_KEY": "env-key-123456"})
    assert httpx.post(base + "/extract", json={"turn": TURN}).status_code == 401
    r = httpx.post(base + "/extract", json={"turn": TURN}, headers={"Authorization": "Bearer env-key-123456"})
    assert r.status_code == 200


def test_readyz_is_503_with_a_reason_while_an_engine_cannot_load(live_server: Any, tmp_path: Any) -> None:
    missing_model = str(tmp_path / "no-such-model.gguf")
    base = live_server({"extraction_engine": "slm", "slm": {"model": missing_model}})
    r = httpx.get(base + "/readyz")
    assert r.status_code == 503
    body = r.json()
    assert body["ready"] is False and "slm" in body["reason"]
    assert body["engines"]["slm"] != "ready"
    # liveness stays 200, and the pass falls back to the oracle with reason "unavailable"
    assert httpx.get(base + "/healthz").status_code == 200
    ex = httpx.post(base + "/extract", json={"turn": TURN})
    assert ex.status_code == 200
    contract = ex.json()["llm_contract"]
    assert contract["engine"] == "slm" and contract["fallback_used"] is True
    assert contract["fallback_reason"] == "unavailable"
    det = httpx.post(base + "/extract", json={"turn": TURN}, headers={"X-Engine": "deterministic"})
    assert ex.json()["extract"] == det.json()["extract"]


def test_unknown_paths_and_methods(default_server: str) -> None:
    assert httpx.get(default_server + "/nope").status_code == 404
    r = httpx.get(default_server + "/extract")
    assert r.status_code == 405
    _no_traceback(r.text)
    v1 = httpx.get(default_server + "/v1/nope")
    assert v1.status_code == 404 and "error" in v1.json()
