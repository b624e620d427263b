"""nginx configurations for the benchmark: the origin and the reference proxy.

- origin: `return 200` with a ~500-byte JSON chat-completion body, 1 worker,
  keepalive, access_log off. It is what every throughput run ends at.
- proxy: the reference reverse proxy (`proxy_pass` to an `upstream { keepalive 64; }`
  block, HTTP/1.1 upstream, no buffering either way, no body size limit), 1 worker.

Every instance lives in its own temp dir (`-p DIR -c DIR/nginx.conf -e DIR/error.log`),
runs in the foreground (`daemon off`) and writes its pid, logs and temp files there only.

Run as a script, `python3 benchmarks/nginx.py standin --upstream URL --listen HOST:PORT
--admin-listen HOST:PORT [--threads N] [--access-log off]` starts an nginx proxy that
takes tracegate's flags and answers GET /healthz on the admin address. It exists only to
develop and check the benchmark without a tracegate build:
`benchmarks/run --proxy-cmd 'python3 benchmarks/nginx.py standin'`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import urllib.parse

# A typical non-streaming chat-completion response: 493 bytes.
CHAT_COMPLETION_BODY = (
    '{"id":"chatcmpl-9xKq2bT7cQ4mZ1vN8pLwR3sYdE6f","object":"chat.completion",'
    '"created":1718000000,"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,'
    '"message":{"role":"assistant","content":"Hello! The proxy forwarded this request '
    'and the response came back unchanged. Is there anything else you would like to '
    'check about latency or streaming?"},"logprobs":null,"finish_reason":"stop"}],'
    '"usage":{"prompt_tokens":21,"completion_tokens":31,"total_tokens":52},'
    '"system_fingerprint":"fp_0ba0d124f1"}'
)

NGINX_BIN = shutil.which("nginx") or "/usr/sbin/nginx"


def _common_head(prefix: str, workers: int | str, connections: int = 8192) -> str:
    """Main-context lines shared by every instance; all paths inside `prefix`. Above the default
    8192 `connections`, the workers' open-file limit is raised to match."""
    user = "user root root;\n" if os.geteuid() == 0 else ""
    nofile = f"worker_rlimit_nofile {connections + 1024};\n" if connections > 8192 else ""
    return f"""{user}worker_processes {workers};
{nofile}daemon off;
master_process on;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections {connections}; }}
"""


def _http_common(prefix: str, access_log: str | None = None) -> str:
    """`access_log`: a file for nginx's default `combined` log (written per request), or None
    for no access log."""
    log = f"access_log {access_log} combined;" if access_log else "access_log off;"
    return f"""    {log}
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    tcp_nodelay on;
"""


def origin_conf(prefix: str, port: int) -> str:
    body = CHAT_COMPLETION_BODY
    assert "'" not in body and "$" not in body and "\\" not in body
    return _common_head(prefix, 1) + f"""http {{
{_http_common(prefix)}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            default_type application/json;
            return 200 '{body}';
        }}
    }}
}}
"""


def proxy_conf(prefix: str, port: int, upstream_host: str, upstream_port: int,
               workers: int | str = 1, admin_port: int | None = None,
               connections: int = 8192, access_log: str | None = None) -> str:
    admin = ""
    if admin_port is not None:
        admin = f"""
    server {{
        listen 127.0.0.1:{admin_port};
        location = /healthz {{ default_type text/plain; return 200 'ok'; }}
        location / {{ return 404; }}
    }}
"""
    return _common_head(prefix, workers, connections) + f"""http {{
{_http_common(prefix, access_log)}
    upstream origin {{
        server {upstream_host}:{upstream_port};
        keepalive 64;
        keepalive_requests 1000000;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        client_max_body_size 0;
        location / {{
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_buffering off;
            proxy_request_buffering off;
        }}
    }}
{admin}}}
"""


def write_instance(prefix: str, conf: str) -> list[str]:
    """Write `conf` into `prefix` and return the argv that runs it in the foreground."""
    os.makedirs(prefix, exist_ok=True)
    if os.geteuid() == 0:
        os.chmod(prefix, 0o755)
    for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        os.makedirs(os.path.join(prefix, sub), exist_ok=True)
    path = os.path.join(prefix, "nginx.conf")
    with open(path, "w") as f:
        f.write(conf)
    return [NGINX_BIN, "-p", prefix + "/", "-c", path, "-e", os.path.join(prefix, "error.log")]


def nginx_version() -> str:
    import subprocess
    try:
        out = subprocess.run([NGINX_BIN, "-v"], capture_output=True, text=True, timeout=10)
        return (out.stderr or out.stdout).strip().split("/")[-1]
    except (OSError, subprocess.SubprocessError):
        return "?"


def _hostport(s: str) -> tuple[str, int]:
    host, _, port = s.rpartition(":")
    return host.strip("[]"), int(port)


def _standin(argv: list[str]) -> None:
    """Exec an nginx proxy that accepts tracegate's command-line flags (development only)."""
    ap = argparse.ArgumentParser(prog="nginx.py standin")
    ap.add_argument("--upstream", required=True)
    ap.add_argument("--listen", required=True)
    ap.add_argument("--admin-listen", required=True)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--access-log", default="off")
    ap.add_argument("--trace-file", default="")
    args, _unknown = ap.parse_known_args(argv)
    up = urllib.parse.urlsplit(args.upstream)
    _, port = _hostport(args.listen)
    _, admin_port = _hostport(args.admin_listen)
    # The orchestrator points TMPDIR at its own temp dir, which it removes at the end.
    prefix = tempfile.mkdtemp(prefix="standin-")
    conf = proxy_conf(prefix, port, up.hostname or "127.0.0.1", up.port or 80,
                      workers=args.threads if args.threads > 0 else "auto",
                      admin_port=admin_port)
    cmd = write_instance(prefix, conf)
    sys.stdout.flush()
    os.execv(cmd[0], cmd)


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "standin":
        _standin(sys.argv[2:])
    elif len(sys.argv) >= 2 and sys.argv[1] == "body-size":
        print(len(CHAT_COMPLETION_BODY.encode()))
    else:
        print(__doc__)
        sys.exit(2)
