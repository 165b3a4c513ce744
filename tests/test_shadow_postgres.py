"""The PostgreSQL shadow store, for real (issue 12, items 1 and 2): a throwaway PostgreSQL cluster from the
Debian package (``bash tests/install_postgres.sh``) on 127.0.0.1, and real ``travel-slm serve`` processes.

- Two servers write shadow records to one database at once; one report (either server's
  ``/v1/shadow/report`` or ``travel-slm shadow report --store postgresql://...``) counts every request of
  both; the records survive a restart of either server.
- A PostgreSQL outage, mid-run or at start-up, degrades shadow mode only: the live side answers 200, the
  fault shows in ``/healthz``, the losses are counted (report, ``/v1/stats``, metrics), and records arrive
  again once the server is back.
- The SQL report equals the in-memory report (the same property test as the SQLite store), retention runs
  in the database, the schema bootstrap is idempotent under concurrent starts, and the DSN's password
  appears in no log line, health answer, error or report.

Without the PostgreSQL binaries (or, as root, without a ``postgres`` user to run them as) the tests that
need a server skip with the reason; the psycopg-missing checks run everywhere.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import REPO, free_socket, load_reference
from tests.test_hardening_shadow_report import check_store_report_equals_the_in_memory_one, shadow_record

psycopg = pytest.importorskip("psycopg", reason="psycopg is not installed (bash tests/install_postgres.sh)")

pytestmark = pytest.mark.slow

HANG_S = 90.0  # bounds on waits for something to happen: hang guards, never timing assertions


def _wait(cond: Any, what: str, timeout: float = HANG_S) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


# --- a throwaway PostgreSQL cluster -----------------------------------------------------------------------


def _pg_bindir() -> Path | None:
    found = shutil.which("pg_ctl")
    if found and shutil.which("initdb"):
        return Path(found).parent
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name)
                        if p.parent.name.isdigit() else 0)
    for bindir in reversed(candidates):
        if (bindir / "initdb").exists() and (bindir / "pg_ctl").exists():
            return bindir
    return None


def _run_as() -> list[str] | None:
    """The command prefix that runs PostgreSQL's tools (they refuse root): none needed, runuser, or None."""
    if os.getuid() != 0:
        return []
    try:
        import pwd

        pwd.getpwnam("postgres")
    except KeyError:
        return None
    runuser = shutil.which("runuser")
    return [runuser, "-u", "postgres", "--"] if runuser else None


class Cluster:
    """initdb + pg_ctl in a temporary folder, listening on 127.0.0.1 on a free port, password auth."""

    def __init__(self, bindir: Path, prefix: list[str]) -> None:
        self.bindir, self.prefix = bindir, prefix
        self.dir = Path(tempfile.mkdtemp(prefix="travel-slm-pg-"))
        self.data = self.dir / "data"
        # a password with characters that need URL quoting: the redaction must find it in any form
        self.password = f"pw-{secrets.token_hex(6)}@:/%"
        sock = free_socket()
        self.port = sock.getsockname()[1]
        sock.close()
        pwfile = self.dir / "pwfile"
        pwfile.write_text(self.password + "\n", encoding="utf-8")
        if prefix:  # root: the folder belongs to the postgres user that runs the cluster
            shutil.chown(self.dir, "postgres")
            shutil.chown(pwfile, "postgres")
        self._tool("initdb", "-D", str(self.data), "-U", "travel", "-A", "scram-sha-256", f"--pwfile={pwfile}",
                   "-E", "UTF8", "--locale=C", "--no-sync")
        pwfile.unlink()

    def _tool(self, name: str, *args: str) -> None:
        proc = subprocess.run([*self.prefix, str(self.bindir / name), *args], capture_output=True, text=True,
                              timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(f"{name} failed ({proc.returncode}): {(proc.stderr or proc.stdout)[-1500:]}")

    def start(self) -> None:
        options = (f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c max_connections=50")
        self._tool("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.dir / "server.log"), "-w",
                   "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        self._tool("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def dsn(self, dbname: str = "postgres") -> str:
        return f"postgresql://travel:{quote(self.password, safe='')}@127.0.0.1:{self.port}/{dbname}"

    def create_database(self, name: str) -> str:
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def secrets(self) -> list[str]:
        return [self.password, quote(self.password, safe=""), self.dsn()]

    def cleanup(self) -> None:
        with contextlib.suppress(Exception):
            self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    bindir = _pg_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found: bash tests/install_postgres.sh")
    prefix = _run_as()
    if prefix is None:
        pytest.skip("running as root without a 'postgres' user (or runuser) to run PostgreSQL as: "
                    "bash tests/install_postgres.sh")
    c = Cluster(bindir, prefix)
    try:
        c.start()
        yield c
    finally:
        c.cleanup()


_db_counter = iter(range(1_000_000))


@pytest.fixture
def dsn(cluster: Cluster) -> str:
    """A fresh database of the module's cluster for each test."""
    return cluster.create_database(f"shadow_{next(_db_counter)}_{secrets.token_hex(3)}")


# --- real servers -----------------------------------------------------------------------------------------


def _server_env(dsn: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAVEL_SLM_")}
    env.update({"PYTHONPATH": str(REPO), "TRAVEL_SLM_SHADOW__ENABLED": "true",
                "TRAVEL_SLM_SHADOW__ENGINE": "deterministic", "TRAVEL_SLM_SHADOW__STORE": dsn,
                "TRAVEL_SLM_LOG_LEVEL": "info", "TRAVEL_SLM_LOG_PROBES": "false"})
    return env


class Server:
    """``travel-slm serve`` in a child process, its log lines in a file (a pipe nobody reads would fill)."""

    def __init__(self, dsn: str, log_dir: Path) -> None:
        sock = free_socket()
        self.port = sock.getsockname()[1]
        sock.close()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_dir / f"server-{self.port}-{secrets.token_hex(3)}.log"
        self._log = self.log_path.open("w", encoding="utf-8")
        self.proc = subprocess.Popen([sys.executable, "-m", "server.cli", "serve", "--host", "127.0.0.1", "--port",
                                      str(self.port)], cwd=REPO, env=_server_env(dsn), stdout=self._log,
                                     stderr=subprocess.STDOUT)
        self.sent = 0  # live requests sent to this server

    def start(self) -> Server:
        def up() -> bool:
            assert self.proc.poll() is None, f"the server exited: {self.log()[-2000:]}"
            try:
                return httpx.get(self.base_url + "/healthz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False
        _wait(up, "the server to start")
        return self

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Any]:
    """``servers(dsn, n)`` starts ``n`` servers at the same time (their schema bootstraps race, as the pods
    of a rollout do); every server stops at the end."""
    running: list[Server] = []

    def start(dsn: str, n: int = 1) -> list[Server]:
        new = [Server(dsn, tmp_path) for _ in range(n)]
        running.extend(new)
        with ThreadPoolExecutor(n) as pool:
            return list(pool.map(Server.start, new))

    yield start
    for server in running:
        with contextlib.suppress(Exception):
            server.stop()


@pytest.fixture(scope="module")
def bodies() -> list[tuple[str, dict[str, Any]]]:
    records = load_reference(limit_per_file=6)
    if not records:
        pytest.skip("no reference corpora under ../shared/reference/corpora")
    out: list[tuple[str, dict[str, Any]]] = []
    for r in records:
        out.append(("/extract", {"turn": r["input"]}))
        out.append(("/render", {"turn": r["input"], "extraction": r["expected"]["extract"]}))
    return out


def _send(server: Server, bodies: list[tuple[str, dict[str, Any]]], n: int, threads: int = 4) -> dict[str, int]:
    """``n`` live requests (extract and render alternately); every answer must be the live side's 200.
    Returns the requests sent per pass."""
    def one(i: int) -> str:
        path, body = bodies[i % len(bodies)]
        r = client.post(server.base_url + path, json=body)
        assert r.status_code == 200, (path, r.status_code, r.text[:300])
        contract = r.json()["llm_contract"]
        assert contract["engine"] == "deterministic" and contract["fallback_used"] is False
        return path.strip("/")

    with httpx.Client(timeout=60) as client, ThreadPoolExecutor(threads) as pool:  # keep-alive connections
        passes = list(pool.map(one, range(n)))
    server.sent += n
    return {p: passes.count(p) for p in ("extract", "render")}


def _runner(url: str) -> dict[str, Any]:
    return httpx.get(url + "/v1/stats", timeout=30).json()["shadow"]["runner"]


def _settled(server: Server) -> dict[str, Any]:
    """Wait until the server has finished (or dropped) a shadow run for every request sent to it, and its
    store has taken them (written, or counted as lost)."""
    def done() -> dict[str, Any] | None:
        r = _runner(server.base_url)
        finished = r["compared"] + r["fell_back"] + r["dropped"]
        return r if finished >= server.sent and r["store_pending"] == 0 and r["pending"] == 0 else None
    return _wait(done, f"{server.sent} shadow runs on {server.base_url}")


def _report(url: str) -> dict[str, Any]:
    r = httpx.get(url + "/v1/shadow/report", params={"wait": "true", "min_turns": 1}, timeout=60)
    assert r.status_code == 200, r.text[:500]
    return r.json()


def _metric(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name) and not line.startswith("#"))


def _no_secret(cluster: Cluster, *texts: str) -> None:
    for text in texts:
        for secret in cluster.secrets():
            assert secret not in text, "the DSN's password leaked"


def _cli_report(dsn: str) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAVEL_SLM_")}
    env["PYTHONPATH"] = str(REPO)
    proc = subprocess.run([sys.executable, "-m", "server.cli", "shadow", "report", "--store", dsn, "--json",
                           "--min-turns", "1"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    return proc.returncode, proc.stdout, proc.stderr


# --- the tests --------------------------------------------------------------------------------------------


def test_two_servers_one_report_every_request_counted_across_restarts(
        cluster: Cluster, dsn: str, servers: Any, bodies: list[tuple[str, dict[str, Any]]]) -> None:
    live = dict(zip("ab", servers(dsn, 2), strict=True))
    sent = {"extract": 0, "render": 0}
    logs: list[str] = []

    def both(n: int) -> int:  # the two servers take traffic at the same time
        with ThreadPoolExecutor(2) as pool:
            for got in pool.map(lambda s: _send(s, bodies, n), live.values()):
                for p, k in got.items():
                    sent[p] += k
        for s in live.values():
            _settled(s)
        return sum(sent.values())

    total = both(40)
    for s in live.values():  # either server's report is the fleet's
        report = _report(s.base_url)
        assert (report["records"], report["drops"], report["lost"]) == (total, 0, 0)
        assert {p: v["records"] for p, v in report["passes"].items()} == sent
        assert report["store"] == redacted_dsn(dsn) and "***" in report["store"]
    code, out, err = _cli_report(dsn)
    assert code == 0, err
    cli = json.loads(out)
    assert (cli["records"], cli["drops"], cli["lost"]) == (total, 0, 0) and cli["passes"] == report["passes"]

    # a restart of either server keeps every record; the restarted one reports them all, then adds its own
    for name, other in (("b", "a"), ("a", "b")):
        live[name].stop()
        logs.append(live[name].log())
        assert _report(live[other].base_url)["records"] == total  # the other one, meanwhile
        (live[name],) = servers(dsn)
        assert _report(live[name].base_url)["records"] == total
        total = both(12)
        assert _report(live[name].base_url)["records"] == total
    final = _report(live["a"].base_url)
    assert (final["records"], final["drops"], final["lost"]) == (total, 0, 0) == (40 * 2 + 12 * 2 * 2, 0, 0)
    assert {p: v["records"] for p, v in final["passes"].items()} == sent

    with psycopg.connect(dsn) as conn:  # four bootstraps (two at once): one schema, one version row
        assert conn.execute("SELECT version FROM shadow_schema_version").fetchall() == [(2,)]
        assert conn.execute("SELECT COUNT(*) FROM shadow_records").fetchone() == (total,)
    health = [httpx.get(s.base_url + "/healthz", timeout=30).json()["shadow_store"] for s in live.values()]
    for h in health:
        assert (h["backend"], h["ok"], h["location"]) == ("postgresql", True, redacted_dsn(dsn))
    for s in live.values():
        s.stop()
        logs.append(s.log())
    assert sum("shadow store open" in text for text in logs) == 4
    _no_secret(cluster, *logs, json.dumps(health), json.dumps(final), out, err)


def redacted_dsn(dsn: str) -> str:
    from engines.shadow.store import redact_dsn

    return redact_dsn(dsn)


def test_a_postgres_outage_degrades_shadow_only(
        cluster: Cluster, dsn: str, servers: Any, bodies: list[tuple[str, dict[str, Any]]]) -> None:
    (server,) = servers(dsn)
    url = server.base_url
    _send(server, bodies, 20)
    _settled(server)
    assert _report(url)["records"] == 20

    cluster.stop()
    try:
        outage = 30
        _send(server, bodies, outage)  # the live side keeps answering: 200, the live engine, no fallback
        runner = _settled(server)
        assert runner["store_lost"] == outage and runner["dropped"] == 0
        health = httpx.get(url + "/healthz", timeout=30)
        assert health.status_code == 200 and health.json()["ok"] is True
        store = health.json()["shadow_store"]
        assert store["ok"] is False and store["state"] in ("failed", "degraded") and store["error"]
        assert store["lost_total"] == outage and store["write_errors"] >= 1
        metrics = httpx.get(url + "/metrics", timeout=30).text
        assert _metric(metrics, "travel_slm_shadow_records_lost_total") == outage
        assert _metric(metrics, "travel_slm_shadow_store_up ") == 0
        down_report = httpx.get(url + "/v1/shadow/report", timeout=60)
        assert down_report.status_code == 503, down_report.text[:300]  # shadow is degraded, not the server
        code, out, err = _cli_report(dsn)
        assert code == 2 and "cannot be read" in err and out == "" and len(err.strip().splitlines()) == 1, err
    finally:
        cluster.start()

    # the writer reconnects on its own (no traffic needed), then stores again and persists the losses
    _wait(lambda: httpx.get(url + "/healthz", timeout=30).json()["shadow_store"]["state"] == "ok",
          "the writer to reconnect")
    _send(server, bodies, 10)
    _settled(server)
    report = _report(url)
    assert (report["records"], report["lost"], report["drops"]) == (30, outage, 0)
    assert report["records"] + report["lost"] == server.sent  # every request accounted for
    stats = _runner(url)["store"]
    assert stats["ok"] is True and stats["reconnects"] >= 1
    server.stop()
    log = server.log()
    assert "shadow store write failed" in log or "shadow store connection lost" in log
    _no_secret(cluster, log, down_report.text, json.dumps(store), err)


def test_a_server_started_while_postgres_is_down_serves_and_recovers(
        cluster: Cluster, dsn: str, servers: Any, bodies: list[tuple[str, dict[str, Any]]]) -> None:
    cluster.stop()
    try:
        (server,) = servers(dsn)  # it starts: shadow is degraded, the server is not
        url = server.base_url
        assert httpx.get(url + "/readyz", timeout=30).status_code == 200
        _send(server, bodies, 8)
        _settled(server)
        store = httpx.get(url + "/healthz", timeout=30).json()["shadow_store"]
        assert store["state"] == "failed" and store["lost_total"] == 8
    finally:
        cluster.start()
    _wait(lambda: httpx.get(url + "/healthz", timeout=30).json()["shadow_store"]["state"] == "ok",
          "the store to open once PostgreSQL is up")
    _send(server, bodies, 6)
    _settled(server)
    report = _report(url)
    assert (report["records"], report["lost"], report["drops"]) == (6, 8, 0)
    server.stop()
    _no_secret(cluster, server.log())


def test_retention_runs_in_the_database(dsn: str) -> None:
    from engines.shadow.store import ShadowStore, read_store

    old = time.time() - 10 * 86400
    store = ShadowStore(dsn, retention_days=5, retention_max_rows=7)
    store.start()
    for i in range(20):
        store.append({"kind": "slm_shadow_comparison", "ts": old if i < 5 else time.time(), "pass": "extract",
                      "request_id": f"r{i}", "agreement": {}})
    store.record_drop("extract", 2)
    store.close()  # retention runs at close (and every minute, and at start-up)
    assert [r["request_id"] for r in read_store(dsn).records] == [f"r{i}" for i in range(13, 20)]


def test_schema_bootstrap_is_idempotent_under_concurrent_starts(dsn: str) -> None:
    from engines.shadow.store import backend_for, parse_store_url

    backend = backend_for(parse_store_url(dsn))
    barrier = threading.Barrier(8)

    def connect(_: int) -> None:
        barrier.wait()
        backend.connect().close()

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(connect, range(8)))  # without the advisory lock, CREATE TABLE IF NOT EXISTS races
    backend.connect().close()
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT version FROM shadow_schema_version").fetchall() == [(2,)]
        tables = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE tablename LIKE 'shadow_%'")}
    assert tables == {"shadow_records", "shadow_drops", "shadow_losses", "shadow_schema_version"}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_sql_report_equals_the_in_memory_report(dsn: str, data: st.DataObject) -> None:
    records = data.draw(st.lists(shadow_record(), max_size=60))
    min_turns = data.draw(st.integers(1, 5))
    with psycopg.connect(dsn, autocommit=True) as conn, contextlib.suppress(psycopg.errors.UndefinedTable):
        conn.execute("TRUNCATE shadow_records, shadow_drops, shadow_losses")
    check_store_report_equals_the_in_memory_one(dsn, records, min_turns)


_MEASURE = """
import json, resource, sys
from engines.shadow.report import report_from_store
report = report_from_store(sys.argv[1], min_turns_per_class=10)
print(json.dumps({"records": report.records, "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def test_report_memory_does_not_grow_with_the_number_of_records(cluster: Cluster) -> None:
    """Issue 11 finding 4, on PostgreSQL: the report is SQL aggregates; the client's memory stays flat."""
    from engines.shadow.store import REPORT_COLUMNS, ShadowStore, report_values
    from tests.test_hardening_shadow_report import _big_record

    measured = []
    for n in (5_000, 40_000):
        dsn = cluster.create_database(f"report_{n}_{secrets.token_hex(3)}")
        store = ShadowStore(dsn)  # creates the schema
        store.start()
        assert store.flush()
        store.close()
        with psycopg.connect(dsn) as conn, conn.cursor() as cur, cur.copy(
                f"COPY shadow_records (ts, pass, record, {', '.join(REPORT_COLUMNS)}) FROM STDIN") as copy:
            for r in map(_big_record, range(n)):
                copy.write_row((r["ts"], r["pass"], json.dumps(r), *report_values(r)))
        proc = subprocess.run([sys.executable, "-c", _MEASURE, dsn], cwd=REPO, capture_output=True, text=True,
                              timeout=600, check=True)
        measured.append(json.loads(proc.stdout))
    a, b = measured
    assert (a["records"], b["records"]) == (5_000, 40_000)
    assert b["maxrss_kb"] - a["maxrss_kb"] < 24 * 1024, (a, b)


def test_a_wrong_password_is_a_store_fault_without_the_password(cluster: Cluster) -> None:
    from engines.shadow.report import report_from_store
    from engines.shadow.store import ShadowStore, StoreReadError

    wrong = f"postgresql://travel:{quote('not-' + cluster.password, safe='')}@127.0.0.1:{cluster.port}/postgres"
    store = ShadowStore(wrong, retry_s=0.2)
    store.start()
    _wait(lambda: store.state == "failed", "the login to fail")
    store.append({"kind": "slm_shadow_comparison", "ts": time.time(), "pass": "render", "agreement": {}})
    _wait(lambda: store.lost_total == 1, "the record to be counted as lost")
    health = store.health()
    store.close()
    assert "password authentication failed" in health["error"]
    with pytest.raises(StoreReadError) as err:
        report_from_store(wrong)
    _no_secret(cluster, json.dumps(health), str(err.value))


# --- without psycopg (these need no PostgreSQL server) -------------------------------------------------------

_WITHOUT_PSYCOPG = "import sys; sys.modules['psycopg'] = None; from server.cli import main; sys.exit(main(sys.argv[1:]))"


def _without_psycopg(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("TRAVEL_SLM_")}
    full.update({"PYTHONPATH": str(REPO), **env})
    return subprocess.run([sys.executable, "-c", _WITHOUT_PSYCOPG, *args], cwd=REPO, env=full, capture_output=True,
                          text=True, timeout=120)


def test_a_postgresql_store_without_psycopg_is_a_one_line_config_error() -> None:
    dsn = "postgresql://travel:hunter2-secret@db.internal:5432/shadow"
    proc = _without_psycopg(["serve", "--port", "0"], {"TRAVEL_SLM_SHADOW__ENABLED": "true",
                                                       "TRAVEL_SLM_SHADOW__STORE": dsn})
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "shadow.store" in lines[0] and "psycopg" in lines[0] and "travel-slm[postgres]" in lines[0]
    assert "hunter2" not in proc.stderr
    report = _without_psycopg(["shadow", "report", "--store", dsn], {})
    assert report.returncode == 2 and len(report.stderr.strip().splitlines()) == 1 and "psycopg" in report.stderr
    assert "hunter2" not in report.stderr + report.stdout


def test_a_sqlite_store_runs_without_psycopg(tmp_path: Path) -> None:
    sock = free_socket()
    port = sock.getsockname()[1]
    sock.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAVEL_SLM_")}
    env.update({"PYTHONPATH": str(REPO), "TRAVEL_SLM_SHADOW__ENABLED": "true", "TRAVEL_SLM_SHADOW__ENGINE":
                "deterministic", "TRAVEL_SLM_SHADOW__STORE": f"sqlite:///{tmp_path}/s.db"})
    proc = subprocess.Popen([sys.executable, "-c", _WITHOUT_PSYCOPG, "serve", "--port", str(port)], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        def up() -> bool:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            try:
                return httpx.get(url + "/healthz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False
        _wait(up, "the server to start")
        turn = {"event_type": "user_message", "event_payload": {"text": "hotels in Paris"}, "slot_state": {}}
        assert httpx.post(url + "/extract", json={"turn": turn}, timeout=30).status_code == 200
        report = httpx.get(url + "/v1/shadow/report", params={"wait": "true"}, timeout=60).json()
        assert report["records"] == 1
        assert "psycopg" not in httpx.get(url + "/healthz", timeout=30).text
    finally:
        proc.terminate()
        proc.wait(timeout=30)
