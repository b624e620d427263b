"""Two tracegate builds and nginx, measured alternately in the same minutes (Python 3.11 stdlib only).
Entry point: benchmarks/compare_builds.

For a change that must not cost anything (a refactor): the builds run side by side in front of one
nginx origin, in one configuration (`--config`: *tuned*, no access log and no capture, the default;
*traced*, every exchange traced to a trace file, no access log; *defaults*, text access log and
trace file), and each round runs `wrk` against nginx, build A and
build B in a rotated order, at c=32 and c=1. Per run it records requests/s, p50/p99/p99.9 and the proxy's
CPU per request (utime+stime from /proc, nginx master and workers). It prints medians, each build's
ratios to nginx in the same round, and B ÷ A per round: on a shared 2-core machine those same-round
ratios are what can be compared, not absolute figures.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import cpu_load  # noqa: E402
import nginx  # noqa: E402
import procs  # noqa: E402
import wrk  # noqa: E402


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="benchmarks/compare_builds", description=__doc__.split("\n\n")[0])
    ap.add_argument("build_a", help="the reference tracegate binary (e.g. the last landed build)")
    ap.add_argument("build_b", help="the tracegate binary to compare with it")
    ap.add_argument("--rounds", type=int, default=8, help="rounds (default 8)")
    ap.add_argument("--duration", type=float, default=5, help="seconds per wrk run (default 5)")
    ap.add_argument("--concurrency", default="32,1", help="wrk connection counts (default 32,1)")
    ap.add_argument("--cpu-load", type=cpu_load.share_argument, default=0, metavar="SHARE",
                    help="keep SHARE of one CPU busy with a normal-priority process (cpu_load.py) "
                         "throughout, as another service on the machine would (default 0: none)")
    ap.add_argument("--config", choices=["tuned", "traced", "defaults"], default="tuned",
                    help="what both builds run with (default tuned: no access log, no capture)")
    return ap.parse_args(argv)


def measure(port: int, connections: int, seconds: float) -> tuple[float, float, float, float]:
    """requests/s, p50 ms, p99 ms, p99.9 ms (benchmarks/wrk.py runs and parses wrk)."""
    figures, _ = wrk.run(f"http://127.0.0.1:{port}/", min(connections, 2), connections, seconds)
    return figures["rps"], figures["p50_ms"], figures["p99_ms"], figures["p999_ms"]


def main(argv: list[str]) -> int:
    a = parse_args(argv)
    concurrency = [int(c) for c in a.concurrency.split(",")]
    tmp = tempfile.mkdtemp(prefix="tracegate-compare-")
    p = procs.Procs()

    def on_signal(signum, _frame):
        raise SystemExit(128 + signum)  # the finally below stops every process started

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    try:
        origin_port, nginx_port, port_a, admin_a, port_b, admin_b = procs.free_ports(6)
        origin_dir, nginx_dir = os.path.join(tmp, "origin"), os.path.join(tmp, "nginx")
        p.spawn("origin", nginx.write_instance(origin_dir, nginx.origin_conf(origin_dir, origin_port)),
                os.path.join(tmp, "origin.out"))
        proxy = p.spawn("nginx", nginx.write_instance(nginx_dir, nginx.proxy_conf(nginx_dir, nginx_port, "127.0.0.1", origin_port)),
                        os.path.join(tmp, "nginx.out"))
        targets = {"nginx": (nginx_port, proxy)}
        for name, binary, port, admin in (("A", a.build_a, port_a, admin_a), ("B", a.build_b, port_b, admin_b)):
            argv = [os.path.abspath(binary), "run", "--upstream", f"http://127.0.0.1:{origin_port}",
                    "--listen", f"127.0.0.1:{port}", "--admin-listen", f"127.0.0.1:{admin}",
                    "--spool-dir", os.path.join(tmp, f"spool-{name}")]
            trace_file = os.path.join(tmp, f"traces-{name}.jsonl")
            argv += {
                "tuned": ["--access-log", "off", "--trace-file="],
                "traced": ["--access-log", "off", "--trace-file", trace_file],
                "defaults": ["--trace-file", trace_file],
            }[a.config]
            targets[name] = (port, p.spawn(name, argv, os.path.join(tmp, f"{name}.out"), cwd=tmp))
        for port, proc in targets.values():
            procs.wait_port(port, proc, 30)
        if a.cpu_load > 0:
            cpu_load.start(p, tmp, a.cpu_load)
        for port, _ in targets.values():
            measure(port, 32, 2)  # warm-up
        results = {name: {c: [] for c in concurrency} for name in targets}
        names = list(targets)
        for round_index in range(a.rounds):
            order = names[round_index % len(names):] + names[:round_index % len(names)]
            for name in order:
                port, proc = targets[name]
                for c in concurrency:
                    pids = procs.tree(proc.pid)
                    before = procs.cpu_seconds(pids)
                    rps, p50, p99, p999 = measure(port, c, a.duration)
                    used = procs.cpu_seconds(pids) - before
                    results[name][c].append((rps, p50, p99, p999, used / (rps * a.duration) * 1e6))
            print(f"round {round_index + 1}/{a.rounds} done", file=sys.stderr, flush=True)
        for c in concurrency:
            print(f"\nc={c}, median of {a.rounds} rounds: requests/s, p50 ms, p99 ms, p99.9 ms, proxy CPU µs/request")
            for name in names:
                columns = list(zip(*results[name][c]))
                print(f"  {name:6s}" + "".join(f"{statistics.median(col):12.3f}" for col in columns))
            for name in ("A", "B"):
                cpu = [x[4] / n[4] for x, n in zip(results[name][c], results["nginx"][c])]
                rps = [x[0] / n[0] for x, n in zip(results[name][c], results["nginx"][c])]
                p99 = [x[2] / n[2] for x, n in zip(results[name][c], results["nginx"][c])]
                p999 = [x[3] / n[3] for x, n in zip(results[name][c], results["nginx"][c])]
                print(f"  {name} ÷ nginx, same round: CPU/request {statistics.median(cpu):.3f}, requests/s {statistics.median(rps):.3f}, "
                      f"p99 {statistics.median(p99):.2f} [{min(p99):.2f}–{max(p99):.2f}], "
                      f"p99.9 {statistics.median(p999):.2f} [{min(p999):.2f}–{max(p999):.2f}]")
            ratio = [b[4] / x[4] for b, x in zip(results["B"][c], results["A"][c])]
            print(f"  B ÷ A CPU/request, same round: median {statistics.median(ratio):.3f} "
                  f"[{min(ratio):.3f}–{max(ratio):.3f}]")
    finally:
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)  # a second signal must not cut the clean-up short
        p.stop_all()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
