"""Issue 11, finding 5 and the low HTTP items, against the real ``travel-slm serve`` (subprocess): header
size and count limits (431), slow headers (408, connection closed), the 413 every client reads, and HEAD
on the probes."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

TURN = {"event_type": "user_message", "event_payload": {"text": "hotels in Paris for 2 adults"}, "slot_state": {}}
HANG_GUARD_S = 60.0  # only ever reached when the server holds a connection it should have closed


@pytest.fixture(scope="module")
def server() -> Any:
    from tests.conftest import LiveServers

    servers = LiveServers()
    try:
        url = servers({}, env={"TRAVEL_SLM_HEADER_TIMEOUT_S": "1"}, subprocess=True)
        pid = servers.processes[url].proc.pid
        yield url, pid
    finally:
        servers.close()


def _addr(base: str) -> tuple[str, int]:
    parts = urlsplit(base)
    return parts.hostname or "127.0.0.1", parts.port or 80


def _rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _read_answer(sock: socket.socket) -> bytes:
    sock.settimeout(HANG_GUARD_S)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data


def test_normal_requests_and_realistic_headers_still_work(server: Any) -> None:
    base, _pid = server
    headers = {f"X-Trace-{i}": "v" * 200 for i in range(40)}  # 40 fields, 8 KB: well inside the limits
    r = httpx.post(base + "/extract", json={"turn": TURN}, headers=headers, timeout=30)
    assert r.status_code == 200 and r.json()["schema_valid"] is True


def test_an_oversized_header_is_431(server: Any) -> None:
    base, _pid = server
    r = httpx.post(base + "/extract", json={"turn": TURN}, headers={"X-Big": "x" * (80 * 1024)}, timeout=30)
    assert r.status_code == 431


def test_too_many_header_fields_is_431(server: Any) -> None:
    base, _pid = server
    r = httpx.post(base + "/extract", json={"turn": TURN}, headers={f"X-H{i}": "1" for i in range(200)}, timeout=30)
    assert r.status_code == 431
    assert r.json()["detail"].startswith("more than 100 request header fields")


def test_huge_headers_are_not_buffered(server: Any) -> None:
    base, pid = server
    before = _rss_kb(pid)
    for _ in range(4):
        with socket.create_connection(_addr(base), timeout=HANG_GUARD_S) as sock:
            sock.sendall(b"POST /extract HTTP/1.1\r\nHost: x\r\nX-Big: ")
            sent = 0
            try:
                while sent < 16 * 1024 * 1024:  # 16 MiB of one header; the server stops reading at 64 KiB
                    sock.sendall(b"y" * 65536)
                    sent += 65536
            except (BrokenPipeError, ConnectionResetError):
                pass
            answer = _read_answer(sock)
            assert answer == b"" or answer.startswith(b"HTTP/1.1 431")
    assert _rss_kb(pid) - before < 32 * 1024  # buffering them would take 64 MiB and more


def test_slow_headers_are_closed_with_408(server: Any) -> None:
    base, _pid = server
    socks = []
    try:
        for _ in range(50):  # half-sent requests, and connections that send nothing at all
            sock = socket.create_connection(_addr(base), timeout=HANG_GUARD_S)
            sock.sendall(b"POST /extract HTTP/1.1\r\nHost: x\r\n")
            socks.append(sock)
        socks += [socket.create_connection(_addr(base), timeout=HANG_GUARD_S) for _ in range(10)]
        answers = [_read_answer(sock) for sock in socks]  # returns once the server closes each one
    finally:
        for sock in socks:
            sock.close()
    assert all(a.startswith(b"HTTP/1.1 408") for a in answers), {a[:40] for a in answers}
    assert httpx.get(base + "/healthz", timeout=30).status_code == 200


def test_every_client_reads_the_413(server: Any) -> None:
    base, _pid = server
    body = json.dumps({"turn": {**TURN, "event_payload": {"text": "x" * (2 * 1024 * 1024)}}}).encode()
    for _ in range(5):  # urllib writes the whole body before reading the answer
        request = urllib.request.Request(base + "/extract", data=body, headers={"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(request, timeout=HANG_GUARD_S)
        assert err.value.code == 413


def test_head_on_the_probes(server: Any) -> None:
    base, _pid = server
    for path in ("/healthz", "/readyz"):
        r = httpx.head(base + path, timeout=30)
        assert r.status_code == 200 and r.content == b""
