"""A tracking server in trouble, for the durability tests: an HTTP proxy in front of a real MLflow
server that forwards, fails with 500s, answers slowly, or refuses batches holding a marker, as the
test switches it. Only loopback; requests are read whole and forwarded with http.client."""

from __future__ import annotations

import http.client
import threading
import time
from http.server import BaseHTTPRequestHandler
from urllib.parse import urlsplit

from helpers import LoopbackHTTPServer


class FaultProxy(LoopbackHTTPServer):
    """`mode` is one of: "pass" (forward), "fail" (500 to everything), "slow" (forward after
    `delay` seconds), "reject" (400 INVALID_PARAMETER_VALUE for a request whose body holds
    `marker`, forward the rest)."""

    def __init__(self, upstream_url: str):
        target = urlsplit(upstream_url)
        self.upstream = (target.hostname, target.port)
        self.mode = "pass"
        self.delay = 2.0
        self.marker = b""
        self.counts: dict[str, int] = {}
        self._lock = threading.Lock()
        super().__init__()

    def count(self, what: str) -> int:
        with self._lock:
            return self.counts.get(what, 0)

    def _note(self, what: str) -> None:
        with self._lock:
            self.counts[what] = self.counts.get(what, 0) + 1

    def handler(self):
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format, *args):  # noqa: A002 - stdlib signature
                pass

            def do_GET(self):
                self._handle()

            def do_POST(self):
                self._handle()

            def _reply(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                mode = proxy.mode
                proxy._note(f"{mode} {self.path.split('?')[0]}")
                if mode == "fail":
                    return self._reply(500, b'{"error_code":"INTERNAL_ERROR","message":"injected"}')
                if mode == "reject" and proxy.marker and proxy.marker in body:
                    return self._reply(400, b'{"error_code":"INVALID_PARAMETER_VALUE","message":"injected rejection"}')
                if mode == "slow":
                    time.sleep(proxy.delay)
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("host", "connection", "content-length", "transfer-encoding")}
                conn = http.client.HTTPConnection(*proxy.upstream, timeout=60)
                try:
                    conn.request(self.command, self.path, body=body, headers=headers)
                    response = conn.getresponse()
                    data = response.read()
                except OSError:
                    return self._reply(502, b'{"error":"upstream unreachable"}')
                finally:
                    conn.close()
                self.send_response(response.status)
                for k, v in response.getheaders():
                    if k.lower() not in ("connection", "content-length", "transfer-encoding", "date", "server"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler
