"""Small tools shared by the end-to-end tests: waiting on conditions and a raw HTTP/1.1 client.

The raw client exists because `requests`/`urllib3` normalise what we want to observe:
header case and order, duplicate headers, framing, exact bytes on the wire, arrival times.
"""

from __future__ import annotations

import html
import json
import os
import random
import re
import signal
import socket
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, TypeVar

T = TypeVar("T")

UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


def wait_until(condition: Callable[[], T], timeout: float, interval: float = 0.02, message: str = "") -> T:
    """Poll `condition` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            value = condition()
            if value:
                return value
        except Exception as e:  # the condition may throw while the thing is not ready
            last_error = e
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error!r})" if last_error else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {message or condition}{detail}")
        time.sleep(interval)


_ports_handed_out: set[int] = set()
_ports_lock = threading.Lock()


def _ephemeral_range_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on, for a server to bind. Taken below the kernel's ephemeral range, so
    no outgoing connection (the tests open thousands) can take it before the server binds it, and
    never handed out twice by this process (a listener and its admin port once got the same one)."""
    limit = _ephemeral_range_start()
    with _ports_lock:
        for _ in range(200):
            port = random.randint(10000, limit - 1)
            if port in _ports_handed_out:
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                try:
                    s.bind((host, port))
                except OSError:
                    continue
            _ports_handed_out.add(port)
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def new_tag() -> str:
    return uuid.uuid4().hex[:12]


class Eof(Exception):
    """The peer closed the connection before a complete message was read."""

    def __init__(self, message: str, partial: bytes = b""):
        super().__init__(message)
        self.partial = partial


@dataclass
class Response:
    status: int
    reason: str
    version: str
    headers: list[tuple[str, str]]  # as received: order and case preserved
    body: bytes = b""
    framing: str = ""  # "content-length", "chunked", "close" or "none"
    head_raw: bytes = b""

    def header(self, name: str) -> str | None:
        """The first value of header `name` (case-insensitive), or None."""
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def header_all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def header_names_lower(self) -> set[str]:
        return {k.lower() for k, _ in self.headers}

    def json(self):
        return json.loads(self.body)

    def __repr__(self) -> str:
        body = self.body if len(self.body) <= 300 else self.body[:300] + b"..."
        return f"Response({self.status} {self.reason!r}, headers={self.headers!r}, body={body!r})"


class RawHTTP:
    """One client connection; write bytes as you like, read responses back exactly."""

    def __init__(self, host: str, port: int, timeout: float = 10.0, source_ip: str | None = None):
        self.sock = socket.create_connection((host, port), timeout=timeout,
                                             source_address=(source_ip, 0) if source_ip else None)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.host = host
        self.port = port

    # ---- writing -------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def request(self, method: str, target: str, headers: list[tuple[str, str]] | None = None,
                body: bytes | None = None, host: str | None = None) -> None:
        """Send a request. A Host header is added unless `headers` has one; a
        Content-Length is added when `body` is given and `headers` has no framing."""
        headers = list(headers or [])
        names = {k.lower() for k, _ in headers}
        if "host" not in names:
            headers.insert(0, ("Host", host or f"{self.host}:{self.port}"))
        if body is not None and not names & {"content-length", "transfer-encoding"}:
            headers.append(("Content-Length", str(len(body))))
        head = f"{method} {target} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n"
        self.send(head.encode("latin-1") + (body or b""))

    # ---- reading -------------------------------------------------------------------

    def _fill(self) -> bool:
        data = self.sock.recv(256 * 1024)
        if not data:
            return False
        self.buf += data
        return True

    def read_until(self, sep: bytes) -> bytes:
        while sep not in self.buf:
            if not self._fill():
                raise Eof(f"connection closed while waiting for {sep!r}", self.buf)
        i = self.buf.index(sep) + len(sep)
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def read_exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not self._fill():
                raise Eof(f"connection closed after {len(self.buf)} of {n} bytes", self.buf)
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_some(self) -> bytes:
        """Whatever is buffered, or the next recv (b'' at EOF)."""
        if self.buf:
            out, self.buf = self.buf, b""
            return out
        return self.sock.recv(256 * 1024)

    def read_to_eof(self) -> bytes:
        while self._fill():
            pass
        out, self.buf = self.buf, b""
        return out

    def read_head(self) -> Response:
        head = self.read_until(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        version, _, rest = lines[0].partition(" ")
        code, _, reason = rest.partition(" ")
        headers = []
        for line in lines[1:]:
            if line:
                k, _, v = line.partition(":")
                headers.append((k, v.strip(" \t")))
        return Response(int(code), reason, version, headers, head_raw=head)

    def iter_body(self, resp: Response, method: str = "GET") -> Iterator[bytes]:
        """Yield the body of `resp` as it arrives (chunk payloads for chunked bodies)."""
        te = ",".join(resp.header_all("Transfer-Encoding")).lower()
        cl = resp.header_all("Content-Length")
        if method == "HEAD" or resp.status in (204, 304) or 100 <= resp.status < 200:
            resp.framing = "none"
            return
        if "chunked" in te:
            resp.framing = "chunked"
            while True:
                size = int(self.read_until(b"\r\n").split(b";")[0].strip(), 16)
                if size == 0:
                    while self.read_until(b"\r\n") != b"\r\n":
                        pass
                    return
                yield self.read_exact(size)
                if self.read_exact(2) != b"\r\n":
                    raise AssertionError("bad chunk terminator")
        elif cl:
            resp.framing = "content-length"
            remaining = int(cl[0])
            while remaining:
                if not self.buf and not self._fill():
                    raise Eof(f"connection closed with {remaining} body bytes missing")
                part, self.buf = self.buf[:remaining], self.buf[remaining:]
                remaining -= len(part)
                yield part
        else:
            resp.framing = "close"
            while True:
                part = self.read_some()
                if not part:
                    return
                yield part

    def read_response(self, method: str = "GET", skip_interim: bool = True) -> Response:
        while True:
            resp = self.read_head()
            if skip_interim and 100 <= resp.status < 200 and resp.status != 101:
                continue
            break
        resp.body = b"".join(self.iter_body(resp, method))
        return resp

    def is_closed_by_peer(self, timeout: float) -> bool:
        """True if the peer closes (EOF or reset) within `timeout` seconds with nothing else sent."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(1)
            return data == b""
        except (ConnectionResetError, BrokenPipeError):
            return True
        except socket.timeout:
            return False

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self) -> "RawHTTP":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def raw_request(port: int, method: str, target: str, headers: list[tuple[str, str]] | None = None,
                body: bytes | None = None, host: str = "127.0.0.1", timeout: float = 10.0,
                source_ip: str | None = None) -> Response:
    """One request on a fresh connection, read back exactly."""
    with RawHTTP(host, port, timeout=timeout, source_ip=source_ip) as c:
        c.request(method, target, headers, body)
        return c.read_response(method)


def send_raw(port: int, data: bytes, timeout: float = 10.0) -> Response:
    """Send arbitrary bytes on a fresh connection and read one response."""
    with RawHTTP("127.0.0.1", port, timeout=timeout) as c:
        c.send(data)
        return c.read_response()


def assert_json_error(resp: Response, status: int) -> dict:
    """The proxy's own error shape: the status, a JSON body with `error` and `request_id`,
    and the request id echoed in the response header."""
    assert resp.status == status, resp
    ctype = resp.header("Content-Type") or ""
    assert "json" in ctype.lower(), f"error response is not JSON: {resp!r}"
    body = resp.json()
    assert isinstance(body.get("error"), str) and body["error"], body
    assert isinstance(body.get("request_id"), str) and body["request_id"], body
    header_id = resp.header("X-Request-ID")
    assert header_id == body["request_id"], f"X-Request-ID header {header_id!r} != body {body!r}"
    return body


def stop_process_group(proc: subprocess.Popen, first: int, timeout: float, what: str,
                       then: int | None = None) -> None:
    """Stops a process that leads its own group (`start_new_session`) and everything it started:
    `first` to the group, up to `timeout` s for the leader to exit (then `then`, if given), up to 5 s
    more for the rest of the group, and SIGKILL for whatever is left."""
    pgid = proc.pid
    signal_group(pgid, first)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        if then is not None:
            signal_group(pgid, then)
    try:
        wait_until(lambda: not group_alive(pgid), 5, interval=0.1, message=f"{what} to exit")
    except AssertionError:
        pass
    signal_group(pgid, signal.SIGKILL)
    if proc.poll() is None:
        proc.wait(5)


def signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


class LoopbackHTTPServer:
    """A `ThreadingHTTPServer` on a free loopback port, served from a daemon thread. Subclasses give
    `handler()`, the request handler class (built after their own state is set)."""

    def __init__(self):
        from http.server import ThreadingHTTPServer

        self.port = free_port()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), self.handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def handler(self):
        raise NotImplementedError

    def start(self):
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def process_rss_kib(pid: int) -> int:
    """Resident memory of process `pid`, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def process_fd_count(pid: int) -> int:
    """Open file descriptors of process `pid`, from /proc."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def browser_result(url: str) -> str:
    """What a page shows in `<pre id="result">` once headless chromium has run it (10 s of virtual time)."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "chromium is needed for this test (apt-get install chromium; .ci/run installs it)"
    with tempfile.TemporaryDirectory() as profile:
        result = subprocess.run(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}",
             "--virtual-time-budget=10000", "--dump-dom", url],
            capture_output=True, text=True, timeout=60)
    match = re.search(r'<pre id="result">(.*?)</pre>', result.stdout, re.S)
    assert match, (result.returncode, result.stdout[-2000:], result.stderr[-2000:])
    return html.unescape(match.group(1))


class StaticPage(LoopbackHTTPServer):
    """One HTML page, served at every path from a loopback origin (a browser lets such a page reach
    other loopback ports; a `data:` page it does not). What the page POSTs is kept in `posted`.
    Subclasses may write the page when it is asked for (`html`)."""

    def __init__(self, html_text: str = ""):
        self.html_text = html_text
        self.posted: list[bytes] = []
        super().__init__()

    def html(self) -> str:
        return self.html_text

    def handler(self):
        from http.server import BaseHTTPRequestHandler

        page, posted = self, self.posted

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                posted.append(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
                self.send_response(204)
                self.end_headers()

            def do_GET(self):
                body = page.html().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format, *args):  # noqa: A002 - stdlib signature
                pass

        return Handler


def browser_posts(page: StaticPage, timeout: float = 30) -> bytes:
    """Opens `page` in headless chromium (real time, so WebSockets run as they would) until the page
    POSTs its result back; returns that result."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "chromium is needed for this test (apt-get install chromium; .ci/run installs it)"
    with tempfile.TemporaryDirectory() as profile:
        proc = subprocess.Popen([chromium, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}",
                                 page.url], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            wait_until(lambda: page.posted, timeout, interval=0.1, message="the page to post its result")
        finally:
            stop_process_group(proc, signal.SIGTERM, 5, "chromium", then=signal.SIGKILL)
    return page.posted[0]


class BrowserTab:
    """Headless chromium driven over the DevTools protocol, for pages a test cannot write itself (a
    Streamlit app): navigate, evaluate JavaScript, type into the focused element, press keys."""

    def __init__(self) -> None:
        import websocket

        chromium = shutil.which("chromium") or shutil.which("chromium-browser")
        assert chromium, "chromium is needed for this test (apt-get install chromium; .ci/run installs it)"
        self.profile = tempfile.mkdtemp()
        self.proc = subprocess.Popen(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={self.profile}",
             "--remote-debugging-port=0", "--remote-allow-origins=*", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        active = Path(self.profile) / "DevToolsActivePort"
        port = wait_until(lambda: active.exists() and active.read_text().split()[:1], 30,
                          message="chromium to open its DevTools port")[0]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as response:
            page = next(target for target in json.load(response) if target["type"] == "page")
        self.devtools = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=30, suppress_origin=True)
        self.calls = 0

    def call(self, method: str, **params):
        self.calls += 1
        self.devtools.send(json.dumps({"id": self.calls, "method": method, "params": params}))
        while True:
            reply = json.loads(self.devtools.recv())
            if reply.get("id") == self.calls:
                assert "error" not in reply, (method, reply["error"])
                return reply["result"]

    def evaluate(self, expression: str):
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 30):
        return wait_until(lambda: self.evaluate(expression), timeout, interval=0.2, message=expression)

    def type_and_enter(self, text: str) -> None:
        """Types `text` into the focused element as a user would, then presses Enter."""
        self.call("Input.insertText", text=text)
        for kind in ("keyDown", "keyUp"):
            self.call("Input.dispatchKeyEvent", type=kind, key="Enter", code="Enter", windowsVirtualKeyCode=13,
                      **({"text": "\r"} if kind == "keyDown" else {}))

    def close_page(self) -> None:
        """Closes the tab as a user would (its page unloads); the browser keeps running."""
        self.calls += 1
        self.devtools.send(json.dumps({"id": self.calls, "method": "Page.close", "params": {}}))

    def close(self) -> None:
        self.devtools.close()
        stop_process_group(self.proc, signal.SIGTERM, 5, "chromium", then=signal.SIGKILL)
        shutil.rmtree(self.profile, ignore_errors=True)
