"""Serve benchmark: the HTTP server (deterministic engines) next to a bare FastAPI echo endpoint.

Starts ``travel-slm serve`` and a bare FastAPI app that echoes the request JSON, both in subprocesses
with the same uvicorn settings; sends the reference turns to ``/extract`` and ``/render`` (with the
labelled extraction, as the planner's shadow step does) at each concurrency level with an async
httpx client; prints p50/p95/p99 latency, throughput and errors for both, and their ratio.

    python -m bench.serve_bench                      # table
    python -m bench.serve_bench --json               # JSON on stdout
    python -m bench.serve_bench --check              # exit 1 when a target is missed

Targets (issue 3): deterministic ``/extract`` p50 < 2 ms at concurrency 1; throughput at concurrency
64 at least half the echo's; zero errors.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from bench.stats import percentile

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CORPORA = REPO.parent / "shared" / "reference" / "corpora"
ENDPOINTS = ("/extract", "/render")


def echo_app() -> Any:
    """A bare FastAPI app: each endpoint parses the JSON body and answers it back."""
    app = FastAPI()

    async def echo(request: Request) -> JSONResponse:
        return JSONResponse(await request.json())

    for path in ENDPOINTS:
        app.add_api_route(path, echo, methods=["POST"])

    @app.get("/healthz")
    async def healthz() -> dict[str, bool]:
        return {"ok": True}

    return app


def _serve_echo(port: int, log_level: str) -> int:
    import uvicorn

    from server.serve_command import uvicorn_config

    uvicorn.Server(uvicorn_config(echo_app(), "127.0.0.1", port, log_level)).run()
    return 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def _process(argv: list[str], port: int, env: dict[str, str]) -> Iterator[str]:
    base = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{argv[2:4]} exited with {proc.returncode}: {proc.stderr.read()[-2000:] if proc.stderr else ''}")
            try:
                if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{argv} did not start")
            time.sleep(0.05)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def load_bodies(corpora: Path, limit: int | None) -> dict[str, list[bytes]]:
    """Request bodies per endpoint from the labelled corpora (read at run time)."""
    records: list[dict[str, Any]] = []
    for path in sorted(corpora.glob("*.labeled.jsonl")):
        with path.open(encoding="utf-8") as handle:
            records.extend(json.loads(line) for line in handle if line.strip())
    if not records:
        raise SystemExit(f"serve_bench: no *.labeled.jsonl under {corpora}")
    if limit:
        step = max(1, len(records) // limit)
        records = records[::step][:limit]
    return {
        "/extract": [json.dumps({"turn": r["input"]}).encode() for r in records],
        "/render": [json.dumps({"turn": r["input"], "extraction": r["expected"]["extract"]}).encode()
                    for r in records],
    }


@dataclass
class Result:
    target: str
    endpoint: str
    concurrency: int
    requests: int
    errors: int
    seconds: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    rps: float


async def _load(base: str, endpoint: str, bodies: list[bytes], concurrency: int, total: int,
                progress: Any = None) -> tuple[list[float], int, float]:
    latencies: list[float] = []
    errors = 0
    counter = iter(range(total))
    headers = {"Content-Type": "application/json"}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30.0) as client:

        async def worker() -> None:
            nonlocal errors
            for i in counter:
                body = bodies[i % len(bodies)]
                t0 = time.perf_counter()
                try:
                    response = await client.post(endpoint, content=body, headers=headers)
                    await response.aread()
                    ok = response.status_code == 200
                except httpx.HTTPError:
                    ok = False
                latencies.append((time.perf_counter() - t0) * 1000.0)
                if not ok:
                    errors += 1
                if progress is not None:
                    progress.update(1)

        # warm the connections first (not measured)
        warm = [client.post(endpoint, content=bodies[i % len(bodies)], headers=headers) for i in range(concurrency)]
        await asyncio.gather(*warm, return_exceptions=True)
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return latencies, errors, elapsed


def measure(target: str, base: str, endpoint: str, bodies: list[bytes], concurrency: int, total: int,
            progress: Any = None) -> Result:
    latencies, errors, elapsed = asyncio.run(_load(base, endpoint, bodies, concurrency, total, progress))
    r3 = lambda v: None if v is None else round(v, 3)  # noqa: E731
    return Result(target, endpoint, concurrency, len(latencies), errors, round(elapsed, 3),
                  r3(percentile(latencies, 50)), r3(percentile(latencies, 95)), r3(percentile(latencies, 99)),
                  round(len(latencies) / elapsed, 1) if elapsed > 0 else 0.0)


def evaluate(results: list[Result]) -> dict[str, Any]:
    def find(target: str, endpoint: str, conc: int) -> Result | None:
        return next((r for r in results if (r.target, r.endpoint, r.concurrency) == (target, endpoint, conc)), None)

    checks: dict[str, Any] = {}
    c1 = find("server", "/extract", 1)
    if c1 is not None and c1.p50_ms is not None:
        checks["extract_p50_c1_under_2ms"] = {"value_ms": c1.p50_ms, "ok": c1.p50_ms < 2.0}
    for endpoint in ENDPOINTS:
        s, e = find("server", endpoint, 64), find("echo", endpoint, 64)
        if s is not None and e is not None and e.rps > 0:
            ratio = round(s.rps / e.rps, 3)
            checks[f"{endpoint.strip('/')}_rps_c64_at_least_half_echo"] = {"ratio": ratio, "ok": ratio >= 0.5}
    total_errors = sum(r.errors for r in results)
    checks["zero_errors"] = {"errors": total_errors, "ok": total_errors == 0}
    return checks


def table(results: list[Result], checks: dict[str, Any]) -> str:
    lines = [f"{'endpoint':<9} {'conc':>4} {'target':<6} {'n':>6} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} "
             f"{'req/s':>8} {'errors':>6} {'rps ratio':>9} {'p50 ratio':>9}"]
    for r in results:
        ratio = p50_ratio = ""
        if r.target == "server":
            echo = next((e for e in results if e.target == "echo" and e.endpoint == r.endpoint
                         and e.concurrency == r.concurrency), None)
            if echo is not None and echo.rps > 0:
                ratio = f"{r.rps / echo.rps:.2f}"
            if echo is not None and echo.p50_ms and r.p50_ms is not None:
                p50_ratio = f"{r.p50_ms / echo.p50_ms:.2f}"
        fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
        lines.append(f"{r.endpoint:<9} {r.concurrency:>4} {r.target:<6} {r.requests:>6} {fmt(r.p50_ms):>8} "
                     f"{fmt(r.p95_ms):>8} {fmt(r.p99_ms):>8} {r.rps:>8.1f} {r.errors:>6} {ratio:>9} {p50_ratio:>9}")
    lines.append("")
    for name, check in checks.items():
        detail = ", ".join(f"{k}={v}" for k, v in check.items() if k != "ok")
        lines.append(f"{'PASS' if check['ok'] else 'FAIL'}  {name} ({detail})")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.serve_bench",
        description="Latency and throughput of the travel-slm server (deterministic engines) next to a bare "
                    "FastAPI echo endpoint with the same uvicorn settings, measured in the same run.",
    )
    p.add_argument("--corpora", type=Path, default=DEFAULT_CORPORA, help="folder of *.labeled.jsonl reference turns")
    p.add_argument("--turns", type=int, default=500, help="distinct reference turns to cycle through (default 500)")
    p.add_argument("--requests", type=int, default=1500, help="measured requests per endpoint, target and level")
    p.add_argument("--concurrency", default="1,16,64", help="comma-separated concurrency levels (default 1,16,64)")
    p.add_argument("--endpoints", default=",".join(ENDPOINTS), help="comma-separated endpoints")
    p.add_argument("--server-log-level", default="warning", choices=("debug", "info", "warning", "error"),
                   help="log level of both servers (info adds one access-log line per request)")
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    p.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    p.add_argument("--serve-echo", type=int, metavar="PORT", help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.serve_echo:
        return _serve_echo(args.serve_echo, args.server_log_level)
    levels = [int(x) for x in args.concurrency.split(",") if x.strip()]
    endpoints = [e.strip() for e in args.endpoints.split(",") if e.strip()]
    bodies = load_bodies(args.corpora, args.turns)
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("TRAVEL_SLM_API_KEY", None)
    server_port, echo_port = _free_port(), _free_port()
    server_argv = [sys.executable, "-m", "server.cli", "serve", "--host", "127.0.0.1", "--port", str(server_port),
                   "--engine", "deterministic", "--log-level", args.server_log_level]
    echo_argv = [sys.executable, "-m", "bench.serve_bench", "--serve-echo", str(echo_port),
                 "--server-log-level", args.server_log_level]
    progress = None
    if sys.stderr.isatty() and not args.json:
        from tqdm import tqdm

        progress = tqdm(total=len(levels) * len(endpoints) * 2 * args.requests, unit="req", file=sys.stderr)
    results: list[Result] = []
    with _process(server_argv, server_port, env) as server, _process(echo_argv, echo_port, env) as echo:
        for conc in levels:
            for endpoint in endpoints:
                for target, base in (("server", server), ("echo", echo)):
                    results.append(measure(target, base, endpoint, bodies[endpoint], conc, args.requests, progress))
    if progress is not None:
        progress.close()
    checks = evaluate(results)
    if args.json:
        print(json.dumps({"results": [asdict(r) for r in results], "checks": checks,
                          "meta": {"python": platform.python_version(), "cpus": os.cpu_count(),
                                   "requests": args.requests, "turns": len(bodies[endpoints[0]]),
                                   "server_log_level": args.server_log_level}}, indent=2))
    else:
        print(table(results, checks))
    return 1 if args.check and not all(c["ok"] for c in checks.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
