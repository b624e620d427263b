"""WebSocket tunnel benchmark (Python 3.11 stdlib; Node.js with Debian's node-ws for the echo server
and the load client). Entry point: benchmarks/ws_tunnels.

Against one echo server (`ws_echo.js server`): direct, nginx (`proxy_http_version 1.1`, `Upgrade`
and `Connection: upgrade` set, 1 worker) and tracegate with its defaults (text access log, traces to
its trace file; only `max_websocket_connections` raised for the idle test). Per round, every target
in a rotated order: echo round trips in a closed loop at 1 and at 100 connections (`ws_echo.js rtt`:
messages/s, p50 and p99 round-trip), the proxy's CPU per message; then, per proxy, the RSS grown by
holding N idle tunnels open (`ws_echo.js idle`). Prints medians, ratios within each round, and a
Markdown table. Everything shares the machine's cores: compare ratios from the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import nginx  # noqa: E402
import procs  # noqa: E402

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH_DIR)
ECHO = os.path.join(BENCH_DIR, "ws_echo.js")


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="benchmarks/ws_tunnels", description=__doc__.split("\n\n")[0])
    ap.add_argument("--tracegate", default=os.path.join(REPO, ".build-static/release/tracegate"),
                    help="the tracegate binary (default: the release build benchmarks/run makes)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=5, help="seconds per round-trip run")
    ap.add_argument("--bytes", type=int, default=256, help="message size")
    ap.add_argument("--idle", type=int, default=5000, help="idle tunnels held for the memory figure")
    return ap.parse_args(argv)


def ws_proxy_conf(prefix: str, port: int, upstream_port: int, connections: int) -> str:
    return nginx._common_head(prefix, 1, connections) + f"""http {{
{nginx._http_common(prefix)}
    upstream origin {{ server 127.0.0.1:{upstream_port}; }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection "upgrade";
            proxy_set_header Host $http_host;
            proxy_read_timeout 3600s;
            proxy_buffering off;
        }}
    }}
}}
"""


def rtt(port: int, connections: int, seconds: float, size: int) -> dict:
    out = subprocess.run(["node", ECHO, "rtt", f"ws://127.0.0.1:{port}/", str(connections), str(seconds), str(size)],
                         capture_output=True, text=True, timeout=seconds + 60)
    if out.returncode != 0:
        raise RuntimeError(f"ws_echo rtt failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def idle_growth_kib(port: int, proxy: procs.Proc, count: int) -> float:
    before = procs.mem_kib(procs.tree(proxy.pid))["rss_kib"]
    client = subprocess.Popen(["node", ECHO, "idle", f"ws://127.0.0.1:{port}/", str(count)],
                              stdout=subprocess.PIPE, text=True)
    try:
        line = client.stdout.readline()
        if not line.startswith("open"):
            raise RuntimeError(f"idle client: {line!r}")
        time.sleep(2)
        return procs.mem_kib(procs.tree(proxy.pid))["rss_kib"] - before
    finally:
        client.kill()
        client.wait()
        time.sleep(2)  # the tunnels close


def main(argv: list[str]) -> int:
    a = parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # children inherit it
    tmp = tempfile.mkdtemp(prefix="tracegate-ws-")
    p = procs.Procs()
    try:
        echo_port, nginx_port, tg_port, tg_admin = procs.free_ports(4)
        p.spawn("echo", ["node", ECHO, "server", str(echo_port)], os.path.join(tmp, "echo.out"))
        nginx_dir = os.path.join(tmp, "nginx")
        proxy = p.spawn("nginx", nginx.write_instance(nginx_dir, ws_proxy_conf(nginx_dir, nginx_port, echo_port, 4 * a.idle)),
                        os.path.join(tmp, "nginx.out"))
        tg = p.spawn("tracegate", [os.path.abspath(a.tracegate), "run", "--upstream", f"http://127.0.0.1:{echo_port}",
                                   "--listen", f"127.0.0.1:{tg_port}", "--admin-listen", f"127.0.0.1:{tg_admin}",
                                   "--max-websocket-connections", str(2 * a.idle),
                                   "--trace-file", os.path.join(tmp, "traces.jsonl"),
                                   "--spool-dir", os.path.join(tmp, "spool")],
                     os.path.join(tmp, "tracegate.out"), cwd=tmp)
        targets = {"direct": (echo_port, None), "nginx": (nginx_port, proxy), "tracegate": (tg_port, tg)}
        for port, _ in targets.values():
            procs.wait_port(port, None, 30)
        for port, _ in targets.values():
            rtt(port, 10, 1, a.bytes)  # warm-up
        names = list(targets)
        runs = {name: {1: [], 100: []} for name in names}
        for round_index in range(a.rounds):
            for name in names[round_index % 3:] + names[:round_index % 3]:
                port, proc = targets[name]
                for c in (1, 100):
                    pids = procs.tree(proc.pid) if proc else []
                    before = procs.cpu_seconds(pids) if proc else 0
                    figures = rtt(port, c, a.duration, a.bytes)
                    if proc:
                        figures["cpu_us_per_message"] = (procs.cpu_seconds(pids) - before) / max(1, figures["messages"]) * 1e6
                    runs[name][c].append(figures)
            print(f"round {round_index + 1}/{a.rounds} done", file=sys.stderr, flush=True)
        idle = {name: idle_growth_kib(targets[name][0], targets[name][1], a.idle) / a.idle for name in ("nginx", "tracegate")}
        report(runs, idle, a)
    finally:
        p.stop_all()
    return 0


def report(runs: dict, idle: dict, a: argparse.Namespace) -> None:
    def median(name, c, key):
        return statistics.median(r[key] for r in runs[name][c])

    def same_round(name, other, c, key):
        return statistics.median(x[key] / y[key] for x, y in zip(runs[name][c], runs[other][c]))

    print(f"\n{a.rounds} rounds × {a.duration:g} s, {a.bytes}-byte messages, medians (ratios within each round)\n")
    print("| target | c=1 p50 / p99 µs | c=1 added p50 over direct | c=100 messages/s (× nginx) | c=100 p50 / p99 µs | CPU µs/message c=100 | KiB per idle tunnel |")
    print("|---|---|---:|---|---|---:|---:|")
    for name in runs:
        added = "–" if name == "direct" else f"{statistics.median(x['p50_us'] - d['p50_us'] for x, d in zip(runs[name][1], runs['direct'][1])):+.0f} µs"
        ratio = "" if name == "nginx" else f" ({same_round(name, 'nginx', 100, 'per_second'):.2f}×)"
        cpu = "–" if name == "direct" else f"{median(name, 100, 'cpu_us_per_message'):.1f}"
        kib = f"{idle[name]:.1f}" if name in idle else "–"
        print(f"| {name} | {median(name, 1, 'p50_us'):.0f} / {median(name, 1, 'p99_us'):.0f} | {added} | "
              f"{median(name, 100, 'per_second'):,.0f}{ratio} | {median(name, 100, 'p50_us'):.0f} / {median(name, 100, 'p99_us'):.0f} | {cpu} | {kib} |")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
