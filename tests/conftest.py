"""Shared fixtures: real uvicorn servers on 127.0.0.1, reference turns, small upstream servers.

``live_server(settings_overrides=None, env=None, *, subprocess=False)`` starts the real application
with uvicorn on a free port and returns its base URL (``http://127.0.0.1:PORT``); every server
started by a test stops when the test ends. ``settings_overrides`` are passed to
``core.settings.load_settings`` (nested dicts for ``slm``, ``openai``, ``shadow``, ...). ``env`` is
applied to ``os.environ`` while the settings load and the application starts (thread mode), or
given to the child process (``subprocess=True``, which runs the real ``travel-slm serve``).
The application object of a thread-mode server is available as ``live_server.apps[base_url]``.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess as sp
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

REPO = Path(__file__).resolve().parent.parent
CORPORA = REPO.parent / "shared" / "reference" / "corpora"


@contextlib.contextmanager
def patched_env(env: dict[str, str | None] | None) -> Iterator[None]:
    """Set (or, with ``None``, unset) environment variables for the duration of the block."""
    if not env:
        yield
        return
    saved = {k: os.environ.get(k) for k in env}
    try:
        for key, value in env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


class ThreadServer:
    """An ASGI app served by a real uvicorn server in a background thread (own event loop)."""

    def __init__(self, app: Any, *, env: dict[str, str | None] | None = None) -> None:
        import uvicorn

        self.app = app
        self.sock = free_socket()
        self.port = self.sock.getsockname()[1]
        self.base_url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="on", log_level="warning",
                                timeout_graceful_shutdown=5)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True,
                                       name=f"uvicorn-{self.port}")
        self.env = env

    def start(self, timeout: float = 30.0) -> str:
        with patched_env(self.env):
            self.thread.start()
            deadline = time.monotonic() + timeout
            while not self.server.started:
                if not self.thread.is_alive():
                    raise RuntimeError("the server thread exited during startup")
                if time.monotonic() > deadline:
                    raise TimeoutError("the server did not start")
                time.sleep(0.01)
        return self.base_url

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
        with contextlib.suppress(OSError):
            self.sock.close()


class ProcessServer:
    """``travel-slm serve`` in a child process."""

    def __init__(self, args: list[str], env: dict[str, str | None] | None = None) -> None:
        sock = free_socket()
        self.port = sock.getsockname()[1]
        sock.close()
        self.base_url = f"http://127.0.0.1:{self.port}"
        child_env = {k: v for k, v in os.environ.items()}
        for key, value in (env or {}).items():
            if value is None:
                child_env.pop(key, None)
            else:
                child_env[key] = value
        child_env.setdefault("PYTHONPATH", str(REPO))
        self.proc = sp.Popen(
            [sys.executable, "-m", "server.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port), *args],
            cwd=REPO, env=child_env, stdout=sp.PIPE, stderr=sp.PIPE, text=True,
        )
        self.stderr = ""

    def start(self, timeout: float = 240.0) -> str:
        """Wait for ``/healthz``; the timeout only bounds a hang (a loaded CI machine imports torch slowly)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                _out, self.stderr = self.proc.communicate()
                raise RuntimeError(f"travel-slm serve exited with {self.proc.returncode}: {self.stderr[-2000:]}")
            try:
                if httpx.get(self.base_url + "/healthz", timeout=1.0).status_code == 200:
                    return self.base_url
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise TimeoutError("travel-slm serve did not start")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                _out, self.stderr = self.proc.communicate(timeout=15)
            except sp.TimeoutExpired:
                self.proc.kill()
                _out, self.stderr = self.proc.communicate()
        elif not self.stderr:
            _out, self.stderr = self.proc.communicate()


def _cli_args(overrides: dict[str, Any]) -> list[str]:
    args: list[str] = []
    for key, value in overrides.items():
        if isinstance(value, dict):
            raise ValueError("subprocess servers take nested settings through env (TRAVEL_SLM_X__Y)")
        args += [f"--{key.replace('_', '-')}", str(value)]
    return args


class LiveServers:
    """The ``live_server`` fixture: a callable that starts servers; it stops them at teardown."""

    def __init__(self) -> None:
        self._running: list[ThreadServer | ProcessServer] = []
        self.apps: dict[str, Any] = {}
        self.processes: dict[str, ProcessServer] = {}

    def __call__(self, settings_overrides: dict[str, Any] | None = None, env: dict[str, str | None] | None = None,
                 *, subprocess: bool = False) -> str:
        overrides = dict(settings_overrides or {})
        if subprocess:
            proc = ProcessServer(_cli_args(overrides), env)
            self._running.append(proc)
            url = proc.start()
            self.processes[url] = proc
            return url
        from core.settings import load_settings
        from server.app import create_app

        with patched_env(env):
            settings = load_settings(**overrides)
            app = create_app(settings)
        server = ThreadServer(app, env=env)
        self._running.append(server)
        url = server.start()
        self.apps[url] = app
        return url

    def stop(self, base_url: str) -> None:
        for server in list(self._running):
            if server.base_url == base_url:
                server.stop()
                self._running.remove(server)

    def close(self) -> None:
        for server in reversed(self._running):
            with contextlib.suppress(Exception):
                server.stop()
        self._running.clear()


@pytest.fixture
def live_server() -> Iterator[LiveServers]:
    servers = LiveServers()
    try:
        yield servers
    finally:
        servers.close()


@pytest.fixture(scope="session")
def default_server() -> Iterator[str]:
    """One deterministic server (default settings) shared by the whole session; do not mutate its state."""
    servers = LiveServers()
    try:
        yield servers()
    finally:
        servers.close()


# --- reference turns ----------------------------------------------------------------------------------


def load_reference(limit_per_file: int | None = None) -> list[dict[str, Any]]:
    """Labelled corpus records from ``../shared/reference/corpora`` (read at run time, never copied)."""
    records: list[dict[str, Any]] = []
    for path in sorted(CORPORA.glob("*.labeled.jsonl")):
        with path.open(encoding="utf-8") as handle:
            for n, line in enumerate(handle):
                if limit_per_file is not None and n >= limit_per_file:
                    break
                if line.strip():
                    records.append(json.loads(line))
    return records


@pytest.fixture(scope="session")
def reference_records() -> list[dict[str, Any]]:
    records = load_reference(limit_per_file=40)
    if not records:
        pytest.fail(f"no reference corpora under {CORPORA}")
    return records


# --- small real upstream servers for the openai engine ---------------------------------------------------


async def answer_lifespan(receive: Any, send: Any) -> None:
    """A bare ASGI test app's lifespan: acknowledge start-up and shutdown, then return."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


class ScriptedUpstream:
    """A tiny OpenAI-like HTTP server (its own uvicorn) whose answers a test scripts.

    ``handler(body: dict) -> (status, json_or_None, delay_s)``; every request body is recorded in
    ``requests``.
    """

    def __init__(self, handler: Callable[[dict[str, Any]], tuple[int, Any, float]]) -> None:
        self.handler = handler
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] == "lifespan":
                await answer_lifespan(receive, send)
                return
            chunks = []
            while True:
                message = await receive()
                chunks.append(message.get("body", b""))
                if not message.get("more_body"):
                    break
            raw = b"".join(chunks)
            body = json.loads(raw) if raw else {}
            self.requests.append(body)
            self.headers.append({k.decode(): v.decode() for k, v in scope["headers"]})
            status, payload, delay = self.handler(body)
            if delay:
                import asyncio

                await asyncio.sleep(delay)
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            await send({"type": "http.response.start", "status": status,
                        "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": data})

        self.server = ThreadServer(app)

    def __enter__(self) -> ScriptedUpstream:
        self.base_url = self.server.start() + "/v1"
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.stop()


def completion(content: str | None, finish_reason: str = "stop", model: str = "upstream") -> dict[str, Any]:
    """A scripted upstream's ``chat.completion`` answer (the protocol model, as JSON-ready data)."""
    from contracts.openai_api import AssistantMessage, ChatCompletion, Choice, Usage

    return ChatCompletion(id="chatcmpl-x", model=model, usage=Usage.of(11, 7), choices=[
        Choice(message=AssistantMessage(content=content), finish_reason=finish_reason)]).model_dump()


@pytest.fixture
def scripted_upstream() -> Callable[[Callable[[dict[str, Any]], tuple[int, Any, float]]], ScriptedUpstream]:
    return ScriptedUpstream


#: the tiers that load a real model or runtime, heaviest first (about 100 s down to 20 s alone on 2 cores)
MODEL_TIERS = ("test_slm_vllm", "test_slm_transformers", "test_remote_vllm", "test_slm_mlx", "test_shipped_model",
               "test_warm_readiness", "test_decode_bench", "test_slm_tiny", "test_slm_models", "test_training")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run the model tiers first, heaviest first; the rest keeps its order (a stable sort).

    ``tests/run.sh`` runs the suite on two xdist workers that take one file at a time (``--dist loadfile``, so a
    module's model loads once): with the longest files first, the light tests fill the end on whichever worker is
    free, instead of the heaviest files meeting at the end.
    """
    rank = {name: n for n, name in enumerate(MODEL_TIERS)}
    items.sort(key=lambda item: rank.get(item.path.stem, len(rank)))
