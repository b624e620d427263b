"""tracegate benchmark orchestrator (Python 3.11 stdlib only). Entry point: benchmarks/run.

One run, on loopback only, with ports picked free and every file in a temp dir:
1. builds tracegate (`swift build -c release --product tracegate`) unless told not to;
2. starts the origins: nginx `return 200` (chat-completion JSON) and the SSE origin;
3. starts the proxies, each twice (one instance in front of each origin):
   nginx (reference, 1 worker), tracegate (default threads) and tracegate --threads 1;
4. checks every target returns the origin's body unchanged, then warms each up with wrk;
5. per round, in a rotating order: wrk c=32 then c=1 against every target (direct,
   nginx, tracegate...), reading the proxy's CPU (utime+stime delta) and RSS from /proc;
   then the SSE checks (time to first event, separate events, gaps) for every target;
6. prints a summary and Markdown, and writes bench-results/<timestamp>.md and .json.

Every process it started is stopped on exit, including on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import os
import platform
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import nginx  # noqa: E402
import procs  # noqa: E402
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
    ap.add_argument("--proxy-cmd", default=None,
                    help="command used instead of .build/release/tracegate (the tracegate flags "
                         "are appended); implies --no-build. For development: "
                         "--proxy-cmd 'python3 benchmarks/nginx.py standin'")
    ap.add_argument("--out-dir", default=os.path.join(REPO, "bench-results"),
                    help="where <timestamp>.md and .json go (default bench-results/)")
    ap.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (configs, logs)")
    a = ap.parse_args(argv)
    if a.rounds < 1 or a.duration < 1 or a.sse_passes < 1 or a.sse_tries < 1:
        ap.error("--rounds, --duration, --sse-passes and --sse-tries must be >= 1")
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


def build(p: procs.Procs, tmp: str) -> None:
    log_path = os.path.join(tmp, "swift-build.log")
    log(f"building: swift build -c release --product tracegate (log: {log_path})")
    t0 = time.monotonic()
    proc = p.spawn("swift build", ["swift", "build", "-c", "release", "--product", "tracegate"],
                   log_path, cwd=REPO)
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
    """One configuration measured: where to send load, and which process to measure."""

    def __init__(self, name: str, port: int, sse_port: int, proc: procs.Proc | None):
        self.name, self.port, self.sse_port, self.proc = name, port, sse_port, proc

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


def start_all(a, p: procs.Procs, tmp: str, proxy_argv: list[str]) -> tuple[list[Target], dict]:
    ports = iter(procs.free_ports(16))
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

    def nginx_proxy(tag: str, upstream_port: int) -> tuple[procs.Proc, int]:
        port = next(ports)
        d = os.path.join(tmp, f"nginx-proxy-{tag}")
        pr = p.spawn(f"nginx proxy ({tag})",
                     nginx.write_instance(d, nginx.proxy_conf(d, port, "127.0.0.1", upstream_port)),
                     os.path.join(tmp, f"nginx-proxy-{tag}.out"), cwd=tmp, env=env)
        procs.wait_port(port, pr, START_TIMEOUT_S)
        return pr, port

    main, main_port = nginx_proxy("main", origin_port)
    _, sse_proxy_port = nginx_proxy("sse", sse_port)
    targets.append(Target("nginx", main_port, sse_proxy_port, main))

    def tracegate(tag: str, upstream_port: int, extra: list[str]) -> tuple[procs.Proc, int]:
        port, admin = next(ports), next(ports)
        argv = proxy_argv + ["--upstream", f"http://127.0.0.1:{upstream_port}",
                             "--listen", f"127.0.0.1:{port}",
                             "--admin-listen", f"127.0.0.1:{admin}",
                             "--access-log", "off"] + extra
        pr = p.spawn(f"tracegate ({tag})", argv, os.path.join(tmp, f"tracegate-{tag}.out"),
                     cwd=tmp, env=env)
        procs.wait_http_200(admin, "/healthz", pr, START_TIMEOUT_S)
        procs.wait_port(port, pr, START_TIMEOUT_S)
        return pr, port

    variants = [("tracegate", [])]
    if not a.no_threads1:
        variants.append(("tracegate-t1", ["--threads", "1"]))
    for name, extra in variants:
        main, main_port = tracegate(f"{name}-main", origin_port, extra)
        _, sse_proxy_port = tracegate(f"{name}-sse", sse_port, extra)
        targets.append(Target(name, main_port, sse_proxy_port, main))
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
                origin: procs.Proc) -> dict:
    threads, conns = (2, 32) if load == "c32" else (1, 1)
    if t.proc is not None and not t.proc.alive():
        return {"error": f"{t.proc.name} is no longer running (exit {t.proc.popen.returncode})"}
    pids = t.pids()
    ours = sorted({pid for pr in all_procs.procs for pid in procs.tree(pr.pid)})
    origin_pids = procs.tree(origin.pid)
    time.sleep(0.3)  # let the previous run's connections close
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    me0 = resource.getrusage(resource.RUSAGE_SELF)
    cpu0, org0, ours0 = (procs.cpu_seconds(pids), procs.cpu_seconds(origin_pids),
                         procs.cpu_seconds(ours))
    sys0, t0 = procs.system_busy_seconds(), time.monotonic()
    try:
        res, raw = wrk.run(f"http://127.0.0.1:{t.port}{WRK_PATH}", threads, conns, duration)
    except (RuntimeError, ValueError, subprocess.SubprocessError) as e:
        return {"error": f"wrk: {e}"}
    wall = time.monotonic() - t0
    sys1 = procs.system_busy_seconds()
    cpu1, org1, ours1 = (procs.cpu_seconds(pids), procs.cpu_seconds(origin_pids),
                         procs.cpu_seconds(ours))
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
    s = (f"rps {r['rps']:>9,.0f}  p50 {r['p50_ms']:6.3f} ms  p99 {r['p99_ms']:6.2f} ms")
    if "cpu_pct" in r:
        s += f"  cpu {r['cpu_pct']:4.0f}%  {r['cpu_us_per_req']:6.1f} us/req"
        if r.get("rss_mib") is not None:
            s += f"  rss {r['rss_mib']:5.1f} MiB"
    s += f"  bg {r['bg_cpu_pct']:3.0f}%"
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
            proxy_argv = [os.path.join(REPO, ".build", "release", "tracegate")]
            if not a.no_build:
                build(p, tmp)
            if not os.path.exists(proxy_argv[0]):
                log(f"{proxy_argv[0]} does not exist (build it, or pass --proxy-cmd)")
                return 2
        standin = bool(a.proxy_cmd) and "tracegate" not in os.path.basename(proxy_argv[0])

        sse_events, sse_gap = 20, 50.0
        meta = {
            "started": started_at.strftime("%Y-%m-%d %H:%M"),
            "argv": sys.argv[1:],
            "rounds": a.rounds, "duration_s": a.duration, "warmup_s": a.warmup,
            "sse_events": sse_events, "sse_gap_ms": sse_gap,
            "sse_passes": a.sse_passes, "sse_tries": a.sse_tries,
            "proxy_cmd": " ".join(proxy_argv), "standin": standin,
            "machine": machine_info(),
            "nginx_version": nginx.nginx_version(), "wrk_version": wrk.version(),
            "swift_version": (_cmd_out(["swift", "--version"]).splitlines() or ["swift ?"])[0]
            .replace(" version", "").split(" (")[0],
            "git": git_desc(),
            "body_bytes": len(nginx.CHAT_COMPLETION_BODY.encode()),
        }
        log(f"temp dir {tmp}; starting origins and proxies")
        targets, started = start_all(a, p, tmp, proxy_argv)
        check_targets(targets)
        log("targets: " + ", ".join(f"{t.name}=127.0.0.1:{t.port}" for t in targets))

        est = (len(targets) * 2 * (a.duration + 0.6) * a.rounds
               + len(targets) * (a.warmup + 0.5)
               + a.rounds * len(targets) * (a.sse_passes * (sse_events * sse_gap / 1000 + 0.05)
                                            + a.sse_tries * 0.015))
        log(f"warm-up {a.warmup:g}s per target, then {a.rounds} rounds; about {est / 60:.1f} min")
        for t in targets:
            try:
                wrk.run(f"http://127.0.0.1:{t.port}{WRK_PATH}", 2, 32, a.warmup)
            except (RuntimeError, ValueError, subprocess.SubprocessError) as e:
                log(f"warm-up {t.name}: {e}")

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
                    r = measure_wrk(t, load, a.duration, p, started["origin"])
                    r.update({"round": rnd, "load": load, "target": t.name})
                    results["runs"].append(r)
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
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            signal.signal(sig, signal.SIG_IGN)  # do not cut the clean-up short
        p.stop_all()
        if a.keep_tmp:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


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
