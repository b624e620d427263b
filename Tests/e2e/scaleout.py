"""Scale-out check: several tracegate replicas in front of one backend, exporting to one MLflow
tracking server whose backend store is PostgreSQL (or SQLite, for comparison).

Used by `scripts/scaleout-postgres` (600 requests, PostgreSQL against SQLite, a table) and by
`test_scaleout_postgres.py` (60 requests, PostgreSQL). Everything runs on loopback:

- `PostgresCluster`: a throwaway cluster (initdb in a temporary directory, `postgres` on a free
  port, TCP on 127.0.0.1 only, trust authentication), one database. As root the server runs as
  the `postgres` user (PostgreSQL refuses root), in a directory that user owns.
- `StoreServer`: `mlflow server --backend-store-uri <uri>` (one worker, job runner off, artifacts
  in its directory), as the tests start it for SQLite.
- `run_scenario`: starts the replicas (each in its own working directory, so each has its own
  spool), sends the requests alternating between them, waits until every trace is stored, and
  checks what MLflow holds.

How the ingest rate is measured: from the first request sent to the moment the database holds a
trace with a `client_request_id` for every request (counted with SQL, every 0.2 s, a cheap query
that does not go through the one MLflow worker). The check itself then reads every trace back
with `MlflowClient.search_traces`, as a user would.
"""

from __future__ import annotations

import glob
import json
import os
import pwd
import re
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import requests

from harness import E2E_TRACEGATE_BIN, Tracegate, TracegateFactory
from helpers import free_port, stop_process_group, wait_until
from mlflow_harness import MlflowServer

PG_START_TIMEOUT = 30.0
PG_STOP_TIMEOUT = 20.0
APT_HINT = "install PostgreSQL (Debian: apt-get install -y postgresql) or set PG_BINDIR"


# ---- PostgreSQL -----------------------------------------------------------------------------


def find_pg_bindir() -> Path | None:
    """Where initdb and postgres are: $PG_BINDIR, the newest /usr/lib/postgresql/N/bin, PATH."""
    candidates = []
    if os.environ.get("PG_BINDIR"):
        candidates.append(Path(os.environ["PG_BINDIR"]))
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                      key=lambda p: [int(x) for x in re.findall(r"\d+", p)] or [0], reverse=True)
    candidates += [Path(p) for p in versions]
    if shutil.which("initdb"):
        candidates.append(Path(shutil.which("initdb")).parent)
    for c in candidates:
        if (c / "initdb").exists() and (c / "postgres").exists():
            return c
    return None


class PostgresCluster:
    """A throwaway PostgreSQL cluster on 127.0.0.1:<free port> with one database."""

    def __init__(self, bindir: Path | None = None, database: str = "mlflow", user: str = "tracegate",
                 settings: dict[str, str] | None = None):
        found = bindir or find_pg_bindir()
        if found is None:
            raise AssertionError(f"PostgreSQL server binaries (initdb, postgres) not found: {APT_HINT}")
        self.bindir = found
        self.database = database
        self.user = user
        self.settings = dict(settings or {})  # extra server settings (postgres -c KEY=VALUE)
        self.port = 0
        self.dir: Path | None = None
        self.proc: subprocess.Popen | None = None
        # PostgreSQL refuses to run as root: then run it as `postgres`, in a directory it owns.
        self.run_as: str | None = "postgres" if os.geteuid() == 0 else None

    @property
    def uri(self) -> str:
        # The driver is named: SQLAlchemy 2.1 (MLflow 3.17's) defaults postgresql:// to psycopg 3,
        # and the requirements install psycopg2.
        return f"postgresql+psycopg2://{self.user}@127.0.0.1:{self.port}/{self.database}"

    @property
    def log_path(self) -> Path:
        assert self.dir is not None
        return self.dir / "postgres.log"

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except (FileNotFoundError, AssertionError):
            return ""

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(LC_ALL="C", LANG="C")
        if self.run_as:
            env["HOME"] = str(self.dir)
        return env

    def _run(self, args: list[str], timeout: float = 60) -> subprocess.CompletedProcess:
        out = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=self._env(),
                             stdin=subprocess.DEVNULL, cwd=self.dir, user=self.run_as, group=self.run_as,
                             extra_groups=[] if self.run_as else None)
        if out.returncode != 0:
            raise AssertionError(f"{' '.join(args)} exited {out.returncode}:\n{out.stdout}\n{out.stderr}")
        return out

    def start(self) -> "PostgresCluster":
        # Its own directory under the system temp dir (not under a caller's 0700 directory, which
        # the postgres user could not enter).
        self.dir = Path(tempfile.mkdtemp(prefix="tracegate-pg-"))
        if self.run_as:
            try:
                pw = pwd.getpwnam(self.run_as)
            except KeyError:
                raise AssertionError(f"running as root, PostgreSQL must run as the user {self.run_as!r}, which "
                                     f"does not exist ({APT_HINT}; the package creates it)") from None
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        data = self.dir / "data"
        self._run([str(self.bindir / "initdb"), "-D", str(data), "-U", self.user, "--auth=trust",
                   "-E", "UTF8", "--locale=C", "--no-sync"], timeout=120)
        last_error: AssertionError | None = None
        for _attempt in range(3):  # only a port race is worth a retry
            self.port = free_port()
            args = [str(self.bindir / "postgres"), "-D", str(data), "-p", str(self.port),
                    "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.dir}"]
            for key, value in self.settings.items():
                args += ["-c", f"{key}={value}"]
            log = open(self.log_path, "ab")
            try:
                self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                             cwd=self.dir, env=self._env(), start_new_session=True,
                                             user=self.run_as, group=self.run_as,
                                             extra_groups=[] if self.run_as else None)
            finally:
                log.close()
            try:
                wait_until(self._accepting, PG_START_TIMEOUT, interval=0.1, message="postgres to accept connections")
                break
            except (AssertionError, _PgExited) as e:
                last_error = AssertionError(f"postgres did not start: {e}\nlog:\n{self.log()[-3000:]}")
                self._stop_server()
                if "in use" not in self.log():
                    raise last_error from None
        else:
            raise last_error  # type: ignore[misc]
        self._run([str(self.bindir / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user,
                   self.database])
        return self

    def _accepting(self) -> bool:
        if self.proc.poll() is not None:
            raise _PgExited(f"postgres exited with {self.proc.returncode}")
        out = subprocess.run([str(self.bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-q"],
                             env=self._env(), stdin=subprocess.DEVNULL, capture_output=True, timeout=10)
        return out.returncode == 0

    def _stop_server(self) -> None:
        if self.proc is None:
            return
        # SIGINT is PostgreSQL's "fast" shutdown; SIGQUIT its immediate one.
        stop_process_group(self.proc, signal.SIGINT, PG_STOP_TIMEOUT, "postgres processes", then=signal.SIGQUIT)
        self.proc = None

    def stop(self, keep_files: bool = False) -> None:
        self._stop_server()
        if self.dir is not None and not keep_files:
            shutil.rmtree(self.dir, ignore_errors=True)

    def connect(self):
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user=self.user, dbname=self.database)
        conn.autocommit = True
        return conn


class _PgExited(Exception):
    pass


# ---- MLflow on any backend store ------------------------------------------------------------


class StoreServer(MlflowServer):
    """`mlflow server` on a free loopback port with the given backend store; artifacts and the log
    in `workdir`."""

    def __init__(self, workdir: Path, store_uri: str, workers: int = 1):
        super().__init__(workdir, store_uri=store_uri, workers=workers)


class TraceCounter:
    """Counts an experiment's traces straight from the backend store (read-only, cheap)."""

    def __init__(self, store: str, experiment_id: str, sqlite_path: Path | None = None,
                 cluster: PostgresCluster | None = None):
        self.store = store
        self.experiment_id = int(experiment_id)
        if store == "sqlite":
            self.conn = sqlite3.connect(f"file:{sqlite_path}?mode=ro", uri=True, timeout=5)
            self.param = "?"
        else:
            assert cluster is not None
            self.conn = cluster.connect()
            self.param = "%s"

    def counts(self) -> tuple[int, int]:
        """(traces, traces with a client_request_id) in the experiment."""
        cur = self.conn.cursor()
        cur.execute(f"SELECT count(*), count(client_request_id) FROM trace_info WHERE experiment_id = {self.param}",
                    (self.experiment_id,))
        total, with_id = cur.fetchone()
        cur.close()
        return int(total), int(with_id)

    def close(self) -> None:
        try:
            self.conn.close()
        except Exception:
            pass


# ---- the scenario ---------------------------------------------------------------------------


@dataclass
class Sent:
    index: int
    replica: str
    request_id: str
    user: str
    session: str
    stream: bool
    status: int = 0
    trace_id: str | None = None  # X-MLflow-Trace-Id of the response
    error: str | None = None
    sent_at: float = 0.0


@dataclass
class Result:
    store: str
    requests: int
    ok_responses: int = 0
    traces_found: int = 0      # requests with at least one trace carrying their client_request_id
    duplicates: int = 0        # traces beyond the first for a request (same client_request_id)
    missing: int = 0           # requests with no trace
    wrong: int = 0             # traces with the wrong user, session, replica tag or trace id
    strays: int = 0            # traces in the experiment that belong to no request
    seconds_send: float = 0.0  # first request to last response
    seconds_spans: float | None = None  # first request to every trace in the store
    seconds_ids: float | None = None    # first request to every trace having its client_request_id
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (not self.problems and self.ok_responses == self.requests and self.traces_found == self.requests
                and self.duplicates == 0 and self.missing == 0 and self.wrong == 0 and self.strays == 0)

    @property
    def traces_per_second(self) -> float | None:
        return self.requests / self.seconds_ids if self.seconds_ids else None

    def as_dict(self) -> dict:
        d = {k: v for k, v in self.__dict__.items()}
        d["traces_per_second"] = self.traces_per_second
        d["ok"] = self.ok
        return d


def chat_body(i: int, stream: bool) -> bytes:
    body = {"model": "fake-model",
            "messages": [{"role": "system", "content": "You are terse."},
                         {"role": "user", "content": f"Question number {i}: how do replicas share a store?"}]}
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return json.dumps(body).encode()


def send_requests(replicas: dict[str, Tracegate], n: int, tag: str, concurrency: int = 8, stream_every: int = 4,
                  timeout: float = 120.0) -> list[Sent]:
    """n chat completions, request i to replica i mod len(replicas), every `stream_every`-th streamed;
    every request has its own X-Request-ID, X-User-ID and X-Session-ID."""
    names = sorted(replicas)
    plan = [Sent(i, names[i % len(names)], f"sc-{tag}-{i}", f"user-{tag}-{i}", f"session-{tag}-{i}",
                 stream_every > 0 and i % stream_every == stream_every - 1) for i in range(n)]
    local = threading.local()
    deadline = time.monotonic() + timeout

    def one(s: Sent) -> None:
        if time.monotonic() > deadline:
            s.error = "not sent: time limit"
            return
        sessions = getattr(local, "sessions", None)
        if sessions is None:
            sessions = local.sessions = {name: requests.Session() for name in names}
        headers = {"Content-Type": "application/json", "X-Request-ID": s.request_id, "X-User-ID": s.user,
                   "X-Session-ID": s.session}
        s.sent_at = time.monotonic()
        try:
            r = sessions[s.replica].post(f"{replicas[s.replica].url}/v1/chat/completions", data=chat_body(s.index, s.stream),
                                         headers=headers, timeout=30, stream=s.stream)
            if s.stream:
                text = b"".join(r.iter_content(chunk_size=None))
                if b"data: [DONE]" not in text:
                    s.error = "stream did not end with data: [DONE]"
            else:
                r.content  # noqa: B018 - read the body
            s.status = r.status_code
            s.trace_id = r.headers.get("X-MLflow-Trace-Id")
            if r.status_code != 200:
                s.error = f"status {r.status_code}: {r.text[:200]}"
            elif r.headers.get("X-Request-ID") != s.request_id:
                s.error = f"X-Request-ID came back as {r.headers.get('X-Request-ID')!r}"
        except requests.RequestException as e:
            s.error = f"{type(e).__name__}: {e}"

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(pool.map(one, plan))
    return plan


def search_all(client, experiment_id: str) -> list:
    """Every trace of the experiment, without spans, 500 a page."""
    out: list = []
    token = None
    while True:
        page = client.search_traces(locations=[experiment_id], max_results=500, page_token=token,
                                    include_spans=False)
        out.extend(page)
        token = page.token
        if not token:
            return out


def check_traces(traces: list, sent: list[Sent], result: Result, replica_tag: str) -> None:
    """Fills result.traces_found/duplicates/missing/wrong/strays; one line per problem (capped)."""
    by_request: dict[str | None, list] = defaultdict(list)
    for t in traces:
        by_request[t.info.client_request_id].append(t)
    expected = {s.request_id: s for s in sent}
    problems: list[str] = []
    for s in sent:
        found = by_request.get(s.request_id, [])
        if not found:
            result.missing += 1
            problems.append(f"missing: request {s.request_id} (replica {s.replica}, trace id {s.trace_id})")
            continue
        result.traces_found += 1
        if len(found) > 1:
            result.duplicates += len(found) - 1
            problems.append(f"duplicate: {len(found)} traces for {s.request_id}: {[t.info.trace_id for t in found]}")
        for t in found:
            md = t.info.trace_metadata or {}
            tags = t.info.tags or {}
            bad = []
            if md.get("mlflow.trace.user") != s.user:
                bad.append(f"user {md.get('mlflow.trace.user')!r}")
            if md.get("mlflow.trace.session") != s.session:
                bad.append(f"session {md.get('mlflow.trace.session')!r}")
            if tags.get(replica_tag) != s.replica:
                bad.append(f"tag {replica_tag}={tags.get(replica_tag)!r} (sent to {s.replica})")
            if s.trace_id and t.info.trace_id != s.trace_id:
                bad.append(f"trace id {t.info.trace_id} (response said {s.trace_id})")
            if bad:
                result.wrong += 1
                problems.append(f"wrong: request {s.request_id}: " + ", ".join(bad))
    for crid, ts in by_request.items():
        if crid not in expected:
            result.strays += len(ts)
            problems.append(f"stray: {len(ts)} trace(s) with client_request_id {crid!r}: "
                            f"{[t.info.trace_id for t in ts][:5]}")
    if problems:
        result.problems += problems[:20] + ([f"... and {len(problems) - 20} more"] if len(problems) > 20 else [])


def start_replicas(names: list[str], workdir: Path, upstream: str, mlflow_url: str, experiment_id: str,
                   replica_tag: str, extra_flags: dict[str, str] | None = None) -> tuple[dict[str, Tracegate], list]:
    """One tracegate per name, each in its own working directory (its own spool); returns the
    replicas and their factories (for teardown)."""
    replicas: dict[str, Tracegate] = {}
    factories = []
    for name in names:
        d = workdir / f"replica-{name}"
        d.mkdir(parents=True, exist_ok=True)
        f = TracegateFactory(d)
        factories.append(f)
        flags = {"mlflow_tracking_uri": mlflow_url, "mlflow_experiment_id": experiment_id,
                 "trace_tags": f"{replica_tag}={name}", "access_log": "off", **(extra_flags or {})}
        replicas[name] = f(upstream, grace="10s", **flags)
    return replicas, factories


def stop_replicas(factories: list) -> list[str]:
    problems = []
    for f in factories:
        problems += f.teardown()
    return problems


def run_scenario(store: str, workdir: Path, upstream: str, n: int, *, cluster: PostgresCluster | None = None,
                 concurrency: int = 8, stream_every: int = 4, ingest_timeout: float = 180.0,
                 replicas: int = 2, log=print, extra_flags: dict[str, str] | None = None,
                 mlflow_workers: int = 1) -> Result:
    """One full round on one backend store: MLflow server, replicas, load, wait, check. Starts and
    stops its own MLflow server and replicas; the PostgreSQL cluster (for store="postgresql") and
    the upstream are the caller's."""
    from mlflow import MlflowClient

    assert store in ("postgresql", "sqlite")
    workdir.mkdir(parents=True, exist_ok=True)
    result = Result(store=store, requests=n)
    if store == "postgresql":
        assert cluster is not None
        store_uri = cluster.uri
        sqlite_path = None
    else:
        sqlite_path = workdir / "mlflow.db"
        store_uri = f"sqlite:///{sqlite_path}"
    server = StoreServer(workdir / "mlflow", store_uri, workers=mlflow_workers)
    server.workdir.mkdir(parents=True, exist_ok=True)
    factories: list = []
    counter: TraceCounter | None = None
    try:
        t0 = time.monotonic()
        log(f"[{store}] starting mlflow server ({store_uri}, {mlflow_workers} worker(s))")
        server.start()
        log(f"[{store}] mlflow server up at {server.url} in {time.monotonic() - t0:.1f}s")
        client = MlflowClient(tracking_uri=server.url)
        tag = uuid.uuid4().hex[:8]
        experiment_id = client.create_experiment(f"scaleout-{store}-{tag}")
        replica_tag = "tracegate.replica"
        names = [chr(ord("a") + i) for i in range(replicas)]
        reps, factories = start_replicas(names, workdir, upstream, server.url, experiment_id, replica_tag,
                                         extra_flags)
        log(f"[{store}] replicas " + ", ".join(f"{k}={v.url}" for k, v in reps.items()) + f", experiment {experiment_id}")
        counter = TraceCounter(store, experiment_id, sqlite_path=sqlite_path, cluster=cluster)

        start = time.monotonic()
        sent = send_requests(reps, n, tag, concurrency=concurrency, stream_every=stream_every,
                             timeout=max(60.0, n / 5))
        result.seconds_send = time.monotonic() - start
        result.ok_responses = sum(1 for s in sent if s.error is None)
        for s in [s for s in sent if s.error][:10]:
            result.problems.append(f"request {s.request_id} to {s.replica}: {s.error}")
        log(f"[{store}] {n} requests sent in {result.seconds_send:.1f}s ({result.ok_responses} ok, "
            f"{sum(s.stream for s in sent)} streamed); waiting for the traces")

        deadline = time.monotonic() + ingest_timeout
        expected = result.ok_responses
        last_report = 0.0
        total = with_id = 0
        while True:
            total, with_id = counter.counts()
            now = time.monotonic()
            if result.seconds_spans is None and total >= expected:
                result.seconds_spans = now - start
            if with_id >= expected:
                result.seconds_ids = now - start
                break
            if now > deadline:
                result.problems.append(f"after {ingest_timeout:.0f}s the store holds {total} traces, {with_id} with "
                                       f"a client_request_id, of {expected}")
                break
            if now - last_report > 10:
                log(f"[{store}]   {total} traces stored, {with_id} with client_request_id, of {expected}")
                last_report = now
            time.sleep(0.2)
        log(f"[{store}] stored: {total} traces, {with_id} with client_request_id; checking them via search_traces")
        time.sleep(1.0)  # late duplicates would show up now
        traces = search_all(client, experiment_id)
        check_traces(traces, sent, result, replica_tag)
        metrics = {}
        for name, tg in reps.items():
            try:
                text = requests.get(f"{tg.admin_url}/metrics", timeout=5).text
                metrics[name] = {m: _metric(text, m) for m in ("tracegate_traces_exported_total",
                                                                 "tracegate_traces_dropped_total",
                                                                 "tracegate_trace_info_failures_total")}
            except requests.RequestException:
                pass
        for name, m in metrics.items():
            if (m.get("tracegate_traces_dropped_total") or 0) > 0 or (m.get("tracegate_trace_info_failures_total") or 0) > 0:
                result.problems.append(f"replica {name}: {m}")
        log(f"[{store}] replica export counters: {metrics}")
    finally:
        if counter is not None:
            counter.close()
        result.problems += stop_replicas(factories)
        server.stop()
    return result


def _metric(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            try:
                return float(line.rsplit(" ", 1)[1])
            except ValueError:
                return None
    return None


# ---- reporting ------------------------------------------------------------------------------


def format_table(results: list[Result]) -> str:
    def secs(v: float | None) -> str:
        return f"{v:.1f}" if v is not None else "-"

    def rate(v: float | None) -> str:
        return f"{v:.1f}" if v is not None else "-"

    header = ["store", "requests", "traces found", "duplicates", "missing", "wrong ids", "strays",
              "send s", "spans stored s", "all stored s", "traces/s"]
    rows = [[r.store, str(r.requests), str(r.traces_found), str(r.duplicates), str(r.missing), str(r.wrong),
             str(r.strays), secs(r.seconds_send), secs(r.seconds_spans), secs(r.seconds_ids),
             rate(r.traces_per_second)] for r in results]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    lines = ["| " + " | ".join(h.ljust(widths[i]) for i, h in enumerate(header)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += ["| " + " | ".join(c.ljust(widths[i]) for i, c in enumerate(row)) + " |" for row in rows]
    by = {r.store: r for r in results}
    pg, lite = by.get("postgresql"), by.get("sqlite")
    if pg and lite and pg.traces_per_second and lite.traces_per_second:
        lines.append(f"PostgreSQL / SQLite ingest rate: {pg.traces_per_second / lite.traces_per_second:.2f}x")
    return "\n".join(lines)


def require_tracegate() -> Path:
    if not E2E_TRACEGATE_BIN.exists():
        raise AssertionError(f"tracegate binary not found at {E2E_TRACEGATE_BIN} (swift build, or set E2E_TRACEGATE_BIN)")
    return E2E_TRACEGATE_BIN
