"""A normal-priority process that keeps a share of one CPU busy until it is killed:
`python3 cpu_load.py 0.5` works 5 ms and sleeps 5 ms, over and over. `benchmarks/run --cpu-load`
runs it beside every measurement, as a tracking server or the chat service itself would be on the
same machine; stdlib only."""

from __future__ import annotations

import sys
import time

PERIOD_S = 0.010


def main() -> None:
    share = float(sys.argv[1]) if len(sys.argv) > 1 else 0.5
    if not 0 < share <= 1:
        sys.exit(f"cpu_load.py: the share of one CPU must be in (0, 1], not {share}")
    busy, idle = PERIOD_S * share, PERIOD_S * (1 - share)
    while True:
        until = time.perf_counter() + busy
        while time.perf_counter() < until:
            pass
        if idle > 0:
            time.sleep(idle)


if __name__ == "__main__":
    main()
