"""Runs wrk (Debian's wrk 4.x) and parses its `--latency` output.

Figures kept per run: requests/s, total requests, p50/p75/p90/p99 latency (from the
"Latency Distribution" block; wrk prints times in us, ms, s, m or h), mean latency,
non-2xx/3xx responses and socket errors. `--latency` stops at p99, so every run also loads
`latency.lua` (`-s`), whose done() prints p99.9 (and p99.99 and max) from the same histogram:
`latency.lua: p99 1040us p99.9 2310us p99.99 4020us max 9870us`, parsed into `p999_ms`,
`p9999_ms` and `lat_max_ms`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

WRK_BIN = shutil.which("wrk") or "/usr/bin/wrk"
LATENCY_LUA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "latency.lua")

_TIME_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}
_COUNT_UNITS = {"": 1.0, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9}


def parse_time_ms(s: str) -> float:
    """'303.00us' -> 0.303; '1.04ms' -> 1.04; '2.00s' -> 2000.0; '1.50m' -> 90000.0."""
    m = re.fullmatch(r"\s*([0-9.]+)\s*(us|ms|s|m|h)\s*", s)
    if not m:
        raise ValueError(f"not a wrk time: {s!r}")
    return float(m.group(1)) * _TIME_UNITS[m.group(2)]


def parse_count(s: str) -> float:
    m = re.fullmatch(r"\s*([0-9.]+)([kKMG]?)\s*", s)
    if not m:
        raise ValueError(f"not a wrk count: {s!r}")
    return float(m.group(1)) * _COUNT_UNITS[m.group(2)]


def parse(output: str, need_p999: bool = True) -> dict:
    """Parse the text wrk prints with --latency (and `-s latency.lua`). Raises ValueError if a key
    figure is missing; p99.9 only when `need_p999`."""
    r: dict = {"non_2xx": 0, "socket_errors": {"connect": 0, "read": 0, "write": 0, "timeout": 0}}
    m = re.search(r"^\s*Latency\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)%", output, re.M)
    if m:
        r["lat_mean_ms"] = parse_time_ms(m.group(1))
        r["lat_stdev_ms"] = parse_time_ms(m.group(2))
        r["lat_max_ms"] = parse_time_ms(m.group(3))
    dist = re.search(r"Latency Distribution\s*\n((?:\s+[0-9.]+%\s+\S+\s*\n)+)", output)
    if not dist:
        raise ValueError("no 'Latency Distribution' block (was --latency given?)")
    for pct, val in re.findall(r"([0-9.]+)%\s+(\S+)", dist.group(1)):
        r[f"p{int(float(pct))}_ms"] = parse_time_ms(val)
    m = re.search(r"(\d+) requests in ([0-9.]+)(us|ms|s|m|h)", output)
    if not m:
        raise ValueError("no 'N requests in T' line")
    r["requests"] = int(m.group(1))
    r["elapsed_s"] = float(m.group(2)) * _TIME_UNITS[m.group(3)] / 1000.0
    m = re.search(r"Requests/sec:\s*([0-9.]+)", output)
    if not m:
        raise ValueError("no 'Requests/sec' line")
    r["rps"] = float(m.group(1))
    m = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", output)
    if m:
        r["non_2xx"] = int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    if m:
        r["socket_errors"] = dict(zip(("connect", "read", "write", "timeout"),
                                      map(int, m.groups())))
    m = re.search(r"^latency\.lua: p99 ([0-9.]+)us p99\.9 ([0-9.]+)us p99\.99 ([0-9.]+)us "
                  r"max ([0-9.]+)us\s*$", output, re.M)
    if m:
        r["p999_ms"] = float(m.group(2)) / 1000.0
        r["p9999_ms"] = float(m.group(3)) / 1000.0
        r["lat_max_ms"] = float(m.group(4)) / 1000.0  # exact µs, not wrk's rounded "Max"
    for key in ("p50_ms", "p99_ms") + (("p999_ms",) if need_p999 else ()):
        if key not in r:
            raise ValueError(f"no {key[:-3]} in the latency distribution"
                             + (" (no 'latency.lua:' line)" if key == "p999_ms" else ""))
    return r


def run(url: str, threads: int, connections: int, duration_s: float) -> tuple[dict, str]:
    """Run wrk once; returns (parsed figures, raw output). Bounded by a subprocess timeout."""
    cmd = [WRK_BIN, f"-t{threads}", f"-c{connections}", f"-d{max(1, round(duration_s))}s",
           "--latency", "-s", LATENCY_LUA, "--timeout", "5s", url]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=duration_s + 60)
    out = p.stdout + p.stderr
    if p.returncode != 0:
        raise RuntimeError(f"wrk exited {p.returncode}: {out.strip()[-500:]}")
    return parse(out), out


def version() -> str:
    try:
        p = subprocess.run([WRK_BIN, "-v"], capture_output=True, text=True, timeout=10)
        m = re.search(r"wrk (\S+)", p.stdout + p.stderr)
        return m.group(1).removeprefix("debian/") if m else "?"
    except (OSError, subprocess.SubprocessError):
        return "?"


_SAMPLE = """Running 10s test @ http://127.0.0.1:8080/
  2 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   339.31us  200.09us   1.15s    93.53%
    Req/Sec    47.01k     3.46k   54.09k    71.00%
  Latency Distribution
     50%  303.00us
     75%  361.00us
     90%  445.00us
     99%    1.04ms
  935497 requests in 10.00s, 662.27MB read
  Non-2xx or 3xx responses: 5
  Socket errors: connect 0, read 1, write 0, timeout 2
Requests/sec:  93547.19
Transfer/sec:     66.23MB
latency.lua: p99 1040us p99.9 2311us p99.99 4020us max 1150123us
"""

if __name__ == "__main__":
    r = parse(_SAMPLE)
    assert r["p50_ms"] == 0.303 and r["p99_ms"] == 1.04 and r["lat_max_ms"] == 1150.123
    assert r["p999_ms"] == 2.311 and r["p9999_ms"] == 4.02
    assert r["requests"] == 935497 and r["rps"] == 93547.19 and r["non_2xx"] == 5
    assert r["socket_errors"] == {"connect": 0, "read": 1, "write": 0, "timeout": 2}
    assert parse_time_ms("2.00s") == 2000.0 and parse_time_ms("1.50m") == 90000.0
    old = _SAMPLE[:_SAMPLE.index("latency.lua:")]
    assert "p999_ms" not in parse(old, need_p999=False) and parse(old, False)["lat_max_ms"] == 1150.0
    try:
        parse(old)
        raise AssertionError("p99.9 missing but accepted")
    except ValueError:
        pass
    print("wrk parser self-test ok:", r)
