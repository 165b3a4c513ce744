"""Shadow mode's cost on the live side, and whether shadow keeps up, measured in the same run (issues 5, 11).

Real servers (``travel-slm serve`` child processes) answer the same planner traffic: one with shadow off,
one with shadow on (default shadow engine: ``slm``), and optionally a *baseline*: shadow on, served from
another checkout (``--baseline-repo``, e.g. a ``git worktree`` of an older commit), so that a before/after
comparison comes from one run on one machine. Phases alternate between the servers so that all see the
same machine conditions; after a shadow phase the bench waits until the shadow runs of that phase have
ended and their records are stored, so shadow work never leaks into the next phase.

Two load generators:

- ``--load wrk`` (the default when ``wrk`` is on PATH): wrk, a C load generator, sends reference extract and
  render requests alternately at ``--concurrency`` connections for ``--seconds`` per phase. It reports
  throughput, latency p50/p95/p99 (wrk's), the server's CPU per request (psutil), and the shadow runs of
  each phase: completed, dropped (in-flight limit, store queue full), lost (store faults), and the drop
  rate. The cost of one shadow run is the extra server CPU per request with shadow on, per shadow run.
- ``--load python``: an asyncio httpx client (extract, then render with that extraction), which measures
  live p50/p95 with shadow on against off; at high concurrency the Python client itself is the bottleneck
  (about 270 req/s here), so use it for latency ratios at modest concurrency only.

    python -m bench.shadow_bench --shadow-engine deterministic --concurrency 64 --seconds 8 --rounds 2
    git worktree add /tmp/before <commit> && python -m bench.shadow_bench --shadow-engine deterministic \
        --concurrency 64 --baseline-repo /tmp/before          # drop rate before/after in one run
    python -m bench.shadow_bench --load python --shadow-engine slm --concurrency 16 --json out.json

Verdicts (exit 1 when missed): wrk: the drop rate of the "on" server at most ``--max-drop-rate`` (5%);
python: live p50 and p95 with shadow on within ``--tolerance`` (10%) of shadow off.
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from bench import wrk
from bench.serve_bench import ENDPOINTS, reference_records, request_bodies
from contracts import vocab
from core.stats import percentile

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CORPUS = str(REPO.parent / "shared" / "reference" / "corpora" / "*.labeled.jsonl")


class Server:
    """``travel-slm serve`` from ``repo`` (this checkout, or a baseline one) in a child process."""

    def __init__(self, name: str, env: dict[str, str], log_dir: Path, repo: Path = REPO) -> None:
        self.name = name
        self.port = wrk.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_dir / f"{name}.log"
        child_env = {k: v for k, v in os.environ.items() if not k.startswith("TRAVEL_SLM_")}
        child_env.update({"PYTHONPATH": str(repo), "TRAVEL_SLM_LOG_LEVEL": "warning", **env})
        self._log = self.log_path.open("w", encoding="utf-8")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "server.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=repo, env=child_env, stdout=self._log, stderr=subprocess.STDOUT,
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
        wrk.stop(self.proc, 30)
        self._log.close()


def load_turns(pattern: str, limit: int) -> list[dict[str, Any]]:
    """The turns of ``limit`` reference records spread evenly over the files matching ``pattern``."""
    return [r["input"] for r in _records(pattern, limit)]


def _records(pattern: str, limit: int) -> list[dict[str, Any]]:
    records = reference_records(sorted(glob.glob(pattern)), limit)
    if not records:
        raise SystemExit(f"no reference turns under {pattern}")
    return records


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
    """Wait until the shadow runs of the phase have ended (started or waiting for their first loop turn) and
    the store has taken their records; returns the seconds waited."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        runner = httpx.get(url + "/v1/stats", timeout=10).json()["shadow"].get("runner") or {}
        # "pending" (spawned, not ended) is absent from older servers: "inflight" then counted every spawned run
        if runner.get("pending", runner.get("inflight", 0)) == 0 and runner.get("store_pending", 0) == 0:
            break
        time.sleep(0.1)
    return time.monotonic() - t0


def summary(values: list[float]) -> dict[str, Any]:
    return {"count": len(values), "p50_ms": percentile(values, 50), "p95_ms": percentile(values, 95),
            "mean_ms": (sum(values) / len(values)) if values else None}


def shadow_env(args: argparse.Namespace, work: Path, name: str) -> dict[str, str]:
    env = {"TRAVEL_SLM_SHADOW__ENABLED": "true", "TRAVEL_SLM_SHADOW__ENGINE": args.shadow_engine,
           "TRAVEL_SLM_SHADOW__STORE": args.store or f"sqlite:///{work}/{name}.db"}
    if args.max_inflight is not None:
        env["TRAVEL_SLM_SHADOW__MAX_INFLIGHT"] = str(args.max_inflight)
    return env


def request_lines(pattern: str, limit: int) -> list[str]:
    """``PATH<TAB>BODY`` lines (:data:`bench.wrk.WRK_SCRIPT`): an extract and a render (with the labelled
    extraction) per reference turn, extract and render alternately."""
    bodies = request_bodies(_records(pattern, limit))
    return [f"{path}\t{body.decode()}" for pair in zip(*(bodies[p] for p in ENDPOINTS), strict=True)
            for path, body in zip(ENDPOINTS, pair, strict=True)]


SHADOW_KEYS = ("submitted", "compared", "fell_back", "dropped", "store_written", "store_lost", "store_overflowed")


def shadow_counts(url: str) -> dict[str, int]:
    runner = httpx.get(url + "/v1/stats", timeout=30).json()["shadow"].get("runner") or {}
    return {k: int(runner.get(k, 0)) for k in SHADOW_KEYS}


def run_wrk_mode(args: argparse.Namespace) -> int:
    """The wrk mode: throughput, latency, server CPU per request and shadow drop rates per server."""
    import tempfile

    wrk.wrk_binary()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="shadow-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    bodies = work / "requests.tsv"
    bodies.write_text("\n".join(request_lines(args.corpus, args.turns)) + "\n", encoding="utf-8")
    script = wrk.write_script(work)
    extra = dict(kv.split("=", 1) for kv in args.env)
    servers = [Server("off", {**extra, "TRAVEL_SLM_SHADOW__ENABLED": "false"}, work),
               Server("on", {**extra, **shadow_env(args, work, "on")}, work)]
    if args.baseline_repo:
        servers.append(Server("baseline", {**extra, **shadow_env(args, work, "baseline")}, work,
                              Path(args.baseline_repo).resolve()))
    totals: dict[str, dict[str, Any]] = {s.name: {"requests": 0, "seconds": 0.0, "errors": 0, "cpu_s": 0.0,
                                                  "p50_ms": [], "p95_ms": [], "p99_ms": [],
                                                  "shadow": dict.fromkeys(SHADOW_KEYS, 0), "drain_s": []}
                                     for s in servers}
    try:
        for server in servers:
            server.wait_ready(args.start_timeout)
        for server in servers:  # warm-up, not measured
            wrk.run_wrk(server.url, bodies, script, min(4, args.concurrency), 1, 1)
            if server.name != "off":
                drain(server.url, 120)
        for _ in range(args.rounds):
            for server in servers:
                t = totals[server.name]
                before = shadow_counts(server.url) if server.name != "off" else None
                cpu0 = wrk.cpu_seconds(server.proc.pid)
                got = wrk.run_wrk(server.url, bodies, script, args.concurrency, args.threads, args.seconds)
                if before is not None:
                    t["drain_s"].append(round(drain(server.url, 300), 2))
                t["cpu_s"] += wrk.cpu_seconds(server.proc.pid) - cpu0  # shadow work finished after wrk included
                t["requests"] += int(got["requests"])
                t["seconds"] += got["duration_us"] / 1e6
                t["errors"] += wrk.errors(got)
                for q in ("p50", "p95", "p99"):
                    t[f"{q}_ms"].append(got[f"{q}_us"] / 1000.0)
                if before is not None:
                    after = shadow_counts(server.url)
                    for k in SHADOW_KEYS:
                        t["shadow"][k] += after[k] - before[k]
    finally:
        for server in servers:
            server.stop()

    result: dict[str, Any] = {"load": "wrk", "shadow_engine": args.shadow_engine, "concurrency": args.concurrency,
                              "seconds_per_phase": args.seconds, "rounds": args.rounds, "cpu_count": os.cpu_count(),
                              "baseline_repo": args.baseline_repo, "servers": {}}
    for name, t in totals.items():
        n = t["requests"]
        row: dict[str, Any] = {
            "requests": n, "errors": t["errors"], "rps": round(n / t["seconds"], 1) if t["seconds"] else None,
            "p50_ms": round(sorted(t["p50_ms"])[len(t["p50_ms"]) // 2], 2),
            "p95_ms": round(sorted(t["p95_ms"])[len(t["p95_ms"]) // 2], 2),
            "p99_ms": round(sorted(t["p99_ms"])[len(t["p99_ms"]) // 2], 2),
            "cpu_ms_per_request": round(t["cpu_s"] * 1000.0 / n, 3) if n else None,
        }
        if name != "off":
            sh = t["shadow"]
            runs = sh["compared"] + sh["fell_back"] + sh["dropped"]
            row["shadow"] = {**sh, "drop_rate": round(sh["dropped"] / runs, 4) if runs else None,
                             "drain_s": t["drain_s"]}
        result["servers"][name] = row
    off = result["servers"]["off"]
    for name, row in result["servers"].items():
        if name == "off" or not row["requests"] or not off["requests"]:
            continue
        done_runs = row["shadow"]["compared"] + row["shadow"]["fell_back"]
        extra_cpu = (row["cpu_ms_per_request"] - off["cpu_ms_per_request"]) * row["requests"]
        row["vs_off"] = {"rps": round(row["rps"] / off["rps"], 3), "p50": round(row["p50_ms"] / off["p50_ms"], 3),
                         "p95": round(row["p95_ms"] / off["p95_ms"], 3),
                         "cpu_per_request": round(row["cpu_ms_per_request"] / off["cpu_ms_per_request"], 3),
                         "cpu_ms_per_shadow_run": round(extra_cpu / done_runs, 3) if done_runs else None}
    on_rate = result["servers"]["on"]["shadow"]["drop_rate"]
    result["within_target"] = on_rate is not None and on_rate <= args.max_drop_rate

    print(f"shadow bench (wrk): shadow engine {args.shadow_engine}, {args.concurrency} connections, "
          f"{args.rounds} x {args.seconds:g} s per server, {os.cpu_count()} CPUs")
    print(f"  {'server':<9} {'req/s':>7} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'errors':>6} {'cpu ms/req':>10} "
          f"{'shadow runs':>11} {'dropped':>8} {'lost':>5} {'drop rate':>9}")
    for name, row in result["servers"].items():
        sh = row.get("shadow")
        tail = (f"{sh['compared'] + sh['fell_back']:>11} {sh['dropped']:>8} {sh['store_lost']:>5} "
                f"{(sh['drop_rate'] or 0) * 100:>8.1f}%") if sh else ""
        print(f"  {name:<9} {row['rps']:>7.0f} {row['p50_ms']:>8.2f} {row['p95_ms']:>8.2f} {row['p99_ms']:>8.2f} "
              f"{row['errors']:>6} {row['cpu_ms_per_request']:>10.3f} {tail}")
    for name, row in result["servers"].items():
        if "vs_off" in row:
            v = row["vs_off"]
            print(f"  {name}/off: throughput x{v['rps']:.2f}, p50 x{v['p50']:.2f}, p95 x{v['p95']:.2f}, "
                  f"server CPU per request x{v['cpu_per_request']:.2f}; one shadow run costs "
                  f"{v['cpu_ms_per_shadow_run']} ms of server CPU")
    print(f"  drop rate of 'on' {(on_rate or 0) * 100:.1f}% -> "
          f"{'within' if result['within_target'] else 'NOT within'} {args.max_drop_rate:.0%}")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=2), encoding="utf-8")
    return 0 if result["within_target"] else 1


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m bench.shadow_bench", description=__doc__.split("\n\n")[0],
                                 epilog="Modes, figures and verdicts: see the module docstring "
                                 "(python -c 'import bench.shadow_bench as b; print(b.__doc__)').")
    ap.add_argument("--load", choices=["wrk", "python"], default="wrk" if shutil.which("wrk") else "python",
                    help="load generator (default: wrk when installed, else the Python client)")
    ap.add_argument("--shadow-engine", default="slm", choices=vocab.ENGINES)
    ap.add_argument("--concurrency", type=int, default=16, help="connections (wrk) or client tasks (python)")
    ap.add_argument("--seconds", type=float, default=8.0, help="wrk: seconds per phase")
    ap.add_argument("--threads", type=int, default=1, help="wrk threads (default 1: the other core is the server's)")
    ap.add_argument("--requests", type=int, default=1000, help="python: live requests per phase")
    ap.add_argument("--rounds", type=int, default=3, help="phases per server (alternating)")
    ap.add_argument("--warmup", type=int, default=200, help="python: unmeasured requests per server first")
    ap.add_argument("--corpus", default=DEFAULT_CORPUS, help="glob of *.labeled.jsonl reference turns")
    ap.add_argument("--turns", type=int, default=400, help="distinct reference turns to cycle through")
    ap.add_argument("--store", default=None, help="shadow store of the shadow servers (default: a SQLite file "
                    "each in the work folder); e.g. postgresql://... to measure the PostgreSQL store")
    ap.add_argument("--max-inflight", type=int, default=None, help="TRAVEL_SLM_SHADOW__MAX_INFLIGHT of the shadow "
                    "servers (default: the setting's default)")
    ap.add_argument("--baseline-repo", default=None, help="wrk: also measure a shadow server run from this "
                    "checkout (before/after in one run)")
    ap.add_argument("--tolerance", type=float, default=0.10, help="python: allowed live p50/p95 ratio above 1")
    ap.add_argument("--max-drop-rate", type=float, default=0.05, help="wrk: allowed drop rate of the 'on' server")
    ap.add_argument("--start-timeout", type=float, default=600.0, help="seconds to wait for the servers")
    ap.add_argument("--workdir", default=None, help="where the stores and logs go (default: a temp dir)")
    ap.add_argument("--env", action="append", default=[], help="extra KEY=VALUE for every server")
    ap.add_argument("--json", dest="json_out", default=None, help="write the result as JSON")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_wrk_mode(args) if args.load == "wrk" else run_python(args)


def run_python(args: argparse.Namespace) -> int:
    """The httpx client mode: live latency with shadow on against off."""
    import tempfile

    work = Path(args.workdir or tempfile.mkdtemp(prefix="shadow-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    turns = load_turns(args.corpus, args.turns)
    extra = dict(kv.split("=", 1) for kv in args.env)
    off = Server("off", {**extra, "TRAVEL_SLM_SHADOW__ENABLED": "false"}, work)
    on = Server("on", {**extra, **shadow_env(args, work, "on")}, work)
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
