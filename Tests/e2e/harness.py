"""tracegate as a subprocess for the end-to-end tests: start, wait ready, stop, inspect.

E2E_TRACEGATE_BIN overrides the binary (default: <repo>/.build/debug/tracegate).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from pathlib import Path
from typing import Callable

import requests

from helpers import free_port, process_fd_count, process_rss_kib, wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]
E2E_TRACEGATE_BIN = Path(os.environ.get("E2E_TRACEGATE_BIN") or REPO_ROOT / ".build" / "debug" / "tracegate")

# Teardown gives tracegate this long to drain (it should need far less with nothing in flight).
DEFAULT_GRACE = "5s"


def tracegate_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The test environment minus any TRACEGATE_* and MLFLOW_* variable, plus `extra`.

    MLFLOW_* goes too: tracegate reads MLFLOW_TRACKING_URI and friends, and the MLflow SDK in
    this process sets MLFLOW_TRACKING_URI (mlflow.set_tracking_uri), which must not turn the
    export on for tests that did not ask for it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRACEGATE_", "MLFLOW_"))}
    env.update(extra or {})
    return env


def run_tracegate(args: list[str], env: dict[str, str] | None = None, timeout: float = 10) -> subprocess.CompletedProcess:
    """Run tracegate to completion (check-config, or a start-up that must fail)."""
    return subprocess.run([str(E2E_TRACEGATE_BIN), *args], env=tracegate_env(env), capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


class Tracegate:
    """A running tracegate process; stdout and stderr go to files in the test's tmp dir."""

    def __init__(self, workdir: Path, args: list[str], env: dict[str, str], port: int, admin_port: int,
                 preexec_fn: Callable[[], None] | None = None, binary: Path = E2E_TRACEGATE_BIN):
        self.port = port
        self.admin_port = admin_port
        self.args = args
        self.stdout_path = workdir / f"tracegate-{port}.stdout"
        self.stderr_path = workdir / f"tracegate-{port}.stderr"
        # Run in the test's tmp dir: without a tracking server tracegate appends its traces to
        # ./tracegate-traces.jsonl, which belongs there rather than in the repository.
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen([str(binary), *args], stdout=out, stderr=err, cwd=workdir,
                                         stdin=subprocess.DEVNULL, env=tracegate_env(env), preexec_fn=preexec_fn)
        self.pid = self.proc.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def stdout_lines(self) -> list[str]:
        return [line for line in self.stdout().splitlines() if line.strip()]

    def running(self) -> bool:
        return self.proc.poll() is None

    def wait_ready(self, timeout: float = 15) -> None:
        def ready() -> bool:
            if not self.running():
                raise ProcessExited()
            return requests.get(f"{self.admin_url}/readyz", timeout=1).status_code == 200 and \
                _connectable(self.port)

        try:
            wait_until(ready, timeout, interval=0.02, message="tracegate /readyz")
        except ProcessExited:
            raise ProcessExited(f"tracegate exited with {self.proc.returncode} during start-up\n"
                                f"args: {self.args}\nstderr:\n{self.stderr()}") from None

    def signal(self, sig: int = signal.SIGTERM) -> None:
        self.proc.send_signal(sig)

    def wait_exit(self, timeout: float) -> int | None:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout: float = 10) -> int:
        """SIGTERM and wait; kill and fail if it does not exit in time."""
        if self.running():
            self.signal(signal.SIGTERM)
        code = self.wait_exit(timeout)
        if code is None:
            self.proc.kill()
            self.proc.wait(5)
            raise AssertionError(f"tracegate did not exit within {timeout}s of SIGTERM")
        return code

    def kill(self) -> None:
        if self.running():
            self.proc.kill()
            self.proc.wait(5)

    # ---- resource readings from /proc ------------------------------------------------

    def rss_kib(self) -> int:
        return process_rss_kib(self.pid)

    def fd_count(self) -> int:
        return process_fd_count(self.pid)

    def socket_count(self) -> int:
        n = 0
        for fd in os.listdir(f"/proc/{self.pid}/fd"):
            try:
                if os.readlink(f"/proc/{self.pid}/fd/{fd}").startswith("socket:"):
                    n += 1
            except OSError:
                pass
        return n


class ProcessExited(Exception):
    pass


def _connectable(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


class TracegateFactory:
    """Starts tracegate processes for one test and stops them all at teardown."""

    def __init__(self, workdir: Path, binary: Path = E2E_TRACEGATE_BIN):
        self.workdir = workdir
        self.binary = binary
        self.started: list[Tracegate] = []

    def __call__(self, upstream: str | None = None, *extra: str, env: dict[str, str] | None = None,
                 grace: str = DEFAULT_GRACE, wait: bool = True, subcommand: str | None = None,
                 preexec_fn: Callable[[], None] | None = None, **flags: str) -> Tracegate:
        """Start tracegate: `upstream` as --upstream, keyword flags as --key-with-dashes VALUE,
        positional `extra` verbatim, after `subcommand` if given. Listen and admin ports are
        picked here unless given. `preexec_fn` runs in the child before exec (e.g. to lower a
        resource limit)."""
        last_error: Exception | None = None
        for _attempt in range(3):
            port = int(flags.get("listen", "x:0").rsplit(":", 1)[1]) or free_port()
            admin_port = int(flags.get("admin_listen", "x:0").rsplit(":", 1)[1]) or free_port()
            args: list[str] = [subcommand] if subcommand else []
            if upstream is not None:
                args += ["--upstream", upstream]
            all_flags = {"listen": f"127.0.0.1:{port}", "admin_listen": f"127.0.0.1:{admin_port}",
                         "shutdown_grace": grace, **{k: v for k, v in flags.items()
                                                     if k not in ("listen", "admin_listen")}}
            if subcommand is None and "spool_dir" not in flags and not any(a.startswith("--spool-dir") for a in extra):
                # One spool per process (it is locked): tests that restart on the same spool pass spool_dir.
                all_flags["spool_dir"] = str(self.workdir / f"spool-{port}")
            for key, value in all_flags.items():
                args += [f"--{key.replace('_', '-')}", str(value)]
            args += list(extra)
            tg = Tracegate(self.workdir, args, env or {}, port, admin_port, preexec_fn, self.binary)
            self.started.append(tg)
            if not wait:
                return tg
            try:
                tg.wait_ready()
                return tg
            except ProcessExited as e:
                last_error = e
                if "in use" not in tg.stderr().lower():  # only a port race is worth a retry
                    raise
        raise last_error  # type: ignore[misc]

    def teardown(self) -> list[str]:
        problems = []
        for tg in self.started:
            if not tg.running():
                continue
            tg.signal(signal.SIGTERM)
            code = tg.wait_exit(10)
            if code is None:
                tg.kill()
                problems.append(f"tracegate {tg.args} did not exit within 10s of SIGTERM")
            elif code != 0:
                problems.append(f"tracegate exited {code} after SIGTERM; stderr tail:\n{tg.stderr()[-2000:]}")
        return problems


def assert_still_serves(tg: Tracegate, backend=None) -> None:
    """After a failure scenario: a normal request through the proxy still works."""
    r = requests.get(f"{tg.url}/echo?after=failure", timeout=5)
    assert r.status_code == 200, (r.status_code, r.text)
    assert r.json()["path"] == "/echo"
    if backend is not None:
        assert r.headers.get("X-Backend") == backend.name


def assert_sockets_settle(tg: Tracegate, baseline: int, slack: int = 2, timeout: float = 5) -> None:
    """The proxy's open sockets return to (about) `baseline`: no connection leaked."""
    try:
        wait_until(lambda: tg.socket_count() <= baseline + slack, timeout, interval=0.05,
                   message="tracegate socket count to settle")
    except AssertionError:
        raise AssertionError(f"tracegate holds {tg.socket_count()} sockets, baseline was {baseline} "
                             f"(+{slack} allowed): connections leak") from None

