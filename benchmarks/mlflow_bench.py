"""The `--mlflow` part of the benchmark: a local MLflow server, and trace export measured against it.

- `start_server` runs `mlflow server` (SQLite backend, 1 worker, loopback, files in the temp
  dir) and waits on GET /health. Job execution (huey consumers, not used for trace ingest) is
  switched off with MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false.
- `capture_otlp_body` points a tracegate at `RecordingServer` (a fake tracking server in this
  process) and keeps the first OTLP/JSON body it posts: N real traces, exactly what tracegate
  sends. `direct_batches` turns it into M/N batches with fresh trace ids.
- `export_direct` posts those batches one after another on one keep-alive connection;
  `export_through_tracegate` sends M chat-completion requests through a tracegate that exports
  to MLflow. Both time until all M traces are in MLflow: the count is polled from MLflow's
  SQLite file, read-only (`--mlflow-count db`, default: cheap, so it does not slow the 1-worker
  server down), or from the REST search API (`--mlflow-count search`). Either way the final
  figures are confirmed with the search API.
- `parse_export_stats` reads tracegate's `trace export finished exported=… dropped=…` line.

Python 3.11 stdlib only; the MLflow package is only needed for the server itself.
"""

from __future__ import annotations

import http.client
import http.server
import json
import os
import re
import resource
import secrets
import signal
import shutil
import sqlite3
import threading
import time
import urllib.parse

import procs

HEALTH_TIMEOUT_S = 120
CHAT_PATH = "/v1/chat/completions"
# The request the export measurements send through tracegate (and capture): a typical small
# chat completion request, 1 KB. The nginx origin answers it with its 493-byte completion.
CHAT_REQUEST_BODY = json.dumps({
    "model": "gpt-4o-mini",
    "temperature": 0.2,
    "max_tokens": 256,
    "messages": [
        {"role": "system", "content": "You are a concise assistant for an infrastructure team. "
                                      "Answer in at most three sentences, plain text, no lists."},
        {"role": "user", "content": "Our reverse proxy records every model call as a trace. "
                                    "What should we look at first when latency goes up: the "
                                    "proxy, the upstream model server, or the network in "
                                    "between? We run the proxy and the model server on the "
                                    "same host, behind a load balancer, with keep-alive on both "
                                    "sides and streaming enabled for most clients."},
        {"role": "assistant", "content": "Start with the upstream: compare its own latency with "
                                         "what clients see."},
        {"role": "user", "content": "And if the upstream looks fine?"},
    ],
}, separators=(",", ":"))


def log(msg: str) -> None:
    import sys
    print(msg, file=sys.stderr, flush=True)


def find_mlflow(repo: str, given: str | None) -> str | None:
    """The `mlflow` executable: --mlflow-bin, the repo's .venv, /tmp/mlflow-venv, then PATH."""
    for cand in ([given] if given else []) + [os.path.join(repo, ".venv", "bin", "mlflow"),
                                              "/tmp/mlflow-venv/bin/mlflow"]:
        if cand and os.access(cand, os.X_OK):
            return cand
    return None if given else shutil.which("mlflow")


def mlflow_version(bin_path: str) -> str:
    py = os.path.join(os.path.dirname(bin_path), "python")
    import subprocess
    try:
        out = subprocess.run([py, "-c", "import mlflow; print(mlflow.__version__)"],
                             capture_output=True, text=True, timeout=60)
        return out.stdout.strip() or "?"
    except (OSError, subprocess.SubprocessError):
        return "?"


class Server:
    """A running MLflow server: its process, port and SQLite file."""

    def __init__(self, proc: procs.Proc, port: int, db_path: str):
        self.proc, self.port, self.db_path = proc, port, db_path

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def pids(self) -> list[int]:
        return procs.tree(self.proc.pid)

    def request(self, method: str, path: str, body: dict | bytes | None = None,
                headers: dict | None = None, timeout: float = 30,
                conn: http.client.HTTPConnection | None = None) -> tuple[int, bytes]:
        own = conn is None
        c = conn or http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            data = json.dumps(body).encode() if isinstance(body, dict) else body
            h = {"Content-Type": "application/json"}
            h.update(headers or {})
            c.request(method, path, body=data, headers=h)
            r = c.getresponse()
            return r.status, r.read()
        finally:
            if own:
                c.close()

    def create_experiment(self, name: str) -> str:
        st, body = self.request("POST", "/api/2.0/mlflow/experiments/create", {"name": name})
        if st != 200:
            raise RuntimeError(f"MLflow experiments/create {name!r}: {st} {body[:300]!r}")
        return json.loads(body)["experiment_id"]

    def search_counts(self, exp_id: str, timeout: float = 60) -> tuple[int, int]:
        """(traces, traces with client_request_id) in the experiment, from the REST search API."""
        total = with_crid = 0
        token = None
        for _ in range(1000):  # 500 per page: bounded at 500k traces
            req = {"locations": [{"type": "MLFLOW_EXPERIMENT",
                                  "mlflow_experiment": {"experiment_id": exp_id}}],
                   "max_results": 500}
            if token:
                req["page_token"] = token
            st, body = self.request("POST", "/api/3.0/mlflow/traces/search", req, timeout=timeout)
            if st != 200:
                raise RuntimeError(f"MLflow traces/search: {st} {body[:300]!r}")
            d = json.loads(body)
            for t in d.get("traces", []):
                total += 1
                with_crid += 1 if t.get("client_request_id") else 0
            token = d.get("next_page_token")
            if not token:
                break
        return total, with_crid

    def db_counts(self, exp_id: str) -> tuple[int, int]:
        """Same as search_counts, read from the SQLite file (read-only, one short query)."""
        c = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=10)
        try:
            n, crid = c.execute("SELECT COUNT(*), COUNT(client_request_id) FROM trace_info "
                                "WHERE experiment_id = ?", (int(exp_id),)).fetchone()
            return int(n), int(crid)
        finally:
            c.close()

    def counts(self, exp_id: str, how: str) -> tuple[int, int]:
        return self.db_counts(exp_id) if how == "db" else self.search_counts(exp_id)


def start_server(p: procs.Procs, tmp: str, bin_path: str, env: dict) -> Server:
    d = os.path.join(tmp, "mlflow")
    os.makedirs(os.path.join(d, "art"), exist_ok=True)
    port = procs.free_ports(1)[0]
    db = os.path.join(d, "mlflow.db")
    env = {k: v for k, v in env.items() if not k.startswith("MLFLOW_")}
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    argv = [bin_path, "server", "--backend-store-uri", f"sqlite:///{db}",
            "--default-artifact-root", os.path.join(d, "art"),
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    t0 = time.monotonic()
    proc = p.spawn("mlflow server", argv, os.path.join(tmp, "mlflow-server.out"), cwd=d, env=env)
    procs.wait_http_200(port, "/health", proc, HEALTH_TIMEOUT_S)
    log(f"MLflow server up on 127.0.0.1:{port} in {time.monotonic() - t0:.0f}s")
    return Server(proc, port, db)


# ---------- tracegate's log ----------

def _log_head(path: str, n: int = 65536) -> str:
    try:
        with open(path, "rb") as f:
            return f.read(n).decode(errors="replace")
    except OSError:
        return ""


def wait_experiment_id(proc: procs.Proc, timeout: float) -> str:
    """tracegate logs `experiment_id=N … exporting traces` once it has resolved the experiment."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in _log_head(proc.log_path).splitlines():
            if line.rstrip().endswith("exporting traces") and "experiment_id=" in line:
                return re.search(r"experiment_id=(\S+)", line).group(1)
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited ({proc.popen.returncode}):\n"
                               + proc.log_tail())
        time.sleep(0.05)
    raise RuntimeError(f"{proc.name} did not resolve its MLflow experiment in {timeout:.0f}s:\n"
                       + proc.log_tail())


def parse_export_stats(text: str) -> dict | None:
    """Counters of the last `trace export finished` line, as ints where they are ints."""
    lines = [ln for ln in text.splitlines() if "trace export finished" in ln]
    if not lines:
        return None
    out: dict = {}
    for k, v in re.findall(r"(\w+)=(\S+)", lines[-1]):
        out[k] = int(v) if v.isdigit() else v
    return out


def stop_and_collect(p: procs.Procs, proc: procs.Proc, drain_s: float) -> dict:
    """SIGTERM, wait up to drain_s for the export-finished line, then stop the group for good."""
    t0 = time.monotonic()
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        pass
    stats = None
    while time.monotonic() - t0 < drain_s:
        stats = parse_export_stats(proc.log_tail(8192))
        if stats is not None or not proc.alive():
            stats = stats or parse_export_stats(proc.log_tail(8192))
            break
        time.sleep(0.1)
    drain = time.monotonic() - t0
    p.stop(proc)
    return {"stats": stats, "drain_s": drain, "drain_finished": stats is not None,
            "drain_limit_s": drain_s}


# ---------- capture of a real OTLP body ----------

class RecordingServer:
    """A fake tracking server: answers tracegate's experiment lookup, keeps the OTLP bodies it
    gets, and echoes StartTraceV3. Loopback only, in a thread of this process."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_a):
                pass

            def _send(self, status: int, body: bytes, ctype: str = "application/json"):
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                u = urllib.parse.urlsplit(self.path)
                if u.path == "/api/2.0/mlflow/experiments/get-by-name":
                    name = urllib.parse.parse_qs(u.query).get("experiment_name", ["x"])[0]
                    self._send(200, json.dumps({"experiment": {
                        "experiment_id": "1", "name": name, "lifecycle_stage": "active"}}).encode())
                else:
                    self._send(404, b'{"error_code":"RESOURCE_DOES_NOT_EXIST"}')

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                if self.path == "/v1/traces":
                    with outer.lock:
                        outer.bodies.append(body)
                    self._send(200, b"", "application/x-protobuf")
                elif self.path == "/api/3.0/mlflow/traces":
                    self._send(200, body)  # the stored trace info is what was sent
                else:
                    self._send(404, b'{"error_code":"ENDPOINT_NOT_FOUND"}')

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def send_requests(port: int, count: int, concurrency: int, prefix: str,
                  timeout: float = 30) -> dict:
    """POST `count` chat completions through 127.0.0.1:port, `concurrency` keep-alive clients."""
    body = CHAT_REQUEST_BODY.encode()
    errors: list[str] = []
    done = [0]
    lock = threading.Lock()
    nxt = iter(range(count))

    def worker() -> None:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        try:
            while True:
                with lock:
                    i = next(nxt, None)
                if i is None:
                    return
                status = None
                try:
                    c.request("POST", CHAT_PATH, body=body, headers={
                        "Content-Type": "application/json", "X-Request-ID": f"{prefix}-{i}",
                        "X-User-ID": "bench-user", "X-Session-ID": f"{prefix}-s{i % 16}"})
                    r = c.getresponse()
                    r.read()
                    status = r.status
                    ok = status == 200
                except (OSError, http.client.HTTPException) as e:
                    ok = False
                    c.close()
                    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
                    with lock:
                        errors.append(f"request {i}: {e}")
                with lock:
                    done[0] += ok
                    if status is not None and not ok and len(errors) < 5:
                        errors.append(f"request {i}: status {status}")
        finally:
            c.close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout + count * 0.1)
    return {"ok": done[0], "errors": errors[:5]}


def capture_otlp_body(p: procs.Procs, tmp: str, env: dict, proxy_argv: list[str],
                      origin_port: int, n: int) -> bytes:
    """One OTLP/JSON body of n traces as tracegate builds it, from n requests through it."""
    rec = RecordingServer()
    port, admin = procs.free_ports(2)
    argv = proxy_argv + ["--upstream", f"http://127.0.0.1:{origin_port}",
                         "--listen", f"127.0.0.1:{port}", "--admin-listen", f"127.0.0.1:{admin}",
                         "--access-log", "off", "--mlflow-tracking-uri",
                         f"http://127.0.0.1:{rec.port}", "--mlflow-experiment-name", "capture",
                         "--export-batch-size", str(n), "--export-batch-delay", "60s",
                         "--spool-dir", os.path.join(tmp, "spool-capture")]
    proc = p.spawn("tracegate (capture)", argv, os.path.join(tmp, "tracegate-capture.out"),
                   cwd=tmp, env=env)
    try:
        procs.wait_http_200(admin, "/healthz", proc, 30)
        wait_experiment_id(proc, 30)
        r = send_requests(port, n, 1, "capture")
        if r["ok"] != n:
            raise RuntimeError(f"capture: {r['ok']}/{n} requests answered 200: {r['errors']}")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not rec.bodies:
            time.sleep(0.05)
        if not rec.bodies:
            raise RuntimeError("capture: tracegate posted no OTLP body within 30 s:\n"
                               + proc.log_tail())
        return rec.bodies[0]
    finally:
        p.stop(proc)
        rec.close()


def direct_batches(template: bytes, count: int) -> tuple[list[bytes], int]:
    """`count` bodies like `template`, each trace with a fresh trace id. Returns (bodies, traces
    per body)."""
    doc = json.loads(template)
    spans = [s for rs in doc["resourceSpans"] for ss in rs["scopeSpans"] for s in ss["spans"]]
    original = [s["traceId"] for s in spans]
    per = len(set(original))
    out = []
    for _ in range(count):
        fresh = {t: secrets.token_hex(16) for t in set(original)}
        for s, t in zip(spans, original):
            s["traceId"] = fresh[t]
        out.append(json.dumps(doc, separators=(",", ":")).encode())
    return out, per


# ---------- the two export measurements ----------

def _poll_until(server: Server, exp_id: str, want: int, how: str, t0: float, deadline_s: float,
                stop_when_crid: bool) -> dict:
    """Poll the count until `want` traces are present (and, if asked, all have a
    client_request_id). Times are seconds since t0."""
    interval = 0.05 if how == "db" else 0.5
    t_present = t_crid = None
    n = crid = 0
    polls = 0
    poll_s = 0.0
    while True:
        a = time.monotonic()
        try:
            n, crid = server.counts(exp_id, how)
        except (sqlite3.Error, RuntimeError, OSError) as e:
            log(f"count poll: {e}")
        polls += 1
        now = time.monotonic()
        poll_s += now - a
        if t_present is None and n >= want:
            t_present = now - t0
        if t_crid is None and crid >= want:
            t_crid = now - t0
        if t_present is not None and (t_crid is not None or not stop_when_crid):
            break
        if now - t0 > deadline_s:
            break
        time.sleep(interval)
    return {"t_present_s": t_present, "t_crid_s": t_crid, "final_present": n, "final_crid": crid,
            "polls": polls, "poll_s": poll_s}


def _self_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _cpu_window(pid_groups: dict[str, list[int]]):
    return {k: procs.cpu_seconds(v) for k, v in pid_groups.items()}


def export_direct(server: Server, bodies: list[bytes], per: int, name: str, how: str,
                  deadline_s: float, all_procs: procs.Procs) -> dict:
    exp_id = server.create_experiment(name)
    want = len(bodies) * per
    mpids = server.pids()
    ours = sorted({pid for pr in all_procs.procs for pid in procs.tree(pr.pid)})
    cpu0, ours0, sys0 = procs.cpu_seconds(mpids), procs.cpu_seconds(ours), \
        procs.system_busy_seconds()
    me0 = _self_cpu()
    c = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    statuses: dict[int, int] = {}
    t0 = time.monotonic()
    try:
        for b in bodies:
            st, _ = server.request("POST", "/v1/traces", b, {"x-mlflow-experiment-id": exp_id},
                                   conn=c)
            statuses[st] = statuses.get(st, 0) + 1
    finally:
        c.close()
    t_posted = time.monotonic() - t0
    r = _poll_until(server, exp_id, want, how, t0, deadline_s, stop_when_crid=False)
    wall = time.monotonic() - t0
    cpu1, ours1, sys1 = procs.cpu_seconds(mpids), procs.cpu_seconds(ours), \
        procs.system_busy_seconds()
    me1 = _self_cpu()
    searched = server.search_counts(exp_id)
    r.update({
        "kind": "direct", "experiment": name, "experiment_id": exp_id, "traces": want,
        "batches": len(bodies), "traces_per_batch": per,
        "batch_bytes": len(bodies[0]) if bodies else 0,
        "statuses": statuses, "t_posted_s": t_posted,
        "rate_posted": want / t_posted if statuses.get(200) == len(bodies) else None,
        "rate_present": want / r["t_present_s"] if r["t_present_s"] else None,
        "mlflow_cpu_pct": (cpu1 - cpu0) / wall * 100,
        "bg_cpu_pct": max(0.0, ((sys1 - sys0) - (ours1 - ours0) - (me1 - me0)) / wall * 100),
        "search_present": searched[0], "search_crid": searched[1],
    })
    return r


def export_through_tracegate(p: procs.Procs, tmp: str, env: dict, proxy_argv: list[str],
                             server: Server, origin_port: int, traces: int, batch: int,
                             concurrency: int, name: str, how: str, deadline_s: float,
                             drain_s: float) -> dict:
    port, admin = procs.free_ports(2)
    argv = proxy_argv + ["--upstream", f"http://127.0.0.1:{origin_port}",
                         "--listen", f"127.0.0.1:{port}", "--admin-listen", f"127.0.0.1:{admin}",
                         "--access-log", "off", "--mlflow-tracking-uri", server.uri,
                         "--mlflow-experiment-name", name, "--export-batch-size", str(batch),
                         "--spool-dir", os.path.join(tmp, f"spool-{name}")]
    proc = p.spawn(f"tracegate ({name})", argv, os.path.join(tmp, f"tracegate-{name}.out"),
                   cwd=tmp, env=env)
    try:
        procs.wait_http_200(admin, "/healthz", proc, 30)
        exp_id = wait_experiment_id(proc, 60)  # created before the clock starts
        mpids, tpids = server.pids(), procs.tree(proc.pid)
        ours = sorted({pid for pr in p.procs for pid in procs.tree(pr.pid)})
        cpu0 = _cpu_window({"mlflow": mpids, "tracegate": tpids, "ours": ours})
        sys0, me0 = procs.system_busy_seconds(), _self_cpu()
        t0 = time.monotonic()
        sent: dict = {}

        def load() -> None:
            sent.update(send_requests(port, traces, concurrency, name))
            sent["t_sent_s"] = time.monotonic() - t0

        th = threading.Thread(target=load, daemon=True)
        th.start()
        r = _poll_until(server, exp_id, traces, how, t0, deadline_s, stop_when_crid=True)
        th.join(60)
        wall = time.monotonic() - t0
        cpu1 = _cpu_window({"mlflow": mpids, "tracegate": tpids, "ours": ours})
        sys1, me1 = procs.system_busy_seconds(), _self_cpu()
        searched = server.search_counts(exp_id)
    finally:
        stopped = stop_and_collect(p, proc, drain_s) if proc in p.procs else {}
    r.update({
        "kind": "tracegate", "experiment": name, "experiment_id": exp_id, "traces": traces,
        "concurrency": concurrency, "batch": batch,
        "requests_ok": sent.get("ok"), "request_errors": sent.get("errors"),
        "t_sent_s": sent.get("t_sent_s"),
        "rate_present": traces / r["t_present_s"] if r["t_present_s"] else None,
        "rate_crid": traces / r["t_crid_s"] if r["t_crid_s"] else None,
        "mlflow_cpu_pct": (cpu1["mlflow"] - cpu0["mlflow"]) / wall * 100,
        "tracegate_cpu_pct": (cpu1["tracegate"] - cpu0["tracegate"]) / wall * 100,
        "bg_cpu_pct": max(0.0, ((sys1 - sys0) - (cpu1["ours"] - cpu0["ours"]) - (me1 - me0))
                          / wall * 100),
        "search_present": searched[0], "search_crid": searched[1],
        "export": stopped.get("stats"), "drain_s": stopped.get("drain_s"),
    })
    return r
