"""Process bookkeeping for the benchmark: start, wait for, measure and stop processes.

- Every process is started in its own session (so its group id is its pid) and stopped by
  that group id only: SIGTERM, then SIGKILL after a bounded wait. Nothing is matched by name.
- Free loopback ports are picked by binding 127.0.0.1:0.
- CPU is read from /proc/PID/stat (utime+stime, all threads) and memory from
  /proc/PID/status (VmRSS, VmHWM), summed over a process and its descendants
  (nginx: master + workers).
"""

from __future__ import annotations

import http.client
import os
import re
import shutil
import signal
import socket
import subprocess
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_ports(n: int) -> list[int]:
    """n distinct free TCP ports on 127.0.0.1 (all held open together while picking)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class Proc:
    def __init__(self, name: str, popen: subprocess.Popen, log_path: str):
        self.name, self.popen, self.log_path = name, popen, log_path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, n: int = 2000) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - n))
                return f.read().decode(errors="replace")
        except OSError:
            return ""


class Procs:
    """Everything this run started; stop_all() ends exactly those process groups."""

    def __init__(self) -> None:
        self.procs: list[Proc] = []

    def spawn(self, name: str, argv: list[str], log_path: str, cwd: str | None = None,
              env: dict | None = None) -> Proc:
        log = open(log_path, "ab")
        try:
            p = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, cwd=cwd, env=env,
                                 start_new_session=True)
        finally:
            log.close()
        proc = Proc(name, p, log_path)
        self.procs.append(proc)
        return proc

    def stop(self, proc: Proc, timeout: float = 5.0) -> None:
        pgid = proc.pid  # start_new_session: the group id is the leader's pid
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(pgid, sig)
            except (ProcessLookupError, PermissionError):
                pass
            if _wait_group_gone(proc, timeout):
                break
        try:
            proc.popen.wait(timeout=1)
        except subprocess.TimeoutExpired:
            pass
        if proc in self.procs:
            self.procs.remove(proc)

    def stop_all(self) -> None:
        for proc in reversed(list(self.procs)):
            self.stop(proc)


def _wait_group_gone(proc: Proc, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        proc.popen.poll()  # reap the leader so it does not linger as a zombie
        if not _group_alive(proc.pid):
            return True
        time.sleep(0.05)
    return False


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # Zombies still count for killpg; look for a live member.
    for pid in _all_pids():
        st = _stat_fields(pid)
        if st and int(st[2]) == pgid and st[0] != "Z":
            return True
    return False


def _all_pids() -> list[int]:
    return [int(d) for d in os.listdir("/proc") if d.isdigit()]


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name: [state, ppid, pgrp, ...]."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
    except OSError:
        return None
    return s[s.rindex(")") + 2:].split()


def tree(pid: int) -> list[int]:
    """pid and all its descendants."""
    children: dict[int, list[int]] = {}
    for p in _all_pids():
        st = _stat_fields(p)
        if st:
            children.setdefault(int(st[1]), []).append(p)
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def cpu_seconds(pids: list[int]) -> float:
    """utime+stime of the given processes (all their threads), in seconds."""
    total = 0
    for pid in pids:
        st = _stat_fields(pid)
        if st:
            total += int(st[11]) + int(st[12])  # fields 14 and 15 of stat
    return total / CLK_TCK


def num_threads(pids: list[int]) -> int:
    """Threads of the given processes, summed (field 20 of /proc/PID/stat)."""
    return sum(int(st[17]) for st in map(_stat_fields, pids) if st)


def mem_kib(pids: list[int]) -> dict:
    """Summed VmRSS and VmHWM (KiB) of the given processes."""
    rss = hwm = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        rss += int(line.split()[1])
                    elif line.startswith("VmHWM:"):
                        hwm += int(line.split()[1])
        except OSError:
            pass
    return {"rss_kib": rss, "hwm_kib": hwm}


def system_busy_seconds() -> float:
    """Busy CPU time of the whole machine (all cores) from /proc/stat, in seconds."""
    with open("/proc/stat") as f:
        vals = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal guest guest_nice; guest is in user.
    busy = sum(vals[:8]) - vals[3] - vals[4]
    return busy / CLK_TCK


def wait_port(port: int, proc: Proc | None, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and not proc.alive():
            raise RuntimeError(f"{proc.name} exited ({proc.popen.returncode}) before listening "
                               f"on {port}:\n{proc.log_tail()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on 127.0.0.1:{port} after {timeout:.0f}s"
                       + (f" ({proc.name}):\n{proc.log_tail()}" if proc else ""))


def wait_http_200(port: int, path: str, proc: Proc | None, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if proc is not None and not proc.alive():
            raise RuntimeError(f"{proc.name} exited ({proc.popen.returncode}) before "
                               f"GET {path} answered 200:\n{proc.log_tail()}")
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            c.request("GET", path)
            st = c.getresponse().status
            c.close()
            if st == 200:
                return
            last = f"status {st}"
        except OSError as e:
            last = str(e)
        time.sleep(0.1)
    raise RuntimeError(f"GET http://127.0.0.1:{port}{path} not 200 after {timeout:.0f}s ({last})"
                       + (f" ({proc.name}):\n{proc.log_tail()}" if proc else ""))


def clean_up(p: "Procs", tmp: str, keep_tmp: bool, log) -> None:
    """End of a benchmark run: stop every process (signals can no longer cut this short), then
    remove the temp dir unless it is to be kept."""
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)
    p.stop_all()
    if keep_tmp:
        log(f"kept {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)


def http_get(port: int, path: str, timeout: float = 5) -> bytes:
    """The body of GET 127.0.0.1:port/path; RuntimeError unless the status is 200."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("GET", path)
        r = c.getresponse()
        body = r.read()
        if r.status != 200:
            raise RuntimeError(f"GET :{port}{path}: status {r.status}")
        return body
    finally:
        c.close()


def tracegate_metrics(admin_port: int) -> dict[str, float]:
    """tracegate's counters and gauges from /metrics on its admin port: unlabelled ones by name
    without the `tracegate_` prefix, plus `requests_POST_2xx`-style keys for tracegate_requests_total.
    Histograms are left out; empty when /metrics cannot be read."""
    out: dict[str, float] = {}
    try:
        text = http_get(admin_port, "/metrics").decode()
    except (OSError, RuntimeError, http.client.HTTPException):
        return out
    for line in text.splitlines():
        if not line.startswith("tracegate_") or "_bucket{" in line:
            continue
        key, _, val = line.rpartition(" ")
        name, _, labels = key.removeprefix("tracegate_").partition("{")
        values = re.findall(r'="([^"]*)"', labels)  # {method="POST",status_class="2xx"}
        name = name.removesuffix("_total") if name == "requests_total" else name
        try:
            out["_".join([name] + values)] = float(val)
        except ValueError:
            pass
    return out
