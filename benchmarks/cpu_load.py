"""A normal-priority process that keeps a share of one CPU busy until it is killed:
`python3 cpu_load.py 0.5` works 5 ms and sleeps 5 ms, over and over. `benchmarks/run --cpu-load`
runs it beside every measurement, as a tracking server or the chat service itself would be on the
same machine. It stops by itself once the process that started it has gone; stdlib only."""

from __future__ import annotations

import argparse
import os
import sys
import time

PERIOD_S = 0.010


def share_argument(text: str) -> float:
    """A share of one CPU for `--cpu-load` options: 0 (none) to 1."""
    share = float(text)
    if not 0 <= share <= 1:
        raise argparse.ArgumentTypeError(f"a share of one CPU is from 0 to 1, not {text}")
    return share


def start(procs, tmp: str, share: float):
    """Starts this program with `share` through `procs` (a `procs.Procs`, which stops it with the rest)
    and returns its process once it has kept running for half a second."""
    proc = procs.spawn("cpu load", [sys.executable, os.path.abspath(__file__), str(share)],
                       os.path.join(tmp, "cpu-load.out"), cwd=tmp)
    time.sleep(0.5)
    if not proc.alive():
        raise SystemExit(f"cpu_load.py exited: see {proc.log_path}")
    return proc


def main() -> None:
    share = float(sys.argv[1]) if len(sys.argv) > 1 else 0.5
    if not 0 < share <= 1:
        sys.exit(f"cpu_load.py: the share of one CPU must be in (0, 1], not {share}")
    busy, idle = PERIOD_S * share, PERIOD_S * (1 - share)
    parent = os.getppid()
    while os.getppid() == parent:  # the benchmark that started it is gone: stop too
        until = time.perf_counter() + busy
        while time.perf_counter() < until:
            pass
        if idle > 0:
            time.sleep(idle)


if __name__ == "__main__":
    main()
