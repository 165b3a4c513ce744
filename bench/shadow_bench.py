"""Live latency with shadow mode on versus off, measured in the same run (issue 5).

Two real servers (``travel-slm serve`` child processes) answer the same planner traffic: one with
shadow off, one with shadow on (default shadow engine: ``slm``). The client sends reference turns
(an extract, then a render with that extraction) at a fixed concurrency and measures the wall time
of every live request. Phases alternate off/on/off/on... so that both modes see the same machine
conditions; after an "on" phase the bench waits for the shadow runs still in flight to end before
the next "off" phase starts, so the shadow work of one phase never leaks into an "off" measurement.

    python -m bench.shadow_bench                       # slm shadow, concurrency 16
    python -m bench.shadow_bench --shadow-engine deterministic --requests 1500 --rounds 3 --json out.json

The verdict: live p50 and p95 with shadow on within ``--tolerance`` (10%) of shadow off.
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from bench.stats import percentile

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CORPUS = str(REPO.parent / "shared" / "reference" / "corpora" / "*.labeled.jsonl")


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, name: str, env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.port = _port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_dir / f"{name}.log"
        child_env = {**os.environ, "PYTHONPATH": str(REPO), "TRAVEL_SLM_LOG_LEVEL": "warning", **env}
        self._log = self.log_path.open("w", encoding="utf-8")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "server.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=REPO, env=child_env, stdout=self._log, stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} server exited; see {self.log_path}")
            try:
                if httpx.get(self.url + "/healthz", timeout=2).status_code == 200:
                    return httpx.get(self.url + "/v1/stats", timeout=5).json()
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"{self.name} server did not start in {timeout:.0f} s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def load_turns(pattern: str, limit: int) -> list[dict[str, Any]]:
    turns: list[dict[str, Any]] = []
    for path in sorted(glob.glob(pattern)):
        with open(path, encoding="utf-8") as handle:
            turns += [json.loads(line)["input"] for line in handle if line.strip()]
    if not turns:
        raise SystemExit(f"no reference turns under {pattern}")
    step = max(1, len(turns) // limit)
    return turns[::step][:limit]


async def phase(url: str, turns: list[dict[str, Any]], requests: int, concurrency: int
                ) -> tuple[list[float], list[float], int]:
    """``requests`` live requests (extract/render pairs) at ``concurrency``; client ms, server ms, errors."""
    client_ms: list[float] = []
    server_ms: list[float] = []
    errors = 0
    counter = iter(range(requests // 2))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=60.0, limits=limits) as client:
        async def timed(path: str, body: dict[str, Any]) -> dict[str, Any] | None:
            nonlocal errors
            t0 = time.perf_counter()
            r = await client.post(path, json=body)
            client_ms.append((time.perf_counter() - t0) * 1000.0)
            if r.status_code != 200:
                errors += 1
                return None
            data = r.json()
            server_ms.append(float(data.get("latency_ms", 0.0)))
            return data

        async def worker() -> None:
            for i in counter:
                turn = turns[i % len(turns)]
                ex = await timed("/extract", {"turn": turn})
                extraction = ex["extract"] if ex else None
                await timed("/render", {"turn": turn, **({"extraction": extraction} if extraction else {})})

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return client_ms, server_ms, errors


def drain(url: str, timeout: float) -> float:
    """Wait until the shadow runs in flight have ended; returns the seconds waited."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        runner = httpx.get(url + "/v1/stats", timeout=10).json()["shadow"].get("runner") or {}
        if runner.get("inflight", 0) == 0:
            break
        time.sleep(0.1)
    return time.monotonic() - t0


def summary(values: list[float]) -> dict[str, Any]:
    return {"count": len(values), "p50_ms": percentile(values, 50), "p95_ms": percentile(values, 95),
            "mean_ms": (sum(values) / len(values)) if values else None}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shadow-engine", default="slm", choices=["slm", "deterministic", "openai"])
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--requests", type=int, default=1000, help="live requests per phase")
    ap.add_argument("--rounds", type=int, default=3, help="off/on phase pairs")
    ap.add_argument("--warmup", type=int, default=200, help="unmeasured requests per server first")
    ap.add_argument("--corpus", default=DEFAULT_CORPUS)
    ap.add_argument("--turns", type=int, default=400)
    ap.add_argument("--tolerance", type=float, default=0.10)
    ap.add_argument("--start-timeout", type=float, default=600.0, help="seconds to wait for the servers")
    ap.add_argument("--workdir", default=None, help="where the store and logs go (default: a temp dir)")
    ap.add_argument("--env", action="append", default=[], help="extra KEY=VALUE for both servers")
    ap.add_argument("--json", dest="json_out", default=None, help="write the result as JSON")
    args = ap.parse_args(argv)

    import tempfile

    work = Path(args.workdir or tempfile.mkdtemp(prefix="shadow-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    turns = load_turns(args.corpus, args.turns)
    extra = dict(kv.split("=", 1) for kv in args.env)
    off = Server("off", {**extra, "TRAVEL_SLM_SHADOW__ENABLED": "false"}, work)
    on = Server("on", {**extra, "TRAVEL_SLM_SHADOW__ENABLED": "true", "TRAVEL_SLM_SHADOW__ENGINE": args.shadow_engine,
                       "TRAVEL_SLM_SHADOW__STORE": f"sqlite:///{work}/shadow.db"}, work)
    result: dict[str, Any] = {"shadow_engine": args.shadow_engine, "concurrency": args.concurrency,
                              "requests_per_phase": args.requests, "rounds": args.rounds, "cpu_count": os.cpu_count()}
    try:
        off.wait_ready(args.start_timeout)
        on_stats = on.wait_ready(args.start_timeout)
        # the shadow engine loads in the background of the "on" server; wait until it answers
        deadline = time.monotonic() + args.start_timeout
        while args.shadow_engine != "deterministic" and time.monotonic() < deadline:
            probe = httpx.get(on.url + "/readyz", timeout=10)
            if probe.status_code == 200:
                break
            time.sleep(1)
        result["on_engines"] = on_stats.get("engines")
        for server in (off, on):
            asyncio.run(phase(server.url, turns, args.warmup, args.concurrency))
        drain(on.url, 120)
        samples: dict[str, dict[str, list[float]]] = {m: {"client": [], "server": []} for m in ("off", "on")}
        errors = {"off": 0, "on": 0}
        drained: list[float] = []
        wall = {"off": 0.0, "on": 0.0}
        for _ in range(args.rounds):
            for mode, server in (("off", off), ("on", on)):
                t0 = time.perf_counter()
                c, s, e = asyncio.run(phase(server.url, turns, args.requests, args.concurrency))
                wall[mode] += time.perf_counter() - t0
                samples[mode]["client"] += c
                samples[mode]["server"] += s
                errors[mode] += e
                if mode == "on":
                    drained.append(drain(on.url, 120))
        stats_on = httpx.get(on.url + "/v1/stats", timeout=10).json()
        for mode in ("off", "on"):
            result[mode] = {"client": summary(samples[mode]["client"]), "server": summary(samples[mode]["server"]),
                            "errors": errors[mode],
                            "throughput_rps": len(samples[mode]["client"]) / wall[mode] if wall[mode] else None}
        result["shadow"] = {"runs": stats_on["shadow"]["runs"], "agreement": stats_on["shadow"]["agreement"],
                            "latency": stats_on["shadow"]["latency"], "drain_s": drained}
        ratios = {q: (result["on"]["client"][q] / result["off"]["client"][q]) if result["off"]["client"][q] else None
                  for q in ("p50_ms", "p95_ms")}
        result["ratio_on_over_off"] = ratios
        result["within_tolerance"] = all(r is not None and r <= 1.0 + args.tolerance for r in ratios.values())
    finally:
        off.stop()
        on.stop()

    print(f"shadow bench: shadow engine {args.shadow_engine}, concurrency {args.concurrency}, "
          f"{args.rounds} x {args.requests} live requests per mode, {os.cpu_count()} CPUs")
    for mode in ("off", "on"):
        c, s = result[mode]["client"], result[mode]["server"]
        print(f"  shadow {mode:<3}: client p50 {c['p50_ms']:.2f} ms  p95 {c['p95_ms']:.2f} ms  "
              f"(server p50 {s['p50_ms']:.2f} ms  p95 {s['p95_ms']:.2f} ms)  "
              f"{result[mode]['throughput_rps']:.0f} req/s  errors {result[mode]['errors']}")
    print(f"  on/off: p50 x{ratios['p50_ms']:.3f}  p95 x{ratios['p95_ms']:.3f}  -> "
          f"{'within' if result['within_tolerance'] else 'NOT within'} {args.tolerance:.0%}")
    print(f"  shadow runs: {json.dumps(result['shadow']['runs'])}")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=2), encoding="utf-8")
    return 0 if result["within_tolerance"] else 1


if __name__ == "__main__":
    sys.exit(main())
