"""tracegate benchmark orchestrator (Python 3.11 stdlib only). Entry point: benchmarks/run.

One run, on loopback only, with ports picked free and every file in a temp dir:
1. builds tracegate (`swift build -c release --product tracegate`) unless told not to;
2. starts the origins: nginx `return 200` (chat-completion JSON) and the SSE origin;
3. starts the proxies, each twice (one instance in front of each origin): nginx (reference,
   1 worker) without and with its access log; tracegate tuned (no access log, no capture), with
   capture only, with every setting at its default, and --threads 1;
4. checks every target returns the origin's body unchanged, then warms each up with wrk;
5. per round, in a rotating order: wrk c=32 then c=1 against every target (direct,
   nginx, tracegate...; `-s latency.lua` adds p99.9), reading the proxy's CPU (utime+stime
   delta) and RSS from /proc;
   then the SSE checks (time to first event, separate events, gaps) for every target;
6. prints a summary and Markdown, and writes bench-results/<timestamp>.md and .json.

With --mlflow (off by default) it also starts a local MLflow server (mlflow_bench.py) and:
- adds a target "tracegate-mlflow": tracegate with capture and export to that server, measured
  in the same rounds; the server's CPU is read over every wrk run (interference), and the
  exporter's counters are read from tracegate's `trace export finished` line at the end;
- adds a target "tracegate-mlflow-down": the same with the tracking server unreachable, so every
  trace goes to the on-disk spool (tracing trouble must not show in the forwarding figures);
- before the warm-up, measures export throughput: pre-built OTLP batches posted directly vs
  the same number of requests sent through tracegate, alternately, fresh experiment each time.

Every process it started is stopped on exit, including on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import os
import platform
import re
import resource
import shlex
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import cpu_load  # noqa: E402
import nginx  # noqa: E402
import procs  # noqa: E402
import mlflow_bench  # noqa: E402
import report  # noqa: E402
import sse_client  # noqa: E402
import wrk  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
WRK_PATH = "/v1/chat/completions?model=x&n=1"
SSE_PATH = "/v1/chat/completions?stream=true&n={n}&gap_ms={gap:g}"
BUILD_TIMEOUT_S = 45 * 60
START_TIMEOUT_S = 30


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="benchmarks/run",
        description="Benchmark tracegate against direct-to-origin and an nginx reverse proxy.")
    ap.add_argument("--rounds", type=int, default=5, help="measurement rounds (default 5)")
    ap.add_argument("--duration", type=float, default=10, help="seconds per wrk run (default 10)")
    ap.add_argument("--warmup", type=float, default=3, help="seconds of wrk warm-up per target")
    ap.add_argument("--sse-passes", type=int, default=2,
                    help="full 20-event streams per target per round (default 2)")
    ap.add_argument("--sse-tries", type=int, default=15,
                    help="time-to-first-event tries per target per round (default 15)")
    ap.add_argument("--no-threads1", action="store_true",
                    help="skip the tracegate --threads 1 variant (saves ~30%% of the time)")
    ap.add_argument("--no-build", action="store_true", help="do not run swift build")
    ap.add_argument("--cpu-load", type=cpu_load.share_argument, default=0, metavar="SHARE",
                    help="keep SHARE of one CPU busy with a normal-priority process during every "
                         "measurement (cpu_load.py), as a service or tracking server on the same "
                         "machine would (default 0: none)")
    ap.add_argument("--proxy-cmd", default=None,
                    help="command used instead of .build-static/release/tracegate (the tracegate flags "
                         "are appended); implies --no-build. For development: "
                         "--proxy-cmd 'python3 benchmarks/nginx.py standin'")
    ap.add_argument("--out-dir", default=os.path.join(REPO, "bench-results"),
                    help="where <timestamp>.md and .json go (default bench-results/)")
    ap.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (configs, logs)")
    m = ap.add_argument_group("MLflow export (off unless --mlflow)")
    m.add_argument("--mlflow", action="store_true",
                   help="also measure tracegate with trace export to a local MLflow server: a "
                        "data-plane target and export throughput (adds about 5 minutes)")
    m.add_argument("--mlflow-bin", default=None,
                   help="mlflow executable (default: .venv/bin/mlflow, /tmp/mlflow-venv/bin/mlflow, "
                        "PATH)")
    m.add_argument("--mlflow-traces", type=int, default=1000,
                   help="traces per export-throughput measurement, M (default 1000)")
    m.add_argument("--mlflow-batch", type=int, default=100,
                   help="traces per OTLP request, N: tracegate's --export-batch-size and the "
                        "direct batches (default 100, tracegate's default)")
    m.add_argument("--mlflow-runs", type=int, default=5,
                   help="export-throughput measurements of each kind, alternating (default 5)")
    m.add_argument("--mlflow-concurrency", type=int, default=8,
                   help="clients sending the M requests through tracegate (default 8)")
    m.add_argument("--mlflow-count", choices=("db", "search"), default="db",
                   help="how arrival in MLflow is polled: read-only count in its SQLite file "
                        "(default; costs the server nothing) or the REST search API (loads the "
                        "1-worker server). Final counts are always checked with the search API")
    m.add_argument("--mlflow-deadline", type=float, default=120,
                   help="seconds one export measurement may take (default 120)")
    m.add_argument("--mlflow-drain", type=float, default=30,
                   help="seconds the data-plane exporter may take to drain after SIGTERM before "
                        "it is killed (default 30)")
    a = ap.parse_args(argv)
    if a.rounds < 1 or a.duration < 1 or a.sse_passes < 1 or a.sse_tries < 1:
        ap.error("--rounds, --duration, --sse-passes and --sse-tries must be >= 1")
    if a.mlflow and (a.mlflow_runs < 1 or a.mlflow_batch < 1 or a.mlflow_concurrency < 1
                     or a.mlflow_traces < a.mlflow_batch or a.mlflow_traces % a.mlflow_batch):
        ap.error("--mlflow-runs, --mlflow-batch and --mlflow-concurrency must be >= 1, and "
                 "--mlflow-traces a multiple of --mlflow-batch")
    return a


def _cmd_out(cmd: list[str], cwd: str | None = None) -> str:
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=cwd)
        return (p.stdout or p.stderr).strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def machine_info() -> str:
    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
        with open("/proc/meminfo") as f:
            mem_gib = int(f.readline().split()[1]) / 1024 / 1024
    except OSError:
        mem_gib = 0
    return f"{os.cpu_count()} vCPU ({model}), {mem_gib:.0f} GiB, Linux {platform.release()}"


def git_desc() -> str:
    rev = _cmd_out(["git", "rev-parse", "--short", "HEAD"], cwd=REPO)
    if not rev or "fatal" in rev or "unknown" in rev:
        rev = "(no commit)"
    dirty = _cmd_out(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO)
    return rev + (" + local changes" if dirty else "")


# The binary as the Dockerfile builds it: release, Swift runtime linked statically (its calls are
# direct, not through the dynamic linker; ~5% more throughput here), and SwiftNIO compiled without
# run-time exclusivity checks, as tracegate's own modules are (4-7% less CPU per request). Its own
# build directory, so the debug and dynamically linked builds next to it are not rebuilt.
BUILD_DIR = ".build-static"
BUILD_CMD = ["swift", "build", "-c", "release", "--product", "tracegate", "--static-swift-stdlib",
             "-Xswiftc", "-enforce-exclusivity=unchecked", "--scratch-path", BUILD_DIR]


def build(p: procs.Procs, tmp: str) -> None:
    log_path = os.path.join(tmp, "swift-build.log")
    log(f"building: {' '.join(BUILD_CMD)} (log: {log_path})")
    t0 = time.monotonic()
    proc = p.spawn("swift build", BUILD_CMD, log_path, cwd=REPO)
    try:
        rc = proc.popen.wait(timeout=BUILD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        rc = None
    p.stop(proc)
    if rc != 0:
        raise RuntimeError(f"swift build failed ({'timeout' if rc is None else rc}):\n"
                           + proc.log_tail(4000))
    log(f"built in {time.monotonic() - t0:.0f}s")


class Target:
    """One configuration measured: where to send load, and which process to measure. `admin` is the
    admin port of a tracegate that captures traces: its counters say how many exchanges went untraced."""

    def __init__(self, name: str, port: int, sse_port: int, proc: procs.Proc | None,
                 admin: int | None = None):
        self.name, self.port, self.sse_port, self.proc = name, port, sse_port, proc
        self.admin = admin

    def pids(self) -> list[int]:
        return procs.tree(self.proc.pid) if self.proc else []


def _child_env(tmp: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACEGATE_")}
    env["TMPDIR"] = tmp
    return env


def _abs_argv(argv: list[str]) -> list[str]:
    """Make relative paths in a user-given command absolute (proxies run inside the temp dir)."""
    return [os.path.abspath(a) if not a.startswith("-") and os.sep in a and os.path.exists(a)
            else a for a in argv]


def start_all(a, p: procs.Procs, tmp: str, proxy_argv: list[str],
              mlflow: mlflow_bench.Server | None = None) -> tuple[list[Target], dict]:
    ports = iter(procs.free_ports(32))
    env = _child_env(tmp)
    started: dict = {}

    origin_port, sse_port = next(ports), next(ports)
    d = os.path.join(tmp, "nginx-origin")
    origin = p.spawn("nginx origin",
                     nginx.write_instance(d, nginx.origin_conf(d, origin_port)),
                     os.path.join(tmp, "nginx-origin.out"), cwd=tmp, env=env)
    sse = p.spawn("sse origin", [sys.executable, os.path.join(BENCH_DIR, "sse_origin.py"),
                                 "--listen", f"127.0.0.1:{sse_port}"],
                  os.path.join(tmp, "sse-origin.out"), cwd=tmp, env=env)
    procs.wait_port(origin_port, origin, START_TIMEOUT_S)
    procs.wait_http_200(sse_port, "/healthz", sse, START_TIMEOUT_S)
    started["origin"], started["sse_origin"] = origin, sse

    targets = [Target("direct", origin_port, sse_port, None)]

    def nginx_proxy(tag: str, upstream_port: int, access_log: bool = False) -> tuple[procs.Proc, int]:
        port = next(ports)
        d = os.path.join(tmp, f"nginx-proxy-{tag}")
        # With access_log: nginx's default `combined` format, one write() per request, to a file.
        conf = nginx.proxy_conf(d, port, "127.0.0.1", upstream_port,
                                access_log=os.path.join(d, "access.log") if access_log else None)
        pr = p.spawn(f"nginx proxy ({tag})", nginx.write_instance(d, conf),
                     os.path.join(tmp, f"nginx-proxy-{tag}.out"), cwd=tmp, env=env)
        procs.wait_port(port, pr, START_TIMEOUT_S)
        return pr, port

    # "nginx": no access log, the reference of the tuned tracegate. "nginx-log": the same with its
    # access log on, the reference of tracegate-defaults (which writes its own access log).
    for name, with_log in (("nginx", False), ("nginx-log", True)):
        main, main_port = nginx_proxy(f"{name}-main", origin_port, with_log)
        _, sse_proxy_port = nginx_proxy(f"{name}-sse", sse_port, with_log)
        targets.append(Target(name, main_port, sse_proxy_port, main))

    # The data plane alone: no access log and no trace capture. "tracegate-traced" turns capture
    # back on (traces to the trace file), still without an access log. "tracegate-defaults" runs
    # as a new user starts it: text access log on stdout (its .out file), traces to the trace file.
    tuned = ["--access-log", "off", "--trace-file="]

    def tracegate(tag: str, upstream_port: int, extra: list[str]) -> tuple[procs.Proc, int, int]:
        port, admin = next(ports), next(ports)
        # Its own working directory, so the default relative trace file (tracegate-traces.jsonl)
        # and its rotated parts are not shared between instances.
        wd = os.path.join(tmp, f"tracegate-{tag}")
        os.makedirs(wd, exist_ok=True)
        argv = proxy_argv + ["--upstream", f"http://127.0.0.1:{upstream_port}",
                             "--listen", f"127.0.0.1:{port}",
                             "--admin-listen", f"127.0.0.1:{admin}",
                             "--spool-dir", os.path.join(tmp, f"spool-{tag}")] + extra
        pr = p.spawn(f"tracegate ({tag})", argv, os.path.join(tmp, f"tracegate-{tag}.out"),
                     cwd=wd, env=env)
        procs.wait_http_200(admin, "/healthz", pr, START_TIMEOUT_S)
        procs.wait_port(port, pr, START_TIMEOUT_S)
        return pr, port, admin

    # (name, flags, whether it captures traces: its share traced is then reported)
    variants = [("tracegate", tuned, False), ("tracegate-traced", ["--access-log", "off"], True),
                ("tracegate-defaults", [], True)]
    if not a.no_threads1:
        variants.append(("tracegate-t1", tuned + ["--threads", "1"], False))
    if mlflow is not None:
        # Capture and export on, every other setting at its default; one experiment per instance.
        variants.append(("tracegate-mlflow", ["--access-log", "off", "--mlflow-tracking-uri", mlflow.uri], True))
        # The tracking server unreachable (a port nothing listens on): every trace goes to the spool.
        # Tracing trouble must not show in the forwarding figures.
        variants.append(("tracegate-mlflow-down", ["--access-log", "off",
                                                   "--mlflow-tracking-uri", f"http://127.0.0.1:{next(ports)}",
                                                   "--mlflow-experiment-id", "0"], True))
    for name, extra, captures in variants:
        exp = (lambda tag: ["--mlflow-experiment-name", f"bench-dataplane-{tag}"]) \
            if name == "tracegate-mlflow" else (lambda tag: [])
        main, main_port, main_admin = tracegate(f"{name}-main", origin_port, extra + exp("main"))
        sse_proc, sse_proxy_port, _ = tracegate(f"{name}-sse", sse_port, extra + exp("sse"))
        targets.append(Target(name, main_port, sse_proxy_port, main, main_admin if captures else None))
        if name == "tracegate-mlflow":
            started["export_main"], started["export_sse"] = main, sse_proc
            started["export_main_exp"] = mlflow_bench.wait_experiment_id(main, START_TIMEOUT_S)
            started["export_sse_exp"] = mlflow_bench.wait_experiment_id(sse_proc, START_TIMEOUT_S)
    return targets, started


def check_targets(targets: list[Target]) -> None:
    """Every target must return the origin's exact body and stream SSE before we measure."""
    want = nginx.CHAT_COMPLETION_BODY.encode()
    for t in targets:
        c = http.client.HTTPConnection("127.0.0.1", t.port, timeout=5)
        try:
            c.request("GET", WRK_PATH)
            resp = c.getresponse()
            body = resp.read()
        finally:
            c.close()
        if resp.status != 200 or body != want:
            raise RuntimeError(f"{t.name}: GET {WRK_PATH} gave {resp.status} with a "
                               f"{len(body)}-byte body; expected 200 and the origin's "
                               f"{len(want)}-byte body")
        r = sse_client.measure("127.0.0.1", t.sse_port, SSE_PATH.format(n=2, gap=1), 2,
                               timeout_s=5)
        if r["status"] != 200 or r["events"] != 2:
            raise RuntimeError(f"{t.name}: SSE check failed: {r}")


def measure_wrk(t: Target, load: str, duration: float, all_procs: procs.Procs,
                started: dict) -> dict:
    threads, conns = (2, 32) if load == "c32" else (1, 1)
    if t.proc is not None and not t.proc.alive():
        return {"error": f"{t.proc.name} is no longer running (exit {t.proc.popen.returncode})"}
    pids = t.pids()
    ours = sorted({pid for pr in all_procs.procs for pid in procs.tree(pr.pid)})
    origin_pids = procs.tree(started["origin"].pid)
    mlflow_pids = started["mlflow"].pids() if started.get("mlflow") else []
    time.sleep(0.3)  # let the previous run's connections close
    counts0 = exchange_counts(t.admin) if t.admin else None
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    me0 = resource.getrusage(resource.RUSAGE_SELF)
    cpu0, org0, ours0 = (procs.cpu_seconds(pids), procs.cpu_seconds(origin_pids),
                         procs.cpu_seconds(ours))
    mlf0 = procs.cpu_seconds(mlflow_pids)
    sys0, t0 = procs.system_busy_seconds(), time.monotonic()
    try:
        res, raw = wrk.run(f"http://127.0.0.1:{t.port}{WRK_PATH}", threads, conns, duration)
    except (RuntimeError, ValueError, subprocess.SubprocessError) as e:
        return {"error": f"wrk: {e}"}
    wall = time.monotonic() - t0
    sys1 = procs.system_busy_seconds()
    cpu1, org1, ours1 = (procs.cpu_seconds(pids), procs.cpu_seconds(origin_pids),
                         procs.cpu_seconds(ours))
    mlf1 = procs.cpu_seconds(mlflow_pids)
    mem = procs.mem_kib(pids)
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    me1 = resource.getrusage(resource.RUSAGE_SELF)
    wrk_cpu = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
    me_cpu = (me1.ru_utime + me1.ru_stime) - (me0.ru_utime + me0.ru_stime)
    bg = (sys1 - sys0) - (ours1 - ours0) - wrk_cpu - me_cpu
    out = dict(res)
    out.update({
        "wall_s": wall,
        "wrk_cpu_pct": wrk_cpu / wall * 100,
        "origin_cpu_us_per_req": (org1 - org0) * 1e6 / max(1, res["requests"]),
        "bg_cpu_pct": max(0.0, bg / wall * 100),
        "wrk_output": raw,
    })
    if mlflow_pids:
        out["mlflow_cpu_pct"] = (mlf1 - mlf0) / wall * 100  # in "ours", so not in bg_cpu_pct
    counts1 = exchange_counts(t.admin) if t.admin else None
    if counts0 is not None and counts1 is not None:
        forwarded, untraced = (after - before for after, before in zip(counts1, counts0))
        out.update({"exchanges": forwarded, "untraced": untraced,
                    "traced_share": 1 - untraced / forwarded if forwarded else None})
    if t.proc is not None:
        cpu = cpu1 - cpu0
        out.update({
            "pids": len(pids),
            "threads": procs.num_threads(pids),
            "cpu_s": cpu,
            "cpu_pct": cpu / wall * 100,
            "cpu_us_per_req": cpu * 1e6 / max(1, res["requests"]),
            "rss_mib": mem["rss_kib"] / 1024 if load == "c32" else None,
            "hwm_mib": mem["hwm_kib"] / 1024 if load == "c32" else None,
        })
    return out


def exchange_counts(admin: int) -> tuple[int, int] | None:
    """tracegate's exchanges forwarded so far, and those it counted as untraced
    (`tracegate_traces_dropped_total`: not captured, or dropped by an exporter); None when its
    /metrics cannot be read (the run then reports no share)."""
    m = procs.tracegate_metrics(admin)
    if "traces_dropped_total" not in m:
        return None
    forwarded = sum(v for k, v in m.items() if k.startswith("requests_") and k != "requests_in_flight")
    return int(forwarded), int(m["traces_dropped_total"])


def measure_sse(t: Target, passes: int, tries: int, events: int, gap: float) -> dict:
    full = SSE_PATH.format(n=events, gap=gap)
    one = SSE_PATH.format(n=1, gap=gap)
    timeout = events * gap / 1000 + 5
    sse_client.measure("127.0.0.1", t.sse_port, one, 1, timeout_s=5)  # warm the pool
    res = {"passes": [], "tries_ttfe_ms": [], "failed_tries": 0}
    for _ in range(passes):
        res["passes"].append(sse_client.measure("127.0.0.1", t.sse_port, full, events,
                                                timeout_s=timeout))
    for _ in range(tries):
        r = sse_client.measure("127.0.0.1", t.sse_port, one, 1, timeout_s=5,
                               stop_after_first=True)
        if r["status"] == 200 and r["ttfe_ms"] is not None and not r["error"]:
            res["tries_ttfe_ms"].append(r["ttfe_ms"])
        else:
            res["failed_tries"] += 1
        time.sleep(0.01)
    return res


def export_throughput(a, p: procs.Procs, tmp: str, proxy_argv: list[str],
                      server: mlflow_bench.Server, origin_port: int, stamp: str) -> dict:
    """Direct OTLP batches vs the same number of traces through tracegate, alternating."""
    env = _child_env(tmp)
    t0 = time.monotonic()
    body = mlflow_bench.capture_otlp_body(p, tmp, env, proxy_argv, origin_port, a.mlflow_batch)
    batches = a.mlflow_traces // a.mlflow_batch
    log(f"export: captured one OTLP body from tracegate, {a.mlflow_batch} traces, "
        f"{len(body):,} bytes ({time.monotonic() - t0:.1f}s); {a.mlflow_runs} runs of "
        f"{a.mlflow_traces} traces each way, counted via {a.mlflow_count}")
    out = {"traces": a.mlflow_traces, "batch": a.mlflow_batch, "runs_per_kind": a.mlflow_runs,
           "concurrency": a.mlflow_concurrency, "count_via": a.mlflow_count,
           "captured_body_bytes": len(body), "runs": []}
    # MLflow's first ingest after start-up is several times slower than the next ones: one
    # uncounted direct run first, so neither kind is measured against a cold server.
    bodies, per = mlflow_bench.direct_batches(body, batches)
    r = mlflow_bench.export_direct(server, bodies, per, f"bench-export-{stamp}-warmup", a.mlflow_count,
                                   a.mlflow_deadline, p)
    out["warmup"] = r
    log(f"[export warm-up] direct {r['traces']} traces: all present after {_secs(r['t_present_s'])} "
        f"({_rate(r.get('rate_present'))}/s), not counted")
    for k in range(1, a.mlflow_runs + 1):
        order = ("direct", "tracegate") if k % 2 else ("tracegate", "direct")
        for kind in order:
            name = f"bench-export-{stamp}-{kind}-{k}"
            if kind == "direct":
                bodies, per = mlflow_bench.direct_batches(body, batches)  # built before timing
                r = mlflow_bench.export_direct(server, bodies, per, name, a.mlflow_count,
                                               a.mlflow_deadline, p)
                log(f"[export {k}/{a.mlflow_runs}] direct     {r['traces']} traces in "
                    f"{r['batches']} POSTs: all 200 after {r['t_posted_s']:.2f}s "
                    f"({_rate(r.get('rate_posted'))}/s), all present after "
                    f"{_secs(r['t_present_s'])} ({_rate(r.get('rate_present'))}/s)  "
                    f"mlflow {r['mlflow_cpu_pct']:.0f}%  bg {r['bg_cpu_pct']:.0f}%"
                    + ("" if r["statuses"] == {200: r["batches"]} else
                       f"  !! statuses {r['statuses']}"))
            else:
                r = mlflow_bench.export_through_tracegate(
                    p, tmp, env, proxy_argv, server, origin_port, a.mlflow_traces,
                    a.mlflow_batch, a.mlflow_concurrency, name, a.mlflow_count,
                    a.mlflow_deadline, drain_s=30)
                log(f"[export {k}/{a.mlflow_runs}] tracegate  {r['requests_ok']}/{r['traces']} "
                    f"requests sent in {_secs(r['t_sent_s'])}; all present after "
                    f"{_secs(r['t_present_s'])} ({_rate(r.get('rate_present'))}/s), all with "
                    f"client_request_id after {_secs(r['t_crid_s'])} "
                    f"({_rate(r.get('rate_crid'))}/s)  mlflow {r['mlflow_cpu_pct']:.0f}%  "
                    f"tracegate {r['tracegate_cpu_pct']:.0f}%  bg {r['bg_cpu_pct']:.0f}%  "
                    f"export {r.get('export')}")
            r["run"] = k
            out["runs"].append(r)
    out["total_s"] = time.monotonic() - t0
    return out


def _rate(x) -> str:
    return "–" if x is None else f"{x:,.0f}"


def _secs(x) -> str:
    return "NOT within the deadline" if x is None else f"{x:.2f}s"


def dataplane_export(a, p: procs.Procs, started: dict, server: mlflow_bench.Server,
                     requests_main: int, rounds_cpu: dict) -> dict:
    """What became of the traces of the export-on target: counts in MLflow, then the exporter's
    own counters after SIGTERM (drain bounded by --mlflow-drain)."""
    out = {"requests_main": requests_main, "mlflow_rounds_cpu": rounds_cpu}
    for tag in ("main", "sse"):
        proc, exp = started[f"export_{tag}"], started[f"export_{tag}_exp"]
        alive = proc.alive()
        try:
            before = server.db_counts(exp)
        except Exception as e:  # noqa: BLE001 - a report, not a reason to lose the run
            before = None
            log(f"count {tag}: {e}")
        log(f"export-on tracegate ({tag}): {before[0] if before else '?'} traces in MLflow at "
            f"the end of the rounds; SIGTERM, draining for up to {a.mlflow_drain:g}s")
        res = (mlflow_bench.stop_and_collect(p, proc, a.mlflow_drain if tag == "main" else 15)
               if alive else {"stats": mlflow_bench.parse_export_stats(proc.log_tail(8192)),
                              "drain_s": None, "drain_finished": False})
        try:
            after = server.db_counts(exp)
        except Exception as e:  # noqa: BLE001
            after = None
            log(f"count {tag}: {e}")
        res.update({"experiment_id": exp, "alive_at_end": alive,
                    "stored_at_sigterm": before and before[0],
                    "with_crid_at_sigterm": before and before[1],
                    "stored_after_drain": after and after[0],
                    "with_crid_after_drain": after and after[1]})
        try:
            res["overloaded_warnings"] = _last_number_after(proc.log_path, "dropped_before_export=")
        except OSError:
            res["overloaded_warnings"] = None
        log(f"export-on tracegate ({tag}): "
            + (f"drained in {res['drain_s']:.1f}s: {res['stats']}" if res.get("drain_finished")
               else f"drain NOT finished within the limit; killed. Last log: "
                    f"{proc.log_tail(300).strip().splitlines()[-1:] if proc.log_tail(300) else ''}")
            + f"; stored {res['stored_after_drain']}, with client_request_id "
              f"{res['with_crid_after_drain']}")
        out[tag] = res
    return out


def _last_number_after(path: str, key: str) -> int | None:
    """The number after the last `key` in the file (tracegate's `trace capture finished` line)."""
    found = None
    with open(path, "rb") as f:
        for line in f:
            m = re.search(re.escape(key.encode()) + rb"(\d+)", line)
            if m:
                found = int(m.group(1))
    return found


def _dead(p: procs.Procs) -> str | None:
    """Why the run cannot go on (a process it started has exited), or None."""
    for pr in p.procs:
        if not pr.alive():
            tail = pr.log_tail(1500)
            hint = (" (it logged a SIGTERM: this script sends none before the end, so another "
                    "process on the machine did)" if "SIGTERM" in tail else "")
            return (f"{pr.name} exited with code {pr.popen.returncode} during the run; "
                    f"the figures after that are missing{hint}. Last lines of its output:\n"
                    + tail)
    return None


def _fmt_run(r: dict) -> str:
    if r.get("error"):
        return f"ERROR {r['error']}"
    s = (f"rps {r['rps']:>9,.0f}  p50 {r['p50_ms']:6.3f} ms  p99 {r['p99_ms']:6.2f} ms  "
         f"p99.9 {r['p999_ms']:6.2f} ms")
    if "cpu_pct" in r:
        s += f"  cpu {r['cpu_pct']:4.0f}%  {r['cpu_us_per_req']:6.1f} us/req"
        if r.get("rss_mib") is not None:
            s += f"  rss {r['rss_mib']:5.1f} MiB"
    s += f"  bg {r['bg_cpu_pct']:3.0f}%"
    if "mlflow_cpu_pct" in r:
        s += f"  mlflow {r['mlflow_cpu_pct']:3.0f}%"
    if r["non_2xx"] or sum(r["socket_errors"].values()):
        s += f"  !! non-2xx {r['non_2xx']} errors {r['socket_errors']}"
    return s


def run(a) -> int:
    started_at = dt.datetime.now()
    stamp = started_at.strftime("%Y%m%d-%H%M%S")
    for tool, path in (("nginx", nginx.NGINX_BIN), ("wrk", wrk.WRK_BIN)):
        if not os.path.exists(path):
            log(f"{tool} not found: apt-get install -y nginx wrk")
            return 2

    p = procs.Procs()
    tmp = tempfile.mkdtemp(prefix="tracegate-bench-")
    if os.geteuid() == 0:
        os.chmod(tmp, 0o755)  # nginx workers may run as another user

    def on_signal(signum, _frame):
        raise SystemExit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    try:
        if a.proxy_cmd:
            proxy_argv = _abs_argv(shlex.split(a.proxy_cmd))
        else:
            proxy_argv = [os.path.join(REPO, BUILD_DIR, "release", "tracegate")]
            if not a.no_build:
                build(p, tmp)
            if not os.path.exists(proxy_argv[0]):
                log(f"{proxy_argv[0]} does not exist (build it, or pass --proxy-cmd)")
                return 2
        standin = bool(a.proxy_cmd) and "tracegate" not in os.path.basename(proxy_argv[0])
        mlflow_bin = None
        if a.mlflow:
            if standin:
                log("--mlflow needs tracegate itself (the stand-in exports nothing)")
                return 2
            mlflow_bin = mlflow_bench.find_mlflow(REPO, a.mlflow_bin)
            if not mlflow_bin:
                log("mlflow not found: pass --mlflow-bin, or python3 -m venv .venv && "
                    ".venv/bin/pip install mlflow==3.17.2")
                return 2

        sse_events, sse_gap = 20, 50.0
        meta = {
            "started": started_at.strftime("%Y-%m-%d %H:%M"),
            "argv": sys.argv[1:],
            "rounds": a.rounds, "duration_s": a.duration, "warmup_s": a.warmup,
            "sse_events": sse_events, "sse_gap_ms": sse_gap,
            "sse_passes": a.sse_passes, "sse_tries": a.sse_tries,
            "proxy_cmd": " ".join(proxy_argv), "standin": standin, "cpu_load": a.cpu_load,
            "machine": machine_info(),
            "nginx_version": nginx.nginx_version(), "wrk_version": wrk.version(),
            "swift_version": (_cmd_out(["swift", "--version"]).splitlines() or ["swift ?"])[0]
            .replace(" version", "").split(" (")[0],
            "git": git_desc(),
            "body_bytes": len(nginx.CHAT_COMPLETION_BODY.encode()),
        }
        server = None
        if a.mlflow:
            meta["mlflow_version"] = mlflow_bench.mlflow_version(mlflow_bin)
            meta["mlflow_bin"] = mlflow_bin
            log(f"temp dir {tmp}; starting MLflow {meta['mlflow_version']} server "
                f"(SQLite, 1 worker)")
            server = mlflow_bench.start_server(p, tmp, mlflow_bin, _child_env(tmp))
        log(f"temp dir {tmp}; starting origins and proxies")
        targets, started = start_all(a, p, tmp, proxy_argv, server)
        started["mlflow"] = server
        check_targets(targets)
        if a.cpu_load > 0:
            cpu_load.start(p, tmp, a.cpu_load)
            log(f"a normal-priority process keeps {a.cpu_load:g} of one CPU busy from now on")
        log("targets: " + ", ".join(f"{t.name}=127.0.0.1:{t.port}" for t in targets))
        export_results = None
        if server is not None:
            export_results = export_throughput(a, p, tmp, proxy_argv, server, targets[0].port,
                                               stamp)

        est = (len(targets) * 2 * (a.duration + 0.6) * a.rounds
               + (a.mlflow_drain if a.mlflow else 0)
               + len(targets) * (a.warmup + 0.5)
               + a.rounds * len(targets) * (a.sse_passes * (sse_events * sse_gap / 1000 + 0.05)
                                            + a.sse_tries * 0.015))
        log(f"warm-up {a.warmup:g}s per target, then {a.rounds} rounds; about {est / 60:.1f} min")
        export_requests = 1  # check_targets
        for t in targets:
            try:
                res, _ = wrk.run(f"http://127.0.0.1:{t.port}{WRK_PATH}", 2, 32, a.warmup)
                if t.name == "tracegate-mlflow":
                    export_requests += res["requests"]
            except (RuntimeError, ValueError, subprocess.SubprocessError) as e:
                log(f"warm-up {t.name}: {e}")
        mlf_pids = server.pids() if server else []
        mlf_cpu0, mlf_t0 = procs.cpu_seconds(mlf_pids), time.monotonic()

        results = {"meta": meta, "targets": [t.name for t in targets], "runs": [], "sse": []}
        width = max(len(t.name) for t in targets)
        aborted = None
        for rnd in range(1, a.rounds + 1):
            aborted = _dead(p)
            if aborted:
                break
            k = (rnd - 1) % len(targets)
            order = targets[k:] + targets[:k]
            for load in ("c32", "c1"):
                for t in order:
                    aborted = aborted or _dead(p)
                    if aborted:
                        break
                    r = measure_wrk(t, load, a.duration, p, started)
                    r.update({"round": rnd, "load": load, "target": t.name})
                    results["runs"].append(r)
                    if t.name == "tracegate-mlflow":
                        export_requests += r.get("requests", 0)
                    log(f"[{rnd}/{a.rounds}] {load:>3} {t.name:<{width}}  {_fmt_run(r)}")
            aborted = aborted or _dead(p)
            if aborted:
                break
            for t in order:
                sr = measure_sse(t, a.sse_passes, a.sse_tries, sse_events, sse_gap)
                sr.update({"round": rnd, "target": t.name})
                results["sse"].append(sr)
                ttfe = sorted(sr["tries_ttfe_ms"])
                p0 = sr["passes"][0]
                log(f"[{rnd}/{a.rounds}] sse {t.name:<{width}}  first event "
                    f"{ttfe[len(ttfe) // 2] if ttfe else float('nan'):.3f} ms  events "
                    f"{p0['events']}/{sse_events} in {p0['arrivals']} reads  gaps "
                    f"{min(p0['gaps_ms'], default=0):.1f}–{max(p0['gaps_ms'], default=0):.1f} ms")

        if server is not None:
            wall = time.monotonic() - mlf_t0
            rounds_cpu = {"wall_s": wall, "cpu_pct": (procs.cpu_seconds(mlf_pids) - mlf_cpu0)
                          / max(wall, 1e-9) * 100}
            results["mlflow"] = {
                "server": {"version": meta["mlflow_version"], "port": server.port,
                           "workers": 1, "backend": "sqlite"},
                "dataplane": dataplane_export(a, p, started, server, export_requests,
                                              rounds_cpu),
                "export": export_results,
            }
        if aborted:
            log(f"ABORTED: {aborted}")
            results["aborted"] = aborted
        summary = report.summarize(results)
        md = report.markdown(results, summary)
        results["summary"] = summary
        os.makedirs(a.out_dir, exist_ok=True)
        md_path = os.path.join(a.out_dir, f"{stamp}.md")
        json_path = os.path.join(a.out_dir, f"{stamp}.json")
        with open(md_path, "w") as f:
            f.write(md + "\n")
        with open(json_path, "w") as f:
            json.dump(results, f, indent=1, default=str)
        print()
        print(report.text_summary(results, summary))
        print()
        print(md)
        print(f"written: {os.path.relpath(md_path)} and {os.path.relpath(json_path)}")
        log(f"total {(dt.datetime.now() - started_at).total_seconds() / 60:.1f} min")
        if aborted:
            log(f"ABORTED (the figures above are partial): {aborted}")
            return 1
        return 0
    except RuntimeError as e:
        log(f"error: {e}")
        return 1
    finally:
        procs.clean_up(p, tmp, a.keep_tmp, log)


def main() -> None:
    if sys.version_info < (3, 11):
        sys.exit("benchmarks/run needs Python 3.11+")
    a = parse_args(sys.argv[1:])
    try:
        sys.exit(run(a))
    except KeyboardInterrupt:
        log("interrupted; stopped every process started")
        sys.exit(130)


if __name__ == "__main__":
    main()
