"""Chat workload benchmark (Python 3.11 stdlib only). Entry point: benchmarks/chat_streams.

Many concurrent SSE chat streams, as a chat service sees them, sent to each target in turn:
direct to the origin, nginx `proxy_pass` (1 worker, access log off; "nginx-log" with a normal
access log; with --nginx-auto also "nginx-auto", one worker per CPU), tracegate with its defaults
(text access log to stdout, traces to its trace file), with --mlflow tracegate exporting to a
local MLflow server, and with --tracegate-variant LABEL=FLAGS tracegate with more flags (shown, not
checked).

One run, on loopback only, with free ports and every file in a temp dir:
1. starts the origin (`chat_origin.js`, Node.js: one data port per target, so the targets' closed
   connections never share a port range), the proxies, and with --mlflow the MLflow server;
2. warms every target up with a shorter run (it must complete every stream);
3. per round, per stream count, every target in an order rotated each round: a new proxy process
   (warmed by a short 100-stream run; --reuse-proxies keeps one for the whole run), then
   `chat_client.js` opens N streams over the ramp while the proxy's VmRSS is sampled every
   100 ms. After the client exits, tracegate targets get time to write (or export) the run's
   traces; then the CPU window closes. Recorded per run: event delays (client), proxy CPU and RSS,
   streams complete, traces grown, tracegate's /metrics counters, the load generator's figures;
4. prints PASS/FAIL and Markdown (chat_report.py), and writes bench-results/chat-<stamp>.md and
   .json.

Every process it started is stopped on exit, including on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import chat_report  # noqa: E402
import mlflow_bench  # noqa: E402
import nginx  # noqa: E402
import procs  # noqa: E402
from bench import git_desc, machine_info  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
START_TIMEOUT_S = 30
RSS_INTERVAL_S = 0.1


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---------- options ----------

def parse_ramp(text: str):
    """`--ramp`: `R/s` opens R connections per second (N/R seconds for N streams); a plain number
    is the same number of seconds for every N. Returns a function N -> seconds."""
    t = text.strip()
    if t.endswith("/s"):
        rate = float(t[:-2])
        if rate <= 0:
            raise ValueError("rate must be > 0")
        return lambda n: n / rate
    secs = float(t.rstrip("s"))
    if secs < 0:
        raise ValueError("seconds must be >= 0")
    return lambda n: secs


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="benchmarks/chat_streams",
        description="Concurrent SSE chat streams through nginx and tracegate (and direct).")
    ap.add_argument("--streams", default="2000,5000",
                    help="concurrent stream counts, comma-separated (default 2000,5000)")
    ap.add_argument("--rounds", type=int, default=3, help="measurement rounds (default 3)")
    ap.add_argument("--events", type=int, default=20, help="data: events per stream (default 20)")
    ap.add_argument("--gap-ms", type=float, default=250, help="ms between events (default 250)")
    ap.add_argument("--ramp", default="2000/s",
                    help="how connections are opened: R/s (default 2000/s: 1 s for 2,000 streams, "
                         "2.5 s for 5,000) or a number of seconds for every stream count")
    ap.add_argument("--warmup-streams", type=int, default=500,
                    help="streams of the warm-up run per target (default 500; 0: none)")
    ap.add_argument("--run-warmup", type=int, default=100,
                    help="streams (events 10 ms apart) that warm each new proxy process before a "
                         "measured run (default 100; 0: none)")
    ap.add_argument("--reuse-proxies", action="store_true",
                    help="keep one process per proxy for the whole run instead of a new one per "
                         "measured run (then a run's baseline RSS includes memory the allocator "
                         "kept from earlier runs)")
    ap.add_argument("--settle", type=float, default=1.0,
                    help="seconds of quiet before each run (closed connections go away, "
                         "baseline RSS is read; default 1)")
    ap.add_argument("--trace-wait", type=float, default=30,
                    help="seconds a tracegate target may take after the client exits to write the "
                         "run's traces to its file (default 30)")
    ap.add_argument("--proxy-bin", default=os.path.join(REPO, ".build-static", "release",
                                                        "tracegate"),
                    help="tracegate binary (default .build-static/release/tracegate; not built "
                         "here)")
    ap.add_argument("--out-dir", default=os.path.join(REPO, "bench-results"),
                    help="where chat-<timestamp>.md and .json go (default bench-results/)")
    ap.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (configs, logs)")
    ap.add_argument("--tracegate-variant", action="append", default=[], metavar="LABEL=FLAGS",
                    help="also measure tracegate with FLAGS added to its defaults, as the row "
                         "tracegate-LABEL, e.g. tuned='--access-log off --trace-file=' (forwarding "
                         "alone) or 1-loop='--threads 1'; repeatable. Without a --trace-file of "
                         "its own it writes traces to its own file; a trace file's lines are "
                         "counted. Shown beside the checked rows, not checked. FLAGS may not set "
                         "the addresses, the spool dir or an MLflow server")
    ap.add_argument("--nginx-auto", action="store_true",
                    help="also measure nginx with `worker_processes auto` (one worker per CPU, as "
                         "Debian's packaged nginx.conf has it, and as many as tracegate's default "
                         "event loops); the checks stay against the 1-worker nginx")
    m = ap.add_argument_group("MLflow export (off unless --mlflow)")
    m.add_argument("--mlflow", action="store_true",
                   help="also measure tracegate exporting to a local MLflow server (SQLite, 1 worker)")
    m.add_argument("--mlflow-bin", default=None,
                   help="mlflow executable (default: .venv/bin/mlflow, /tmp/mlflow-venv/bin/mlflow, "
                        "PATH)")
    m.add_argument("--mlflow-drain", type=float, default=180,
                   help="seconds the MLflow target may take after the client exits until all the "
                        "run's traces are in MLflow with their trace info (default 180; also ends "
                        "after 20 s without progress)")
    a = ap.parse_args(argv)
    try:
        a.stream_counts = [int(x) for x in a.streams.split(",") if x.strip()]
        a.ramp_s = parse_ramp(a.ramp)
    except ValueError as e:
        ap.error(f"--streams / --ramp: {e}")
    a.variants = []
    for spec in a.tracegate_variant:
        label, sep, text = spec.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", label):
            ap.error(f"--tracegate-variant {spec!r}: expected LABEL=FLAGS, LABEL of letters, "
                     "digits, '.', '_' or '-'")
        name = f"tracegate-{label}"
        if name in {"tracegate-mlflow"} | {v[0] for v in a.variants}:
            ap.error(f"--tracegate-variant: the label {label!r} is taken")
        try:
            flags = shlex.split(text)
            trace_file_flag(flags)
        except ValueError as e:
            ap.error(f"--tracegate-variant {spec!r}: {e}")
        taken = sorted({f.split("=")[0] for f in flags} & VARIANT_FLAGS_SET_HERE)
        if taken:
            ap.error(f"--tracegate-variant {spec!r}: {', '.join(taken)} is set by the benchmark")
        a.variants.append((name, flags))
    if not a.stream_counts or min(a.stream_counts) < 1 or a.rounds < 1 or a.events < 1 \
            or a.gap_ms < 0 or a.warmup_streams < 0 or a.run_warmup < 0:
        ap.error("--streams, --rounds and --events must be >= 1, --gap-ms, --warmup-streams "
                 "and --run-warmup >= 0")
    return a


# ---------- targets ----------

# Flags the benchmark gives every tracegate target itself (a variant's FLAGS may not), and the
# MLflow server, which only the tracegate-mlflow target's trace counting knows how to wait for.
VARIANT_FLAGS_SET_HERE = {"--upstream", "--listen", "--admin-listen", "--spool-dir",
                          "--mlflow-tracking-uri"}


def trace_file_flag(flags: list[str]) -> str | None:
    """The value of `--trace-file X` or `--trace-file=X` in `flags` (None when absent; "" turns
    capture to a file off). ValueError when the flag is last without a value."""
    value = None
    for i, f in enumerate(flags):
        if f == "--trace-file":
            if i + 1 == len(flags):
                raise ValueError("--trace-file without a value")
            value = flags[i + 1]
        elif f.startswith("--trace-file="):
            value = f.split("=", 1)[1]
    return value


class Target:
    """One configuration measured: the port the client connects to and the process to measure.

    kind: direct | nginx | tracegate (traces to `trace_file`, if it has one: a variant may not) |
    tracegate-mlflow. `start(tag)` starts the proxy (its output in <tmp>/<name>-<tag>.out) and
    returns its process; `restart` replaces the running one with a new one."""

    def __init__(self, name: str, kind: str, port: int, start=None,
                 admin_port: int | None = None, trace_file: str | None = None):
        self.name, self.kind, self.port, self.start = name, kind, port, start
        self.admin_port, self.trace_file = admin_port, trace_file
        self.experiment_id: str | None = None
        self.trace_offset = 0  # bytes of the trace file already counted
        self.starts = 0
        self.proc: procs.Proc | None = None
        if start:
            self.restart(None)

    def restart(self, p: procs.Procs | None) -> None:
        if p is not None and self.proc is not None:
            p.stop(self.proc)
        self.starts += 1
        self.proc = self.start(str(self.starts))

    def pids(self) -> list[int]:
        return procs.tree(self.proc.pid) if self.proc else []

    @property
    def traced(self) -> bool:
        """Whether its traces are counted: the MLflow target's, and a trace file's."""
        return (self.kind == "tracegate-mlflow"
                or (self.kind == "tracegate" and bool(self.trace_file)))


def child_env(tmp: str) -> dict:
    """The environment without tracegate's, MLflow's or OpenTelemetry's settings."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("TRACEGATE_", "MLFLOW_", "OTEL_"))}
    env["TMPDIR"] = tmp
    return env


def start_origin(p: procs.Procs, tmp: str, a, ports: list[int], control: int) -> procs.Proc:
    argv = [shutil.which("node") or "node", os.path.join(BENCH_DIR, "chat_origin.js"),
            "--control-port", str(control), "--ports", ",".join(map(str, ports)),
            "--events", str(a.events), "--gap-ms", f"{a.gap_ms:g}"]
    proc = p.spawn("chat origin", argv, os.path.join(tmp, "origin.out"), cwd=tmp,
                   env=child_env(tmp))
    procs.wait_http_200(control, "/healthz", proc, START_TIMEOUT_S)
    for port in ports:
        procs.wait_port(port, proc, START_TIMEOUT_S)
    return proc


def nginx_target(p: procs.Procs, tmp: str, name: str, port: int, origin_port: int,
                 max_streams: int, access_log: bool, workers: int | str = 1) -> Target:
    """nginx as benchmarks/nginx.py's reference proxy, with room for max_streams streams
    (client + upstream connection each); `access_log`: nginx's default combined log to a file."""
    d = os.path.join(tmp, name)
    conf = nginx.proxy_conf(d, port, "127.0.0.1", origin_port, workers=workers,
                            connections=2 * max_streams + 1024,
                            access_log=os.path.join(d, "access.log") if access_log else None)
    argv = nginx.write_instance(d, conf)

    def start(tag: str) -> procs.Proc:
        proc = p.spawn(name, argv, os.path.join(tmp, f"{name}-{tag}.out"), cwd=tmp,
                       env=child_env(tmp))
        procs.wait_port(port, proc, START_TIMEOUT_S)
        return proc

    return Target(name, "nginx", port, start)


def tracegate_target(p: procs.Procs, tmp: str, a, name: str, origin_port: int,
                     extra: list[str], mlflow: bool = False) -> Target:
    """tracegate with its defaults but for the addresses, spool dir and `extra`. Its stdout
    (the text access log) and stderr go to <tmp>/<name>-<n>.out."""
    port, admin = procs.free_ports(2)
    argv = [a.proxy_bin, "run", "--upstream", f"http://127.0.0.1:{origin_port}",
            "--listen", f"127.0.0.1:{port}", "--admin-listen", f"127.0.0.1:{admin}",
            "--spool-dir", os.path.join(tmp, f"spool-{name}")] + extra
    target: Target | None = None

    def start(tag: str) -> procs.Proc:
        proc = p.spawn(name, argv, os.path.join(tmp, f"{name}-{tag}.out"), cwd=tmp,
                       env=child_env(tmp))
        procs.wait_http_200(admin, "/healthz", proc, START_TIMEOUT_S)
        procs.wait_port(port, proc, START_TIMEOUT_S)
        if mlflow:
            exp = mlflow_bench.wait_experiment_id(proc, 60)
            if target is not None and target.experiment_id not in (None, exp):
                raise RuntimeError(f"{name} changed experiment: {target.experiment_id} -> {exp}")
        return proc

    kind = "tracegate-mlflow" if mlflow else "tracegate"
    trace_file = trace_file_flag(extra)
    if trace_file:
        trace_file = os.path.join(tmp, trace_file)  # tracegate runs in tmp; an absolute path stays
    target = Target(name, kind, port, start, admin, trace_file)
    if mlflow:
        target.experiment_id = mlflow_bench.wait_experiment_id(target.proc, 60)
    return target


def start_targets(p: procs.Procs, tmp: str, a, stamp: str,
                  mlflow: mlflow_bench.Server | None) -> tuple[list[Target], procs.Proc, int]:
    """The origin and every target. Returns (targets, origin process, origin control port)."""
    names = (["direct", "nginx", "nginx-log"] + (["nginx-auto"] if a.nginx_auto else [])
             + ["tracegate"] + (["tracegate-mlflow"] if mlflow else [])
             + [name for name, _ in a.variants])
    nginxes = sum(1 for n in names if n.startswith("nginx"))
    ports = iter(procs.free_ports(len(names) + 1 + nginxes))  # origin ports, control, nginx ports
    origin_ports = {n: next(ports) for n in names}
    control = next(ports)
    origin = start_origin(p, tmp, a, list(origin_ports.values()), control)
    max_n = max(a.stream_counts + [a.warmup_streams])
    targets = [Target("direct", "direct", origin_ports["direct"]),
               nginx_target(p, tmp, "nginx", next(ports), origin_ports["nginx"], max_n, False),
               nginx_target(p, tmp, "nginx-log", next(ports), origin_ports["nginx-log"], max_n,
                            True)]
    if a.nginx_auto:
        targets.append(nginx_target(p, tmp, "nginx-auto", next(ports), origin_ports["nginx-auto"],
                                    max_n, False, workers="auto"))
    targets.append(tracegate_target(p, tmp, a, "tracegate", origin_ports["tracegate"],
                                    ["--trace-file", os.path.join(tmp, "tracegate-traces.jsonl")]))
    if mlflow is not None:
        targets.append(tracegate_target(
            p, tmp, a, "tracegate-mlflow", origin_ports["tracegate-mlflow"],
            ["--mlflow-tracking-uri", mlflow.uri,
             "--mlflow-experiment-name", f"chat-streams-{stamp}"], mlflow=True))
    for name, flags in a.variants:
        own_file = trace_file_flag(flags) is not None
        trace_file = [] if own_file else ["--trace-file", os.path.join(tmp, f"{name}-traces.jsonl")]
        targets.append(tracegate_target(p, tmp, a, name, origin_ports[name], trace_file + flags))
    return targets, origin, control


# ---------- measurement helpers ----------

class RssSampler(threading.Thread):
    """Samples the summed VmRSS of a fixed set of pids every RSS_INTERVAL_S; keeps the peak."""

    def __init__(self, pids: list[int]):
        super().__init__(daemon=True)
        self.pids, self.peak_kib, self.samples = pids, 0, 0
        self.halt = threading.Event()  # not `_stop`: threading.Thread has a method of that name

    def run(self) -> None:
        while not self.halt.is_set():
            self.peak_kib = max(self.peak_kib, procs.mem_kib(self.pids)["rss_kib"])
            self.samples += 1
            self.halt.wait(RSS_INTERVAL_S)

    def stop(self) -> int:
        self.halt.set()
        self.join(5)
        return max(self.peak_kib, procs.mem_kib(self.pids)["rss_kib"])


def metrics_delta(before: dict, after: dict) -> dict:
    """Counter growth over a run (gauges: the value after), only what is non-zero."""
    out = {}
    for k, v in after.items():
        d = v if k in ("requests_in_flight", "streams_open", "spool_bytes", "spool_traces",
                       "export_queue_traces") else v - before.get(k, 0.0)
        if d and not k.endswith(("_sum", "_count")):
            out[k] = int(d) if float(d).is_integer() else d
    return out


def count_new_lines(t: Target) -> int:
    """Complete lines appended to the trace file since the last call; a line still being
    written is left for the next call (the offset stops after the last newline)."""
    try:
        with open(t.trace_file, "rb") as f:
            f.seek(t.trace_offset)
            n, pos, end = 0, t.trace_offset, t.trace_offset
            while block := f.read(1 << 20):
                nl = block.rfind(b"\n")
                if nl >= 0:
                    n += block.count(b"\n")
                    end = pos + nl + 1
                pos += len(block)
            t.trace_offset = end
            return n
    except FileNotFoundError:
        return 0


class TraceCount:
    """The traces a target produced since `start()`: lines of its trace file, or traces in its
    MLflow experiment (read-only counts in MLflow's SQLite file, which costs the server nothing).

    `counts()` gives (stored, delivered). For the trace file both are the lines. For MLflow,
    stored = traces whose spans MLflow holds, delivered = those that also have their trace info
    (client_request_id, set by tracegate's StartTraceV3 call, one per trace, which comes later):
    until then tracegate still sends MLflow work, which would load the next runs."""

    def __init__(self, t: Target, mlflow: mlflow_bench.Server | None):
        self.t, self.mlflow = t, mlflow
        self.lines = 0
        self.base = (0, 0)

    def start(self) -> None:
        if self.t.kind == "tracegate":
            count_new_lines(self.t)  # skip whatever came before
            self.lines = 0
        else:
            self.base = self.mlflow.db_counts(self.t.experiment_id)

    def counts(self) -> tuple[int, int]:
        if self.t.kind == "tracegate":
            self.lines += count_new_lines(self.t)
            return self.lines, self.lines
        n, crid = self.mlflow.db_counts(self.t.experiment_id)
        return n - self.base[0], crid - self.base[1]

    def wait(self, want: int, limit_s: float, stall_s: float) -> tuple[int, int, float]:
        """Poll until `want` traces are delivered, `limit_s` seconds, or `stall_s` seconds
        without progress. Returns (stored, delivered, seconds waited)."""
        t0 = time.monotonic()
        last, last_t = None, t0
        while True:
            c = self.counts()
            now = time.monotonic()
            if c != last:
                last, last_t = c, now
            if c[1] >= want or now - t0 >= limit_s or now - last_t >= stall_s:
                return c[0], c[1], now - t0
            time.sleep(0.1)


def trace_limits(a, t: Target) -> tuple[float, float]:
    """(limit, stall) seconds for TraceCount.wait on target t."""
    return (a.mlflow_drain, 20.0) if t.kind == "tracegate-mlflow" else (a.trace_wait, 5.0)


def run_client(p: procs.Procs, tmp: str, port: int, n: int, ramp_s: float, a, tag: str,
               gap_ms: float | None = None) -> dict:
    """Run chat_client.js to completion; its JSON result (or {"error": ...}). `gap_ms`: ask the
    origin for another gap than --gap-ms."""
    timeout_s = ramp_s + a.events * (a.gap_ms if gap_ms is None else gap_ms) / 1000 + 60
    argv = [shutil.which("node") or "node", os.path.join(BENCH_DIR, "chat_client.js"),
            "--port", str(port), "--streams", str(n), "--ramp-s", f"{ramp_s:g}",
            "--events", str(a.events), "--timeout-s", f"{timeout_s:g}"]
    if gap_ms is not None:
        argv += ["--gap-ms", f"{gap_ms:g}"]
    out = os.path.join(tmp, f"client-{tag}.out")
    proc = p.spawn(f"client {tag}", argv, out, cwd=tmp, env=child_env(tmp))
    try:
        proc.popen.wait(timeout=timeout_s + 30)
    except subprocess.TimeoutExpired:
        pass  # stopped below; no JSON line, so reported as an error
    p.stop(proc)
    text = proc.log_tail(8192).strip().splitlines()
    try:
        return json.loads(text[-1])
    except (IndexError, json.JSONDecodeError):
        return {"error": f"client gave no result (exit {proc.popen.returncode}): "
                         f"{' | '.join(text[-5:])}"}


def self_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


# ---------- one run ----------

def fresh_proxy(p: procs.Procs, tmp: str, a, t: Target, mlflow, tag: str) -> None:
    """Replace t's proxy with a new process and warm it with a short run (a.run_warmup streams,
    events 10 ms apart), traces written, so that a measured run starts from the same state every
    time: no memory kept by the allocator from an earlier, larger run in its baseline."""
    t.restart(p)
    if a.run_warmup == 0:
        return
    counter = TraceCount(t, mlflow) if t.traced else None
    if counter:
        counter.start()
    c = run_client(p, tmp, t.port, a.run_warmup, 0.05, a, f"{tag}-warm", gap_ms=10)
    if c.get("complete") != a.run_warmup:
        raise RuntimeError(f"short warm-up of a new {t.name}: {c.get('complete')} of "
                           f"{a.run_warmup} streams complete: {c.get('failures') or c.get('error')}")
    if counter:
        counter.wait(a.run_warmup, *trace_limits(a, t))


def measure(p: procs.Procs, tmp: str, a, t: Target, n: int, origin: procs.Proc,
            origin_control: int, mlflow: mlflow_bench.Server | None, tag: str,
            fresh: bool = True) -> dict:
    """One run of n streams against t; see the module docstring for what is recorded."""
    if fresh and t.proc is not None and not a.reuse_proxies:
        fresh_proxy(p, tmp, a, t, mlflow, tag)
    time.sleep(a.settle)
    pids = t.pids()
    mlf_pids = mlflow.pids() if mlflow else []
    counter = TraceCount(t, mlflow) if t.traced else None
    if counter:
        counter.start()
    m0 = procs.tracegate_metrics(t.admin_port) if t.admin_port is not None else {}
    procs.http_get(origin_control, "/stats")  # reset the origin's timer figures
    base_kib = procs.mem_kib(pids)["rss_kib"] if pids else None
    sampler = RssSampler(pids) if pids else None
    origin_pids = procs.tree(origin.pid)
    cpu0 = procs.cpu_seconds(pids)
    origin0, mlf0 = procs.cpu_seconds(origin_pids), procs.cpu_seconds(mlf_pids)
    sys0, me0, w0 = procs.system_busy_seconds(), self_cpu(), time.monotonic()
    if sampler:
        sampler.start()

    ramp_s = a.ramp_s(n)
    client = run_client(p, tmp, t.port, n, ramp_s, a, tag)
    w_client = time.monotonic() - w0
    cpu_client_end = procs.cpu_seconds(pids)
    r: dict = {"target": t.name, "streams": n, "ramp_s": ramp_s, "client": client}
    if counter:
        at_end = counter.counts()[0]
        stored, delivered, waited = counter.wait(n, *trace_limits(a, t))
        r.update({"traced": stored, "traced_delivered": delivered,
                  "traced_at_client_end": at_end, "trace_wait_s": waited})

    wall = time.monotonic() - w0
    cpu1 = procs.cpu_seconds(pids)
    origin_cpu = procs.cpu_seconds(origin_pids) - origin0
    mlf_cpu = procs.cpu_seconds(mlf_pids) - mlf0
    busy = procs.system_busy_seconds() - sys0
    ours = (cpu1 - cpu0) + origin_cpu + mlf_cpu + (self_cpu() - me0) + client.get("cpu_s", 0)
    r.update({
        "wall_s": wall, "client_wall_s": w_client,
        "origin": json.loads(procs.http_get(origin_control, "/stats")), "origin_cpu_s": origin_cpu,
        # CPU of everything else on the machine, in % of one core: interference.
        "bg_cpu_pct": max(0.0, (busy - ours) / wall * 100),
    })
    if pids:
        peak = sampler.stop()
        r.update({"cpu_s": cpu1 - cpu0, "cpu_s_streams": cpu_client_end - cpu0,
                  "rss_base_kib": base_kib, "rss_peak_kib": peak,
                  "rss_samples": sampler.samples})
    if t.admin_port is not None:
        r["metrics"] = metrics_delta(m0, procs.tracegate_metrics(t.admin_port))
    if mlflow:
        r["mlflow_cpu_s"] = mlf_cpu
    return r


def fmt_run(r: dict) -> str:
    c = r["client"]
    if "error" in c:
        return f"ERROR {c['error']}"
    d = c["delay_us"]
    s = (f"complete {c['complete']}/{r['streams']}  delay p50 {d['p50'] / 1000:6.2f} p99 "
         f"{d['p99'] / 1000:7.2f} p99.9 {d['p999'] / 1000:7.2f} ms")
    if "cpu_s" in r:
        per_stream_kib = (r["rss_peak_kib"] - r["rss_base_kib"]) / r["streams"]
        s += (f"  cpu {r['cpu_s']:5.2f}s {r['cpu_s'] / r['streams'] * 1e6:5.0f}us/stream  rss "
              f"{r['rss_peak_kib'] / 1024:6.1f} MiB (+{per_stream_kib:4.1f} KiB/stream)")
    if "traced" in r:
        s += f"  traced {r['traced']}"
    s += (f"  [client cpu {c['cpu_s']:.1f}s lag p99 {c['loop_lag_us']['p99'] / 1000:.0f} ms, "
          f"origin late p99 {(r['origin']['timer_late_us']['p99'] or 0) / 1000:.0f} ms, "
          f"bg {r['bg_cpu_pct']:.0f}%]")
    if c["failures"]:
        s += f"  !! failures {c['failures']}"
    return s


# ---------- the whole run ----------

def warm_up(p: procs.Procs, tmp: str, a, targets: list[Target], origin: procs.Proc,
            control: int, mlflow) -> list[dict]:
    """One shorter run per target; every stream must complete (else the target is broken)."""
    out = []
    if a.warmup_streams == 0:
        return out
    for t in targets:
        r = measure(p, tmp, a, t, a.warmup_streams, origin, control, mlflow,
                    f"warmup-{t.name}", fresh=False)
        log(f"[warm-up] {t.name:<16} {fmt_run(r)}")
        c = r["client"]
        if c.get("complete") != a.warmup_streams:
            raise RuntimeError(f"warm-up of {t.name}: {c.get('complete')} of "
                               f"{a.warmup_streams} streams complete: "
                               f"{c.get('failures') or c.get('error')}")
        out.append(r)
    return out


def dead(p: procs.Procs) -> str | None:
    """Why the run cannot go on (a process it started has exited), or None."""
    for pr in p.procs:
        if not pr.alive():
            return (f"{pr.name} exited with code {pr.popen.returncode} during the run. "
                    f"Last lines of its output:\n{pr.log_tail(1500)}")
    return None


def rounds(p: procs.Procs, tmp: str, a, targets: list[Target], origin: procs.Proc,
           control: int, mlflow) -> tuple[list[dict], str | None]:
    runs: list[dict] = []
    for rnd in range(1, a.rounds + 1):
        k = (rnd - 1) % len(targets)
        order = targets[k:] + targets[:k]
        for n in a.stream_counts:
            for t in order:
                why = dead(p)
                if why:
                    return runs, why
                r = measure(p, tmp, a, t, n, origin, control, mlflow, f"{rnd}-{n}-{t.name}")
                r["round"] = rnd
                runs.append(r)
                log(f"[{rnd}/{a.rounds}] n={n:<5} {t.name:<16} {fmt_run(r)}")
    return runs, None


def estimate_s(a, n_targets: int) -> float:
    stream_s = a.events * a.gap_ms / 1000
    restart = 0 if a.reuse_proxies else 1.5
    per_round = sum(a.settle + a.ramp_s(n) + stream_s + 1.0 + restart for n in a.stream_counts)
    warm = a.settle + a.ramp_s(a.warmup_streams) + stream_s + 1.0 if a.warmup_streams else 0
    return n_targets * (per_round * a.rounds + warm)


def binary_info(path: str) -> str:
    st = os.stat(path)
    when = dt.datetime.fromtimestamp(st.st_mtime).strftime("%Y-%m-%d %H:%M")
    return f"{os.path.relpath(path, REPO)} ({st.st_size / 1e6:.1f} MB, built {when})"


def raise_nofile() -> int:
    """Raise this process's (and so its children's) open-file limit to the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def idle_check(seconds: float = 2.0) -> float:
    """CPU the machine spends (all processes) over `seconds` before anything starts, in % of one
    core: other work on the machine shows in every figure, so it is logged and reported."""
    b0, t0 = procs.system_busy_seconds(), time.monotonic()
    time.sleep(seconds)
    return (procs.system_busy_seconds() - b0) / (time.monotonic() - t0) * 100


def check_tools(a) -> str | None:
    if not shutil.which("node"):
        return "node not found: apt-get install -y nodejs"
    if not os.path.exists(nginx.NGINX_BIN):
        return "nginx not found: apt-get install -y nginx"
    if not os.access(a.proxy_bin, os.X_OK):
        return f"{a.proxy_bin} is not an executable (build it first; this script does not)"
    need = 2 * max(a.stream_counts + [a.warmup_streams]) + 1024
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < need:
        return f"open-file limit {resource.getrlimit(resource.RLIMIT_NOFILE)[0]} < {need} needed"
    return None


def write_outputs(a, results: dict, stamp: str) -> None:
    summary = chat_report.summarize(results)
    results["summary"] = summary
    md = chat_report.markdown(results, summary)
    os.makedirs(a.out_dir, exist_ok=True)
    md_path = os.path.join(a.out_dir, f"chat-{stamp}.md")
    json_path = os.path.join(a.out_dir, f"chat-{stamp}.json")
    with open(md_path, "w") as f:
        f.write(md + "\n")
    with open(json_path, "w") as f:
        json.dump(results, f, indent=1, default=str)
    print()
    print(chat_report.text_summary(results, summary))
    print()
    print(md)
    print(f"written: {os.path.relpath(md_path)} and {os.path.relpath(json_path)}")


def run(a) -> int:
    started = dt.datetime.now()
    stamp = started.strftime("%Y%m%d-%H%M%S")
    a.proxy_bin = os.path.abspath(a.proxy_bin)
    nofile = raise_nofile()
    problem = check_tools(a)
    if problem:
        log(problem)
        return 2
    mlflow_bin = mlflow_bench.find_mlflow(REPO, a.mlflow_bin) if a.mlflow else None
    if a.mlflow and not mlflow_bin:
        log("mlflow not found: pass --mlflow-bin, or python3 -m venv .venv && "
            ".venv/bin/pip install mlflow==3.17.2")
        return 2

    p = procs.Procs()
    tmp = tempfile.mkdtemp(prefix="tracegate-chat-")
    os.chmod(tmp, 0o755)  # nginx workers may run as another user

    def on_signal(signum, _frame):
        raise SystemExit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    try:
        meta = {
            "started": started.strftime("%Y-%m-%d %H:%M"), "argv": sys.argv[1:],
            "streams": a.stream_counts, "rounds": a.rounds, "events": a.events,
            "gap_ms": a.gap_ms, "ramp": a.ramp,
            "ramp_s": {str(n): a.ramp_s(n) for n in a.stream_counts},
            "warmup_streams": a.warmup_streams, "settle_s": a.settle,
            "run_warmup": a.run_warmup, "reuse_proxies": a.reuse_proxies,
            "proxy_bin": binary_info(a.proxy_bin), "machine": machine_info(),
            "nginx_version": nginx.nginx_version(), "git": git_desc(),
            "node_version": _node_version(), "nofile": nofile,
            "busy_before_pct": idle_check(),
            "variants": dict(a.variants),
        }
        if meta["busy_before_pct"] > 20:
            log(f"note: the machine was already busy before the start "
                f"({meta['busy_before_pct']:.0f}% of one core): the figures will show it")
        mlflow = None
        if a.mlflow:
            meta["mlflow_version"] = mlflow_bench.mlflow_version(mlflow_bin)
            log(f"temp dir {tmp}; starting MLflow {meta['mlflow_version']} (SQLite, 1 worker)")
            mlflow = mlflow_bench.start_server(p, tmp, mlflow_bin, child_env(tmp))
        log(f"temp dir {tmp}; starting the origin and the proxies")
        targets, origin, control = start_targets(p, tmp, a, stamp, mlflow)
        meta["targets"] = [t.name for t in targets]
        log(f"targets: {', '.join(f'{t.name}=:{t.port}' for t in targets)}; about "
            f"{estimate_s(a, len(targets)) / 60:.1f} min (more with MLflow's drains)")
        results = {"meta": meta, "warmup": warm_up(p, tmp, a, targets, origin, control, mlflow)}
        runs, aborted = rounds(p, tmp, a, targets, origin, control, mlflow)
        results["runs"] = runs
        if aborted:
            results["aborted"] = aborted
            log(f"ABORTED: {aborted}")
        results["meta"]["total_s"] = (dt.datetime.now() - started).total_seconds()
        write_outputs(a, results, stamp)
        log(f"total {results['meta']['total_s'] / 60:.1f} min")
        return 1 if aborted else 0
    except RuntimeError as e:
        log(f"error: {e}")
        return 1
    finally:
        procs.clean_up(p, tmp, a.keep_tmp, log)


def _node_version() -> str:
    try:
        return subprocess.run([shutil.which("node") or "node", "--version"], capture_output=True,
                              text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"


def main() -> None:
    if sys.version_info < (3, 11):
        sys.exit("benchmarks/chat_streams needs Python 3.11+")
    a = parse_args(sys.argv[1:])
    try:
        sys.exit(run(a))
    except KeyboardInterrupt:
        log("interrupted; stopped every process started")
        sys.exit(130)


if __name__ == "__main__":
    main()
