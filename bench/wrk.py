"""Driving `wrk <https://github.com/wg/wrk>`_ (a C load generator: ``apt-get install wrk``) and the servers it loads.

What :mod:`bench.serve_bench` and :mod:`bench.shadow_bench` share: the Lua script that cycles through request
bodies and prints wrk's summary as one JSON line, one wrk run with the CPU time wrk itself used, the error count of
a summary, the CPU time of a server process tree, a free local port and stopping a server child.
"""

from __future__ import annotations

import json
import resource
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

import psutil

#: wrk's Lua script. Each line of the file named after ``--`` is one request: ``BODY`` (POSTed to the URL's
#: path) or ``PATH<TAB>BODY`` (a JSON body never holds a raw tab). Each thread reads the file and cycles through
#: the requests; ``done`` prints the summary as one ``WRK_JSON {...}`` line that :func:`run_wrk` parses.
WRK_SCRIPT = r"""
local items = {}
local index = 0
local headers = {["Content-Type"] = "application/json"}

init = function(args)
  for line in io.lines(args[1]) do
    local tab = line:find("\t", 1, true)
    if tab then
      items[#items + 1] = {line:sub(1, tab - 1), line:sub(tab + 1)}
    else
      items[#items + 1] = {nil, line}
    end
  end
end

request = function()
  index = index % #items + 1
  return wrk.format("POST", items[index][1], headers, items[index][2])
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "connect": %d, "read": %d, "write": %d, "status": %d, ' ..
    '"timeout": %d, "p50_us": %d, "p95_us": %d, "p99_us": %d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99)))
end
"""

#: the error counters of wrk's summary (socket errors and non-2xx/3xx answers)
ERROR_KEYS = ("connect", "read", "write", "status", "timeout")


def wrk_binary() -> str:
    """wrk's path; exits with how to install it when it is not on PATH."""
    found = shutil.which("wrk")
    if found is None:
        raise SystemExit("wrk is not installed (Debian/Ubuntu: apt-get install wrk; macOS: brew install wrk)")
    return found


def write_script(folder: Path) -> Path:
    """:data:`WRK_SCRIPT` written into ``folder``; returns its path (wrk's ``-s``)."""
    script = folder / "requests.lua"
    script.write_text(WRK_SCRIPT, encoding="utf-8")
    return script


def run_wrk(url: str, bodies_file: Path, script: Path, concurrency: int, threads: int, seconds: float) -> dict[str, Any]:
    """One wrk run; returns its summary and the CPU seconds wrk used (from this process's children rusage)."""
    argv = [wrk_binary(), "-t", str(max(1, min(threads, concurrency))), "-c", str(concurrency),
            "-d", f"{max(1, round(seconds))}s", "--timeout", "30s", "-s", str(script), url, "--", str(bodies_file)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("WRK_JSON ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {(done.stderr or done.stdout)[-1000:]}")
    summary: dict[str, Any] = json.loads(line.removeprefix("WRK_JSON "))
    summary["client_cpu_s"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return summary


def errors(summary: dict[str, Any]) -> int:
    """The failed requests of a :func:`run_wrk` summary."""
    return sum(int(summary[k]) for k in ERROR_KEYS)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and all its children (uvicorn workers included)."""
    proc = psutil.Process(pid)
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            times = p.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def free_port() -> int:
    """A TCP port of 127.0.0.1 that is free now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stop(proc: subprocess.Popen[Any], timeout: float) -> None:
    """SIGTERM a server child and wait for it; SIGKILL it when it has not exited after ``timeout`` seconds."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
