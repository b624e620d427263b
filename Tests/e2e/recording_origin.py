"""A raw-TCP origin that records what a proxy sends it, for the request-smuggling tests.

It reads each accepted connection as a strict HTTP/1.1 server would (Content-Length or chunked
framing, CRLF line endings, no obsolete folding, no control characters) and answers every request
it parsed, in order, on the same keep-alive connection:

    HTTP/1.1 200 OK
    Content-Type: application/json
    X-Origin-N: <n>
    Content-Length: <len>

    {"path": "<request target>", "n": <n>, "method": "...", "body_length": ...}

`n` numbers the answers of one origin (1, 2, ...), so a test can tell which answer reached which
client: a desync shows up as the origin answering a request no client was answered for, or a
client receiving a body that names someone else's target.

Everything is recorded: the raw bytes of each connection, every parsed request (method, target,
version, fields, body, trailer fields) and whatever the origin found wrong with what the proxy
forwarded (`anomalies`: ambiguous framing, forbidden trailer fields, parse errors). A request it
cannot parse gets a 400 and the connection is closed, as a strict server would do.

Request targets steer the answer:
  ?delay_ms=N                          wait N ms before answering (on top of `delay`)
  ?pad=N                               add N bytes of padding to the JSON body
  /respond/connection-content-length/  answer with `Connection: Content-Length` and the length
  /respond/duplicate-content-length/   answer with the Content-Length field twice (same value)
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

TOKEN = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
VERSION = re.compile(rb"^HTTP/[0-9]\.[0-9]$")
CHUNK_LINE = re.compile(rb'^([0-9A-Fa-f]+)((?:;[!#$%&\'*+\-.^_`|~0-9A-Za-z]+(?:=(?:[!#$%&\'*+\-.^_`|~0-9A-Za-z]+|"(?:[^"\\\x00-\x08\x0a-\x1f\x7f]|\\[\t\x20-\x7e\x80-\xff])*"))?)*)$')
# Fields that must never arrive as trailers: they would change how the message is framed or routed.
FORBIDDEN_TRAILERS = {"content-length", "transfer-encoding", "host", "connection", "te", "trailer",
                      "content-type", "content-encoding", "expect", "upgrade"}
# Fields a proxy must not list in a forwarded Connection header (they would turn framing hop-by-hop).
FRAMING_FIELDS = {"content-length", "transfer-encoding", "host"}


class BadRequest(Exception):
    pass


@dataclass
class OriginRequest:
    n: int
    connection: int
    method: str
    target: str
    version: str
    fields: list[tuple[str, str]]
    body: bytes = b""
    trailers: list[tuple[str, str]] = field(default_factory=list)

    @property
    def path(self) -> str:
        return urlsplit(self.target).path

    def field_values(self, name: str) -> list[str]:
        return [v for k, v in self.fields if k.lower() == name.lower()]


@dataclass
class OriginConnection:
    id: int
    raw: bytearray = field(default_factory=bytearray)
    open: bool = True
    requests: int = 0


class _Need(Exception):
    """More bytes are needed to finish the message (`expects_continue`: the head asked for 100)."""

    def __init__(self, expects_continue: bool = False):
        super().__init__()
        self.expects_continue = expects_continue


class RecordingOrigin:
    """Start with `.start()`; `.port`, `.url`; read `.requests`, `.raw(conn)`, `.anomalies`.

    delay: seconds to wait before each answer. continue_on_expect: send `100 Continue` when a head
    with `Expect: 100-continue` arrives without its body (False: wait silently for the body, as an
    origin that ignores Expect does)."""

    def __init__(self, delay: float = 0.0, name: str = "origin", continue_on_expect: bool = True):
        self.delay = delay
        self.name = name
        self.continue_on_expect = continue_on_expect
        self.lock = threading.Lock()
        self.requests: list[OriginRequest] = []
        self.connections: dict[int, OriginConnection] = {}
        self.anomalies: list[str] = []
        self._sockets: dict[int, socket.socket] = {}
        self._answers = 0
        self._stopping = False
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1024)
        self.port = self.listener.getsockname()[1]
        self._thread = threading.Thread(target=self._accept_loop, name=f"{name}-accept", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # ---- reading what was recorded --------------------------------------------------------

    def snapshot(self) -> list[OriginRequest]:
        with self.lock:
            return list(self.requests)

    def targets(self) -> list[str]:
        return [r.target for r in self.snapshot()]

    def answered(self) -> set[int]:
        """Every answer number the origin has written (or started to write)."""
        with self.lock:
            return set(range(1, self._answers + 1))

    def raw(self, connection: int) -> bytes:
        with self.lock:
            return bytes(self.connections[connection].raw)

    def open_connections(self) -> int:
        with self.lock:
            return sum(1 for c in self.connections.values() if c.open)

    def accepted_connections(self) -> int:
        with self.lock:
            return len(self.connections)

    def anomaly_list(self) -> list[str]:
        with self.lock:
            return list(self.anomalies)

    def describe(self) -> str:
        """What the origin saw, for assertion messages."""
        with self.lock:
            lines = [f"origin saw {len(self.requests)} request(s) on {len(self.connections)} connection(s):"]
            lines += [f"  #{r.n} conn {r.connection}: {r.method} {r.target} {r.version} "
                      f"body={r.body[:60]!r} trailers={r.trailers}" for r in self.requests]
            lines += [f"  anomaly: {a}" for a in self.anomalies]
            for c in self.connections.values():
                lines.append(f"  conn {c.id} raw: {bytes(c.raw[:400])!r}")
            return "\n".join(lines)

    def wait_quiet(self, quiet: float = 0.3, timeout: float = 5.0) -> None:
        """Return once no new bytes have arrived for `quiet` seconds."""
        deadline = time.monotonic() + timeout
        last = -1
        while time.monotonic() < deadline:
            with self.lock:
                total = sum(len(c.raw) for c in self.connections.values()) + self._answers
            if total == last:
                return
            last = total
            time.sleep(quiet)

    # ---- life cycle -------------------------------------------------------------------------

    def start(self) -> "RecordingOrigin":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping = True
        try:
            self.listener.close()
        except OSError:
            pass
        with self.lock:
            sockets = list(self._sockets.values())
        for s in sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                s.close()
            except OSError:
                pass

    def _accept_loop(self) -> None:
        while not self._stopping:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                cid = len(self.connections) + 1
                self.connections[cid] = OriginConnection(cid)
                self._sockets[cid] = sock
            threading.Thread(target=self._serve, args=(sock, cid), name=f"{self.name}-conn-{cid}",
                             daemon=True).start()

    # ---- one connection ---------------------------------------------------------------------

    def _serve(self, sock: socket.socket, cid: int) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buf = bytearray()
        continued = False  # 100 Continue already sent for the request being read
        try:
            while True:
                try:
                    request, used = self._parse(bytes(buf), cid)
                except _Need as need:
                    if need.expects_continue and self.continue_on_expect and not continued:
                        sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
                        continued = True
                    data = sock.recv(65536)
                    if not data:
                        if buf:
                            self._note(f"conn {cid}: closed by the proxy in the middle of a request: "
                                       f"{bytes(buf[:200])!r}")
                        return
                    with self.lock:
                        self.connections[cid].raw += data
                    buf += data
                    continue
                except BadRequest as e:
                    self._note(f"conn {cid}: unparseable bytes from the proxy ({e}): {bytes(buf[:200])!r}")
                    body = b'{"error": "origin could not parse the request"}'
                    sock.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\n"
                                 b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
                    return
                del buf[:used]
                continued = False
                self._check_head(request)
                self._check_trailers(request)
                if not self._answer(sock, request):
                    return
        except OSError:
            return
        finally:
            with self.lock:
                self.connections[cid].open = False
                self._sockets.pop(cid, None)
            try:
                sock.close()
            except OSError:
                pass

    def _note(self, anomaly: str) -> None:
        with self.lock:
            self.anomalies.append(anomaly)

    def _answer(self, sock: socket.socket, request: OriginRequest) -> bool:
        """Write the answer to `request`; False when the connection is to be closed."""
        query = parse_qs(urlsplit(request.target).query)
        delay = self.delay + int(query.get("delay_ms", ["0"])[0]) / 1000
        if delay:
            time.sleep(delay)
        pad = int(query.get("pad", ["0"])[0])
        with self.lock:
            self._answers += 1
            n = self._answers
        request.n = n
        with self.lock:
            self.requests.append(request)
            self.connections[request.connection].requests += 1
        doc = {"path": request.target, "n": n, "method": request.method, "body_length": len(request.body)}
        if pad:
            doc["pad"] = "x" * pad
        body = json.dumps(doc).encode()
        close = any("close" in v.lower() for v in request.field_values("Connection")) or request.version == "HTTP/1.0"
        head = [b"HTTP/1.1 200 OK", b"Content-Type: application/json", b"X-Origin-N: %d" % n]
        path = request.path
        if path.startswith("/respond/connection-content-length/"):
            head += [b"Connection: Content-Length", b"Content-Length: %d" % len(body)]
        elif path.startswith("/respond/duplicate-content-length/"):
            head += [b"Content-Length: %d" % len(body), b"Content-Length: %d" % len(body)]
        else:
            head.append(b"Content-Length: %d" % len(body))
        if close:
            head.append(b"Connection: close")
        sock.sendall(b"\r\n".join(head) + b"\r\n\r\n" + body)
        return not close

    # ---- strict HTTP/1.1 request parsing ------------------------------------------------------

    def _parse(self, data: bytes, cid: int) -> tuple[OriginRequest, int]:
        """One request from the start of `data`: (request, bytes used).
        Raises _Need for more bytes, BadRequest when the bytes are not a valid request."""
        end = data.find(b"\r\n\r\n")
        if end < 0:
            if len(data) > 65536:
                raise BadRequest("head over 64 KiB")
            if _bare_cr_or_lf(data):
                raise BadRequest("line not ended by CRLF")
            raise _Need()
        lines = data[:end].split(b"\r\n")
        if any(b"\n" in line or b"\r" in line for line in lines):
            raise BadRequest("bare CR or LF in the head")
        parts = lines[0].split(b" ")
        if len(parts) != 3 or not TOKEN.match(parts[0]) or not parts[1] or not VERSION.match(parts[2]):
            raise BadRequest(f"bad request line {lines[0][:100]!r}")
        method, target, version = (p.decode("latin-1") for p in parts)
        request = OriginRequest(0, cid, method, target, version, self._fields(lines[1:]))
        pos = end + 4
        te = request.field_values("Transfer-Encoding")
        cl = request.field_values("Content-Length")
        if any(not v.isascii() or not v.isdigit() for v in cl):
            raise BadRequest(f"invalid Content-Length {cl!r}")
        if len(set(cl)) > 1:
            raise BadRequest(f"conflicting Content-Length {cl!r}")
        if te:
            if [v.lower() for v in te] != ["chunked"]:
                raise BadRequest(f"transfer-encoding {te!r}")
            if cl:
                raise BadRequest("Content-Length with Transfer-Encoding")
            request.body, request.trailers, pos = self._chunked(data, pos, request)
        elif cl:
            length = int(cl[0])
            if len(data) - pos < length:
                raise _Need(self._expects_continue(request))
            request.body = data[pos:pos + length]
            pos += length
        return request, pos

    @staticmethod
    def _expects_continue(request: OriginRequest) -> bool:
        return any(v.lower() == "100-continue" for v in request.field_values("Expect"))

    @staticmethod
    def _fields(lines: list[bytes]) -> list[tuple[str, str]]:
        fields = []
        for line in lines:
            if line[:1] in (b" ", b"\t"):
                raise BadRequest("obsolete line folding")
            name, colon, value = line.partition(b":")
            if not colon or not TOKEN.match(name):
                raise BadRequest(f"bad field line {line[:100]!r}")
            value = value.strip(b" \t")
            if any((b < 0x20 and b != 0x09) or b == 0x7F for b in value):
                raise BadRequest(f"control character in field {name!r}")
            fields.append((name.decode("latin-1"), value.decode("latin-1")))
        return fields

    def _check_head(self, request: OriginRequest) -> None:
        """Note what a proxy should never have forwarded (the request was framed all the same)."""
        where = f"{request.method} {request.target} (conn {request.connection})"
        if request.version != "HTTP/1.1":
            self._note(f"{where}: forwarded as {request.version}")
        cl = request.field_values("Content-Length")
        if len(cl) > 1:
            self._note(f"{where}: {len(cl)} Content-Length fields {cl!r}")
        hosts = request.field_values("Host")
        if len(hosts) != 1:
            self._note(f"{where}: {len(hosts)} Host fields")
        for value in request.field_values("Connection"):
            if {item.strip().lower() for item in value.split(",")} & FRAMING_FIELDS:
                self._note(f"{where}: forwarded Connection: {value}")
        # Only a WebSocket handshake (RFC 6455 §4.1) keeps its Upgrade: a GET with Connection: upgrade.
        upgrades = request.field_values("Upgrade")
        connection = {item.strip().lower() for value in request.field_values("Connection") for item in value.split(",")}
        websocket = [value.strip().lower() for value in upgrades] == ["websocket"] and "upgrade" in connection \
            and request.method == "GET"
        if upgrades and not websocket:
            self._note(f"{where}: forwarded Upgrade: {upgrades}")

    def _check_trailers(self, request: OriginRequest) -> None:
        for name, value in request.trailers:
            if name.lower() in FORBIDDEN_TRAILERS:
                self._note(f"{request.method} {request.target}: trailer field {name}: {value} was forwarded")

    def _chunked(self, data: bytes, pos: int, request: OriginRequest) -> tuple[bytes, list[tuple[str, str]], int]:
        body = bytearray()
        while True:
            eol = data.find(b"\r\n", pos)
            if eol < 0:
                if _bare_cr_or_lf(data[pos:]) or len(data) - pos > 4096:
                    raise BadRequest(f"bad chunk line {data[pos:pos + 60]!r}")
                raise _Need(self._expects_continue(request) and pos == len(data))
            line = data[pos:eol]
            m = CHUNK_LINE.match(line)
            if not m:
                raise BadRequest(f"bad chunk line {line[:60]!r}")
            size = int(m.group(1), 16)
            if size > 64 * 1024 * 1024:
                raise BadRequest(f"chunk of {size} bytes")
            pos = eol + 2
            if size == 0:
                break
            if len(data) < pos + size + 2:
                raise _Need()
            body += data[pos:pos + size]
            if data[pos + size:pos + size + 2] != b"\r\n":
                raise BadRequest("chunk data not followed by CRLF")
            pos += size + 2
        lines = []
        while True:
            eol = data.find(b"\r\n", pos)
            if eol < 0:
                if _bare_cr_or_lf(data[pos:]) or len(data) - pos > 16384:
                    raise BadRequest("bad trailer section")
                raise _Need()
            if eol == pos:
                pos += 2
                break
            line = data[pos:eol]
            if b"\n" in line or b"\r" in line:
                raise BadRequest("bare CR or LF in a trailer")
            lines.append(line)
            pos = eol + 2
        return bytes(body), self._fields(lines), pos


def _bare_cr_or_lf(data: bytes) -> bool:
    """A CR not followed by LF or an LF not preceded by CR (a CR at the very end may still be)."""
    if data.endswith(b"\r"):
        data = data[:-1]
    rest = data.replace(b"\r\n", b"")
    return b"\r" in rest or b"\n" in rest
