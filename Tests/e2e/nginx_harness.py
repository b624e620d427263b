"""nginx as the reference reverse proxy in the side-by-side tests.

One nginx process per test (`master_process off`, so the process that serves is the one whose
pid, RSS and descriptors are read), in the test's tmp dir: configuration, pid, logs and temp
files all live there. It proxies everything to one origin through an `upstream` block with
`keepalive 16`, so it pools upstream connections as tracegate does.

nginx must be installed (`apt-get install nginx`): without it the fixture fails, it never skips.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Callable

from helpers import free_port, process_fd_count, process_rss_kib, stop_process_group, wait_until

NGINX_BIN = os.environ.get("E2E_NGINX_BIN") or shutil.which("nginx") or "/usr/sbin/nginx"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def nginx_conf(prefix: Path, port: int, origin_port: int, server: dict[str, str] | None = None,
               websocket: bool = False) -> str:
    """A minimal proxy configuration; `server` adds directives (name -> value) to the server block.
    `websocket`: the upgrade passed on as nginx's WebSocket guide configures it."""
    extra = "".join(f"        {name} {value};\n" for name, value in (server or {}).items())
    connection = ('proxy_set_header Upgrade $http_upgrade;\n            proxy_set_header Connection "upgrade";'
                  if websocket else 'proxy_set_header Connection "";')
    return f"""daemon off;
master_process off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log {prefix}/access.log;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    upstream origin {{
        server 127.0.0.1:{origin_port};
        keepalive 16;
    }}
    server {{
        listen 127.0.0.1:{port};
{extra}        location / {{
            proxy_pass http://origin;
            proxy_http_version 1.1;
            {connection}
        }}
    }}
}}
"""


class Nginx:
    """A running nginx proxying 127.0.0.1:`port` to the origin."""

    def __init__(self, workdir: Path, origin_port: int, server: dict[str, str] | None = None,
                 preexec_fn: Callable[[], None] | None = None, websocket: bool = False):
        self.prefix = workdir / f"nginx-{free_port()}"
        self.port = free_port()
        for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (self.prefix / sub).mkdir(parents=True, exist_ok=True)
        self.conf_path = self.prefix / "nginx.conf"
        self.conf_path.write_text(nginx_conf(self.prefix, self.port, origin_port, server, websocket))
        self.stderr_path = self.prefix / "stderr"
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                [NGINX_BIN, "-p", f"{self.prefix}/", "-c", str(self.conf_path), "-e", "stderr"],
                stdin=subprocess.DEVNULL, stdout=err, stderr=err, start_new_session=True, preexec_fn=preexec_fn)
        self.pid = self.proc.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 10) -> "Nginx":
        import socket

        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"nginx exited with {self.proc.returncode} during start-up:\n{self.logs()}")
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True

        wait_until(ready, timeout, interval=0.02, message="nginx to listen")
        return self

    def running(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            stop_process_group(self.proc, signal.SIGTERM, 5, "nginx", then=signal.SIGKILL)

    def logs(self) -> str:
        """Start-up output and the error log."""
        text = self.stderr_path.read_text(errors="replace")
        error_log = self.prefix / "error.log"
        if error_log.exists():
            text += error_log.read_text(errors="replace")
        return text

    # ---- resource readings from /proc ----------------------------------------------------

    def rss_kib(self) -> int:
        return process_rss_kib(self.pid)

    def fd_count(self) -> int:
        return process_fd_count(self.pid)


class NginxFactory:
    """Starts nginx processes for one test and stops them all at teardown."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.started: list[Nginx] = []

    def __call__(self, origin_port: int, server: dict[str, str] | None = None,
                 preexec_fn: Callable[[], None] | None = None, websocket: bool = False) -> Nginx:
        if not Path(NGINX_BIN).exists():
            raise AssertionError(f"nginx not found at {NGINX_BIN}: apt-get install nginx (or set E2E_NGINX_BIN)")
        ng = Nginx(self.workdir, origin_port, server, preexec_fn, websocket)
        self.started.append(ng)
        return ng.wait_ready()

    def teardown(self) -> None:
        for ng in self.started:
            ng.stop()
