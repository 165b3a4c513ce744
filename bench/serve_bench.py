"""Serve benchmark: the HTTP server (deterministic engines) next to a bare FastAPI echo endpoint, driven by wrk.

Starts ``travel-slm serve`` and a bare FastAPI app that echoes the request JSON, both in subprocesses with the
same uvicorn settings. For each concurrency level and endpoint, `wrk <https://github.com/wg/wrk>`_ (a C load
generator: ``apt-get install wrk``) sends the reference turns to ``/extract`` and ``/render`` (with the labelled
extraction, as the planner's shadow step does) for a fixed duration, cycling through the bodies with a Lua
script. The benchmark prints p50/p95/p99 latency, throughput and errors for both targets, their ratio, and the
CPU time per request of the server, of the echo and of wrk itself (read from ``/proc`` through psutil), so a
reader can see which process is the bottleneck: a Python load generator used to be (about 270 req/s for
server and echo alike).

    python -m bench.serve_bench                      # table
    python -m bench.serve_bench --json               # JSON on stdout
    python -m bench.serve_bench --check              # exit 1 when a target is missed

Targets (issue 3): deterministic ``/extract`` p50 < 2 ms at concurrency 1; throughput at concurrency
64 at least half the echo's; zero errors.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from bench import wrk
from evaluation.corpus import CorpusProblem, json_lines

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


@contextmanager
def _process(argv: list[str], port: int, env: dict[str, str]) -> Iterator[tuple[str, int]]:
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
        yield base, proc.pid
    finally:
        wrk.stop(proc, 15)


def _refuse(problem: CorpusProblem) -> None:
    raise SystemExit(f"bench: reference corpus {problem}")


def reference_records(files: Iterable[str | Path], limit: int | None) -> list[dict[str, Any]]:
    """The labelled records of ``files`` (read at run time), ``limit`` of them spread evenly (all when None);
    a file that cannot be read or a line that is not JSON ends the benchmark naming its file and line."""
    records: list[dict[str, Any]] = [value for _, _, value in json_lines(files, _refuse)]
    if limit:
        step = max(1, len(records) // limit)
        records = records[::step][:limit]
    return records


def request_bodies(records: list[dict[str, Any]]) -> dict[str, list[bytes]]:
    """Request bodies per endpoint, one per record: its turn to ``/extract``, its turn and labelled extraction to
    ``/render`` (as the planner's shadow step sends them)."""
    return {
        "/extract": [json.dumps({"turn": r["input"]}).encode() for r in records],
        "/render": [json.dumps({"turn": r["input"], "extraction": r["expected"]["extract"]}).encode()
                    for r in records],
    }


def load_bodies(corpora: Path, limit: int | None) -> dict[str, list[bytes]]:
    """Request bodies per endpoint from the labelled corpora under the folder ``corpora``."""
    records = reference_records(sorted(corpora.glob("*.labeled.jsonl")), limit)
    if not records:
        raise SystemExit(f"serve_bench: no *.labeled.jsonl under {corpora}")
    return request_bodies(records)


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
    #: CPU time (user + system) of the target's processes per request, in ms
    cpu_ms_per_request: float | None
    #: the target's CPU use during the run, in cores (1.0 = one core busy the whole time)
    target_cores: float
    #: wrk's own CPU use during the run, in cores: far below its thread count, the client is not the bottleneck
    client_cores: float


def measure(target: str, base: str, pid: int, endpoint: str, bodies_file: Path, script: Path, concurrency: int,
            threads: int, seconds: float) -> Result:
    cpu_before = wrk.cpu_seconds(pid)
    summary = wrk.run_wrk(base + endpoint, bodies_file, script, concurrency, threads, seconds)
    cpu = wrk.cpu_seconds(pid) - cpu_before
    elapsed = summary["duration_us"] / 1e6
    n = int(summary["requests"])
    errors = wrk.errors(summary)
    ms = lambda us: round(us / 1000.0, 3) if n else None  # noqa: E731
    return Result(target, endpoint, concurrency, n, errors, round(elapsed, 3),
                  ms(summary["p50_us"]), ms(summary["p95_us"]), ms(summary["p99_us"]),
                  round(n / elapsed, 1) if elapsed > 0 else 0.0,
                  round(cpu * 1000.0 / n, 4) if n else None,
                  round(cpu / elapsed, 3) if elapsed > 0 else 0.0,
                  round(summary["client_cpu_s"] / elapsed, 3) if elapsed > 0 else 0.0)


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
    lines = [f"{'endpoint':<9} {'conc':>4} {'target':<6} {'n':>7} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} "
             f"{'req/s':>8} {'errors':>6} {'cpu ms/req':>10} {'target cores':>12} {'wrk cores':>9} "
             f"{'rps ratio':>9} {'p50 ratio':>9}"]
    for r in results:
        ratio = p50_ratio = ""
        if r.target == "server":
            echo = next((e for e in results if e.target == "echo" and e.endpoint == r.endpoint
                         and e.concurrency == r.concurrency), None)
            if echo is not None and echo.rps > 0:
                ratio = f"{r.rps / echo.rps:.2f}"
            if echo is not None and echo.p50_ms and r.p50_ms is not None:
                p50_ratio = f"{r.p50_ms / echo.p50_ms:.2f}"
        fmt = lambda v, d=3: "-" if v is None else f"{v:.{d}f}"  # noqa: E731
        lines.append(f"{r.endpoint:<9} {r.concurrency:>4} {r.target:<6} {r.requests:>7} {fmt(r.p50_ms):>8} "
                     f"{fmt(r.p95_ms):>8} {fmt(r.p99_ms):>8} {r.rps:>8.1f} {r.errors:>6} "
                     f"{fmt(r.cpu_ms_per_request):>10} {r.target_cores:>12.2f} {r.client_cores:>9.2f} "
                     f"{ratio:>9} {p50_ratio:>9}")
    lines.append("")
    for name, check in checks.items():
        detail = ", ".join(f"{k}={v}" for k, v in check.items() if k != "ok")
        lines.append(f"{'PASS' if check['ok'] else 'FAIL'}  {name} ({detail})")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.serve_bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Exit status: 0 done (with --check: every target met), 1 a target missed (--check) "
                                       "or the run failed, 2 usage error.")
    p.add_argument("--corpora", type=Path, default=DEFAULT_CORPORA, help="folder of *.labeled.jsonl reference turns")
    p.add_argument("--turns", type=int, default=500, help="distinct reference turns to cycle through (default 500)")
    p.add_argument("--seconds", type=float, default=5.0, help="wrk duration per endpoint, target and level (default 5)")
    p.add_argument("--concurrency", default="1,16,64", help="comma-separated connection counts (default 1,16,64)")
    p.add_argument("--threads", type=int, default=1,
                   help="wrk threads (default 1: on a 2-core machine the other core is the server's)")
    p.add_argument("--endpoints", default=",".join(ENDPOINTS), help="comma-separated endpoints")
    p.add_argument("--workers", type=int, default=1, help="server worker processes (travel-slm serve --workers)")
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
    wrk.wrk_binary()
    levels = [int(x) for x in args.concurrency.split(",") if x.strip()]
    endpoints = [e.strip() for e in args.endpoints.split(",") if e.strip()]
    bodies = load_bodies(args.corpora, args.turns)
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("TRAVEL_SLM_API_KEY", None)
    server_port, echo_port = wrk.free_port(), wrk.free_port()
    server_argv = [sys.executable, "-m", "server.cli", "serve", "--host", "127.0.0.1", "--port", str(server_port),
                   "--engine", "deterministic", "--log-level", args.server_log_level]
    if args.workers > 1:
        server_argv += ["--workers", str(args.workers)]
    echo_argv = [sys.executable, "-m", "bench.serve_bench", "--serve-echo", str(echo_port),
                 "--server-log-level", args.server_log_level]
    progress = None
    if sys.stderr.isatty() and not args.json:
        from tqdm import tqdm

        progress = tqdm(total=len(levels) * len(endpoints) * 2, unit="run", file=sys.stderr)
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="serve-bench-") as tmp, \
            _process(server_argv, server_port, env) as (server, server_pid), \
            _process(echo_argv, echo_port, env) as (echo, echo_pid):
        script = wrk.write_script(Path(tmp))
        files: dict[str, Path] = {}
        for endpoint in endpoints:
            files[endpoint] = Path(tmp) / (endpoint.strip("/") + ".jsonl")
            files[endpoint].write_bytes(b"\n".join(bodies[endpoint]) + b"\n")
        for base in (server, echo):  # warm both (imports, first-request paths); not measured
            for endpoint in endpoints:
                wrk.run_wrk(base + endpoint, files[endpoint], script, 4, 1, 1)
        for conc in levels:
            for endpoint in endpoints:
                for target, base, pid in (("server", server, server_pid), ("echo", echo, echo_pid)):
                    results.append(measure(target, base, pid, endpoint, files[endpoint], script, conc,
                                           args.threads, args.seconds))
                    if progress is not None:
                        progress.update(1)
    if progress is not None:
        progress.close()
    checks = evaluate(results)
    if args.json:
        print(json.dumps({"results": [asdict(r) for r in results], "checks": checks,
                          "meta": {"python": platform.python_version(), "cpus": os.cpu_count(),
                                   "seconds": args.seconds, "threads": args.threads, "workers": args.workers,
                                   "turns": len(bodies[endpoints[0]]), "load_generator": "wrk",
                                   "server_log_level": args.server_log_level}}, indent=2))
    else:
        print(table(results, checks))
    return 1 if args.check and not all(c["ok"] for c in checks.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
