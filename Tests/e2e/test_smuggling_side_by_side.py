"""Request smuggling and slow clients, tracegate side by side with nginx.

Every case runs through tracegate and through nginx (`proxy_pass` to an `upstream` block with
`keepalive 16`, see nginx_harness.py), each in front of a `RecordingOrigin`: a strict raw-TCP
HTTP/1.1 origin that records every byte it receives and answers each request it parses with a body
naming that request and numbering the answer. tracegate must be at least as safe as nginx: the
same safety checks apply to both, and tracegate must in addition refuse what its README says it
refuses.

A smuggling case: an attacker writes its bytes on a keep-alive connection; then innocent clients
(sequential fresh connections, one keep-alive connection, concurrent connections) send requests
with unique targets through the same proxy, so that pooled upstream connections are reused. Then:

- every innocent receives exactly the answer for its own target;
- every answer the origin wrote reached a client whose request it names: an origin that parsed a
  request the proxy did not answer for is a desync;
- a request hidden inside a body (`GET /smuggled/...`) never reaches the origin;
- the attacker gets the answer for its own request (and for its follow-up), or a refusal (4xx,
  or 501 for an unknown transfer coding) and the connection closed;
- the origin never receives ambiguous framing: two Content-Length fields, Content-Length with
  Transfer-Encoding, a coding other than chunked, framing fields as trailers, a `Connection`
  naming a framing field, an `Upgrade`, or bytes it cannot parse.

Slow-client cases run a few hundred connections against each proxy (with the same timeouts on
both) and read memory from /proc; tracegate-only features (`max_connections`, the metrics) are
tested on tracegate alone.
"""

from __future__ import annotations

import json
import os
import resource
import selectors
import socket
import subprocess
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest
import requests

from harness import Tracegate
from helpers import Eof, RawHTTP, Response, assert_json_error, free_port, wait_until
from nginx_harness import NGINX_BIN, Nginx, NginxFactory
from recording_origin import RecordingOrigin

KINDS = ["tracegate", "nginx"]
# Settings both proxies have under the same name and syntax.
SHARED_SETTINGS = ("client_header_timeout", "client_body_timeout", "send_timeout")
CLK_TCK = os.sysconf("SC_CLK_TCK")
NODE_ORIGIN = Path(__file__).with_name("node_origin.js")
# Seconds a test may take unless marked @pytest.mark.budget(seconds).
DEFAULT_BUDGET = 20


# ---- the two proxies ----------------------------------------------------------------------------


@dataclass
class Proxy:
    """tracegate or nginx, as the tests see it: a port and a process to read /proc from."""

    kind: str
    process: Tracegate | Nginx

    @property
    def port(self) -> int:
        return self.process.port

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def tracegate(self) -> Tracegate:
        assert isinstance(self.process, Tracegate)
        return self.process

    def rss_kib(self) -> int:
        return self.process.rss_kib()

    def fd_count(self) -> int:
        return self.process.fd_count()

    def cpu_seconds(self) -> float:
        """User + system CPU time of the process, all threads."""
        stat = Path(f"/proc/{self.pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2:].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def logs(self) -> str:
        return self.process.stderr() if isinstance(self.process, Tracegate) else self.process.logs()


@pytest.fixture(autouse=True)
def time_budget(request):
    """Fails a test that takes longer than its budget (a hang or a slow-down is a finding)."""
    marker = request.node.get_closest_marker("budget")
    budget = marker.args[0] if marker else DEFAULT_BUDGET
    t0 = time.monotonic()
    yield
    elapsed = time.monotonic() - t0
    assert elapsed <= budget, f"{request.node.name} took {elapsed:.1f}s, over its {budget}s budget"


@pytest.fixture
def origin():
    o = RecordingOrigin().start()
    yield o
    o.stop()


@pytest.fixture
def start_proxy(request, tmp_path):
    """A factory: start_proxy(kind, origin, **settings) -> Proxy. tracegate gets every setting as a
    flag; nginx gets the ones it shares (`SHARED_SETTINGS`) plus `nginx_server` directives.
    (`start_tracegate` is only asked for when tracegate is started, so the nginx side runs alone.)"""
    if not Path(NGINX_BIN).exists():
        pytest.fail(f"nginx not found at {NGINX_BIN}: apt-get install nginx (or set E2E_NGINX_BIN)")
    nginxes = NginxFactory(tmp_path)

    def start(kind: str, upstream: RecordingOrigin | int, preexec_fn: Callable[[], None] | None = None,
              nginx_server: dict[str, str] | None = None, **settings: str) -> Proxy:
        port = upstream if isinstance(upstream, int) else upstream.port
        if kind == "tracegate":
            start_tracegate = request.getfixturevalue("start_tracegate")
            return Proxy(kind, start_tracegate(f"http://127.0.0.1:{port}", preexec_fn=preexec_fn, **settings))
        shared = {k: v for k, v in settings.items() if k in SHARED_SETTINGS}
        return Proxy(kind, nginxes(port, {**shared, **(nginx_server or {})}, preexec_fn))

    yield start
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        for ng in nginxes.started:
            print(f"\n--- nginx {ng.conf_path}\n{ng.logs()[-3000:]}")
    nginxes.teardown()


# ---- small tools ----------------------------------------------------------------------------------


def tag() -> str:
    return uuid.uuid4().hex[:12]


def origin_n(resp: Response) -> int | None:
    """The origin's answer number, or None for a response the proxy wrote itself."""
    value = resp.header("X-Origin-N")
    return int(value) if value is not None else None


def answered_path(resp: Response) -> str:
    return resp.json()["path"]


def is_refusal(resp: Response) -> bool:
    """A proxy's own refusal: a client error, or 501 for a transfer coding it does not implement."""
    return origin_n(resp) is None and (400 <= resp.status < 500 or resp.status == 501)


def read_responses(c: RawHTTP, first_wait: float, quiet: float) -> tuple[list[Response], bool]:
    """Every response that arrives on `c`: the first within `first_wait`, the next ones until
    `quiet` seconds pass without one. Returns (responses, closed by the peer)."""
    responses: list[Response] = []
    while True:
        c.sock.settimeout(first_wait if not responses else quiet)
        try:
            responses.append(c.read_response())
        except (socket.timeout, TimeoutError):
            return responses, False
        except (Eof, ConnectionResetError, BrokenPipeError):
            return responses, True


def innocent_request(port: int, target: str, timeout: float = 5) -> Response:
    with RawHTTP("127.0.0.1", port, timeout=timeout) as c:
        c.request("GET", target)
        return c.read_response()


@dataclass
class Traffic:
    """What innocent clients sent and got: target -> the response, in the order sent."""

    answers: dict[str, Response] = field(default_factory=dict)

    def check(self) -> None:
        for target, resp in self.answers.items():
            assert resp.status == 200 and origin_n(resp) is not None, \
                f"innocent {target} was not answered by the origin: {resp!r}"
            assert answered_path(resp) == target, \
                f"innocent {target} received the answer for {answered_path(resp)}: {resp!r}"


def innocent_traffic(port: int, prefix: str, sequential: int = 3, kept_alive: int = 3,
                     concurrent: int = 8) -> Traffic:
    """Innocent clients with unique targets: `sequential` fresh connections one after the other,
    one keep-alive connection with `kept_alive` requests, then `concurrent` at once."""
    traffic = Traffic()
    for i in range(sequential):
        target = f"{prefix}/seq-{i}"
        traffic.answers[target] = innocent_request(port, target)
    with RawHTTP("127.0.0.1", port, timeout=5) as c:
        for i in range(kept_alive):
            target = f"{prefix}/kept-{i}"
            c.request("GET", target)
            traffic.answers[target] = c.read_response()
    targets = [f"{prefix}/par-{i}" for i in range(concurrent)]
    with ThreadPoolExecutor(concurrent) as pool:
        for target, resp in zip(targets, pool.map(lambda t: innocent_request(port, t), targets)):
            traffic.answers[target] = resp
    return traffic


def assert_origin_saw_no_anomaly(origin: RecordingOrigin) -> None:
    anomalies = origin.anomaly_list()
    assert not anomalies, "the proxy forwarded what a strict origin must never get:\n" + origin.describe()


def assert_every_origin_answer_was_delivered(origin: RecordingOrigin, delivered: dict[int, str]) -> None:
    """`delivered`: origin answer number -> target of the client request it reached."""
    origin.wait_quiet()
    written = {r.n: r.target for r in origin.snapshot()}
    lost = {n: t for n, t in written.items() if n not in delivered}
    assert not lost, f"the origin answered requests no client was answered for (desync): {lost}\n" + origin.describe()
    for n, target in delivered.items():
        assert written.get(n) == target, \
            f"answer #{n} reached the client of {target} but answers {written.get(n)}\n" + origin.describe()


def metric(tg: Tracegate, name: str) -> float:
    """The sum of every sample of `name` on tracegate's admin /metrics."""
    text = requests.get(f"{tg.admin_url}/metrics", timeout=5).text
    total, found = 0.0, False
    for line in text.splitlines():
        if line.startswith(name) and line[len(name):len(name) + 1] in (" ", "{"):
            total += float(line.rsplit(" ", 1)[1])
            found = True
    assert found, f"no {name} in /metrics:\n{text[:2000]}"
    return total


# ---- request smuggling: the cases -----------------------------------------------------------------


@dataclass(frozen=True)
class Marks:
    """The targets of one case: the attacker's, the one it hides, and its follow-up."""

    attack: bytes
    smuggled: bytes
    followup: bytes

    @classmethod
    def new(cls) -> "Marks":
        t = tag().encode()
        return cls(b"/attack/" + t, b"/smuggled/" + t, b"/attack/" + t + b"/followup")

    @property
    def hidden_request(self) -> bytes:
        return b"GET " + self.smuggled + b" HTTP/1.1\r\nHost: x\r\n\r\n"


@dataclass(frozen=True)
class Attack:
    """Bytes an attacker writes, and what is certain about them.

    inside_body: the hidden request lies inside a body however the message is framed, so the
        origin must never see it (otherwise a proxy may fairly read it as the attacker's next
        pipelined request, and then it must answer it to the attacker).
    tracegate_refuses: tracegate answers 4xx and closes (its parser is strict there).
    closes: the attacker's connection must be closed after its answer.
    """

    id: str
    build: Callable[[Marks], bytes]
    inside_body: bool = False
    tracegate_refuses: bool = False
    closes: bool = False


def post(fields: bytes, body: bytes | Callable[[Marks], bytes], version: bytes = b"HTTP/1.1"
         ) -> Callable[[Marks], bytes]:
    """A POST to the attack target with `fields` (header lines, each ending in CRLF) and `body`;
    `%L` in `fields` is the body's length, `%H` its length in hex."""
    def build(m: Marks) -> bytes:
        data = body(m) if callable(body) else body
        head = fields.replace(b"%L", b"%d" % len(data)).replace(b"%H", b"%x" % len(data))
        return b"POST " + m.attack + b" " + version + b"\r\nHost: x\r\n" + head + b"\r\n" + data
    return build


def hidden(m: Marks) -> bytes:
    """The body is the hidden request itself."""
    return m.hidden_request


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def chunked_hidden(m: Marks) -> bytes:
    """A chunked body whose one chunk is the hidden request."""
    return chunk(m.hidden_request) + b"0\r\n\r\n"


def last_chunk_then_hidden(m: Marks) -> bytes:
    """An empty chunked body, then the hidden request: CL and TE readings disagree."""
    return b"0\r\n\r\n" + m.hidden_request


def odd_chunk(size_line: bytes, after_data: bytes = b"\r\n", last: bytes = b"0\r\n\r\n") -> Callable[[Marks], bytes]:
    """One chunk of the hidden request with `size_line` (`%H`: its size in hex) and `after_data`."""
    def build(m: Marks) -> bytes:
        data = m.hidden_request
        return size_line.replace(b"%H", b"%x" % len(data)) + data + after_data + last
    return build


def trailer(line: bytes) -> Callable[[Marks], bytes]:
    return lambda m: chunk(m.hidden_request) + b"0\r\n" + line + b"\r\n\r\n"


CONNECTION_NAMING_FRAMING = [
    Attack("connection-content-length", post(b"Connection: Content-Length\r\nContent-Length: %L\r\n", hidden),
           inside_body=True),
    Attack("connection-keep-alive-content-length",
           post(b"Connection: keep-alive, content-length\r\nContent-Length: %L\r\n", hidden), inside_body=True),
    Attack("connection-content-length-close",
           post(b"Connection: content-length, close\r\nContent-Length: %L\r\n", hidden), inside_body=True,
           closes=True),
    Attack("connection-transfer-encoding",
           post(b"Connection: Transfer-Encoding\r\nTransfer-Encoding: chunked\r\n", chunked_hidden), inside_body=True),
    Attack("connection-host", post(b"Connection: Host\r\nContent-Length: %L\r\n", hidden), inside_body=True),
    Attack("connection-content-length-after-the-length",
           post(b"Content-Length: %L\r\nConnection: Content-Length\r\n", hidden), inside_body=True),
]

CONTENT_LENGTH = [
    Attack("duplicate-content-length", post(b"Content-Length: %L\r\nContent-Length: %L\r\n", hidden),
           inside_body=True),
    Attack("content-length-list-of-equal-values", post(b"Content-Length: %L, %L\r\n", hidden), inside_body=True),
    Attack("differing-content-lengths", post(b"Content-Length: 5\r\nContent-Length: 6\r\n",
                                             lambda m: b"hello" + m.hidden_request), tracegate_refuses=True),
    Attack("content-length-with-plus-sign", post(b"Content-Length: +%L\r\n", hidden), tracegate_refuses=True),
    Attack("content-length-in-hex", post(b"Content-Length: 0x%H\r\n", hidden), tracegate_refuses=True),
    Attack("content-length-with-spaces-around", post(b"Content-Length:  %L \r\n", hidden), inside_body=True),
    Attack("content-length-with-nul", post(b"Content-Length: %L\x00\r\n", hidden), tracegate_refuses=True),
]

TRANSFER_ENCODING = [
    Attack("content-length-then-transfer-encoding",
           post(b"Content-Length: %L\r\nTransfer-Encoding: chunked\r\n", last_chunk_then_hidden),
           tracegate_refuses=True),
    Attack("transfer-encoding-then-content-length",
           post(b"Transfer-Encoding: chunked\r\nContent-Length: %L\r\n", last_chunk_then_hidden),
           tracegate_refuses=True),
    Attack("transfer-encoding-with-short-content-length",
           post(b"Transfer-Encoding: chunked\r\nContent-Length: 4\r\n", chunked_hidden), tracegate_refuses=True),
    Attack("transfer-encoding-chunked-identity",
           post(b"Transfer-Encoding: chunked, identity\r\n", last_chunk_then_hidden), tracegate_refuses=True),
    Attack("transfer-encoding-identity-chunked",
           post(b"Transfer-Encoding: identity, chunked\r\n", last_chunk_then_hidden), tracegate_refuses=True),
    Attack("transfer-encoding-xchunked",
           post(b"Transfer-Encoding: xchunked\r\nContent-Length: %L\r\n", last_chunk_then_hidden),
           tracegate_refuses=True),
    Attack("transfer-encoding-space-before-colon",
           post(b"Transfer-Encoding : chunked\r\nContent-Length: %L\r\n", last_chunk_then_hidden),
           tracegate_refuses=True),
    Attack("transfer-encoding-tab-before-value",
           post(b"Transfer-Encoding:\tchunked\r\nContent-Length: %L\r\n", last_chunk_then_hidden),
           tracegate_refuses=True),
    Attack("transfer-encoding-whitespace-after-value",
           post(b"Transfer-Encoding: chunked \t\r\nContent-Length: %L\r\n", last_chunk_then_hidden),
           tracegate_refuses=True),
    Attack("transfer-encoding-vertical-tab",
           post(b"Transfer-Encoding: \x0bchunked\r\nContent-Length: %L\r\n", last_chunk_then_hidden),
           tracegate_refuses=True),
    Attack("transfer-encoding-tab-only", post(b"Transfer-Encoding:\tchunked\t\r\n", chunked_hidden),
           inside_body=True),
    Attack("two-transfer-encoding-lines",
           post(b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", chunked_hidden),
           inside_body=True, tracegate_refuses=True),
    Attack("two-transfer-encoding-lines-disagreeing",
           post(b"Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n", last_chunk_then_hidden),
           tracegate_refuses=True),
    Attack("transfer-encoding-in-http-1.0",
           post(b"Connection: keep-alive\r\nTransfer-Encoding: chunked\r\n",
                lambda m: b"5\r\nhello\r\n0\r\n\r\n" + m.hidden_request, version=b"HTTP/1.0"),
           tracegate_refuses=True, closes=True),
]

CHUNK_FRAMING = [
    Attack("chunk-size-space-before-extension", post(b"Transfer-Encoding: chunked\r\n", odd_chunk(b"%H ;ext\r\n")),
           inside_body=True),
    Attack("chunk-size-with-0x", post(b"Transfer-Encoding: chunked\r\n", odd_chunk(b"0x%H\r\n")),
           tracegate_refuses=True),
    Attack("chunk-size-negative", post(b"Transfer-Encoding: chunked\r\n", odd_chunk(b"-%H\r\n")),
           tracegate_refuses=True),
    Attack("chunk-size-huge", post(b"Transfer-Encoding: chunked\r\n", odd_chunk(b"fffffffffffffffff%H\r\n")),
           tracegate_refuses=True),
    Attack("chunk-data-without-crlf", post(b"Transfer-Encoding: chunked\r\n", odd_chunk(b"%H\r\n", after_data=b"")),
           tracegate_refuses=True),
    # A lone LF ends a line (RFC 9112 §2.2 allows it, tracegate accepts it): served, re-framed.
    Attack("chunk-lines-ending-in-lf", post(b"Transfer-Encoding: chunked\r\n",
                                            odd_chunk(b"%H\n", after_data=b"\n", last=b"0\n\n"))),
    Attack("chunk-extension-with-quoted-string",
           post(b"Transfer-Encoding: chunked\r\n", odd_chunk(b'%H;name="va;l\\"ue"\r\n')), inside_body=True),
    Attack("chunk-size-with-bare-cr", post(b"Transfer-Encoding: chunked\r\n", odd_chunk(b"%H\r;x\r\n")),
           tracegate_refuses=True),
]

TRAILERS = [
    Attack("trailer-content-length", post(b"Transfer-Encoding: chunked\r\n", trailer(b"Content-Length: 50")),
           inside_body=True),
    Attack("trailer-transfer-encoding", post(b"Transfer-Encoding: chunked\r\n", trailer(b"Transfer-Encoding: chunked")),
           inside_body=True),
    Attack("trailer-host", post(b"Transfer-Encoding: chunked\r\n", trailer(b"Host: evil")), inside_body=True),
]

MALFORMED_FIELDS = [
    Attack("obs-fold-content-length", post(b"X-Pad: a\r\nContent-Length:\r\n %L\r\n", hidden),
           tracegate_refuses=True),
    Attack("obs-fold-transfer-encoding",
           post(b"Transfer-Encoding:\r\n chunked\r\nContent-Length: %L\r\n", last_chunk_then_hidden),
           tracegate_refuses=True),
    Attack("content-length-space-before-colon", post(b"Content-Length : %L\r\n", hidden), tracegate_refuses=True),
    Attack("nul-in-a-field-value", post(b"X-A: a\x00b\r\nContent-Length: %L\r\n", hidden), tracegate_refuses=True),
]


def cases(attacks: list[Attack]):
    """(kind, attack) pairs, both proxies for every attack, with readable ids."""
    return [pytest.param(kind, a, id=f"{kind}-{a.id}") for a in attacks for kind in KINDS]


def check_attack(kind: str, attack: Attack, origin: RecordingOrigin, start_proxy) -> None:
    """Run `attack` then innocent traffic through the proxy of `kind`; check every safety property."""
    proxy = start_proxy(kind, origin)
    m = Marks.new()
    attacker_targets = {m.attack.decode(), m.followup.decode()}
    if not attack.inside_body:
        attacker_targets.add(m.smuggled.decode())
    delivered: dict[int, str] = {}

    with RawHTTP("127.0.0.1", proxy.port, timeout=5) as attacker:
        attacker.send(attack.build(m))
        got, closed = read_responses(attacker, first_wait=3, quiet=0.3)
        print(f"{kind} {attack.id}: attacker got {[r.status for r in got]}, closed: {closed}")
        assert got, f"{kind}: the attacker got no answer within 3 s (closed: {closed})\n" + origin.describe()

        traffic = innocent_traffic(proxy.port, f"/innocent/{tag()}")

        if not closed and not is_refusal(got[-1]):
            # Still open: a normal follow-up on the same connection gets its own answer.
            attacker.request("GET", m.followup.decode())
            more, closed = read_responses(attacker, first_wait=3, quiet=0.3)
            got += more
            assert any(origin_n(r) is not None and answered_path(r) == m.followup.decode() for r in more), \
                f"{kind}: the attacker's follow-up was not answered as such: {more!r}\n" + origin.describe()
        for i, resp in enumerate(got):
            n = origin_n(resp)
            if n is None:
                assert is_refusal(resp), f"{kind}: the attacker got {resp!r}"
                assert i == len(got) - 1, f"{kind}: answers after a refusal: {got!r}"
                assert closed or attacker.is_closed_by_peer(timeout=2), f"{kind}: connection left open after {resp!r}"
                closed = True
            else:
                path = answered_path(resp)
                assert path in attacker_targets, \
                    f"{kind}: the attacker received the answer for {path}\n" + origin.describe()
                delivered[n] = path
        if attack.closes:
            assert closed or attacker.is_closed_by_peer(timeout=2), f"{kind}: connection kept open after {got!r}"
        if attack.tracegate_refuses and kind == "tracegate":
            assert is_refusal(got[0]), f"tracegate served what it must refuse: {got!r}\n" + origin.describe()
            assert_json_error(got[0], got[0].status)

    traffic.check()
    delivered.update({origin_n(r): t for t, r in traffic.answers.items()})
    if attack.inside_body:
        assert m.smuggled.decode() not in origin.targets(), \
            f"{kind}: the request hidden in the body reached the origin\n" + origin.describe()
    assert_every_origin_answer_was_delivered(origin, delivered)
    assert_origin_saw_no_anomaly(origin)


@pytest.mark.parametrize("kind,attack", cases(CONNECTION_NAMING_FRAMING))
def test_connection_header_naming_a_framing_field_cannot_desync_the_upstream(kind, attack, origin, start_proxy):
    """`Connection: Content-Length` (or Transfer-Encoding, Host) cannot make the proxy drop the field
    that frames the body: the origin reads the hidden request as body, never as a request."""
    check_attack(kind, attack, origin, start_proxy)


@pytest.mark.parametrize("kind,attack", cases(CONTENT_LENGTH))
def test_odd_content_length_fields_cannot_desync_the_upstream(kind, attack, origin, start_proxy):
    """Duplicate, listed, signed, hex and padded lengths: agreeing duplicates are either refused or
    forwarded as one length; disagreeing or invalid ones are refused by tracegate."""
    check_attack(kind, attack, origin, start_proxy)


@pytest.mark.parametrize("kind,attack", cases(TRANSFER_ENCODING))
def test_odd_transfer_encoding_fields_cannot_desync_the_upstream(kind, attack, origin, start_proxy):
    """Content-Length with Transfer-Encoding (both orders), codings other than one `chunked`,
    whitespace and control-character variants, two TE lines, and TE in an HTTP/1.0 request
    (whose connection must close after it)."""
    check_attack(kind, attack, origin, start_proxy)


@pytest.mark.parametrize("kind,attack", cases(CHUNK_FRAMING))
def test_odd_chunk_framing_cannot_desync_the_upstream(kind, attack, origin, start_proxy):
    """Chunk sizes with extensions, prefixes, signs, overflow, missing or bare line ends: well-formed
    ones are re-framed for the origin, malformed ones are refused by tracegate."""
    check_attack(kind, attack, origin, start_proxy)


@pytest.mark.parametrize("kind,attack", cases(TRAILERS))
def test_trailer_fields_that_would_reframe_the_request_never_reach_the_origin(kind, attack, origin, start_proxy):
    """Trailers carrying Content-Length, Transfer-Encoding or Host are not forwarded (tracegate drops
    them; nginx buffers the body and forwards no request trailers at all)."""
    check_attack(kind, attack, origin, start_proxy)


@pytest.mark.parametrize("kind,attack", cases(MALFORMED_FIELDS))
def test_malformed_field_lines_cannot_desync_the_upstream(kind, attack, origin, start_proxy):
    """Obsolete line folding on the framing fields, whitespace before the colon and a NUL in a value."""
    check_attack(kind, attack, origin, start_proxy)


# ---- well-formed but unusual exchanges ----------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape", ["two-gets", "get-post-get"])
def test_pipelined_requests_are_answered_in_order_each_by_its_own_answer(kind, shape, origin, start_proxy):
    """Requests written in one go are answered in order; a POST body holding a request stays a body."""
    proxy = start_proxy(kind, origin)
    m = Marks.new()
    first, last = f"/pipe/{tag()}/1", f"/pipe/{tag()}/3"
    data = f"GET {first} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    targets = [first]
    if shape == "get-post-get":
        body = m.hidden_request
        data += b"POST " + m.attack + b" HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body
        targets.append(m.attack.decode())
    data += f"GET {last} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    targets.append(last)
    with RawHTTP("127.0.0.1", proxy.port, timeout=5) as c:
        c.send(data)
        got = [c.read_response() for _ in targets]
    assert [r.status for r in got] == [200] * len(targets), got
    assert [answered_path(r) for r in got] == targets
    assert m.smuggled.decode() not in origin.targets(), origin.describe()
    assert_every_origin_answer_was_delivered(origin, {origin_n(r): t for r, t in zip(got, targets)})
    assert_origin_saw_no_anomaly(origin)


@pytest.fixture
def origin_ignoring_expect():
    o = RecordingOrigin(continue_on_expect=False).start()
    yield o
    o.stop()


@pytest.mark.parametrize("kind", KINDS)
def test_expect_100_continue_gets_its_interim_response_before_the_body_is_sent(kind, origin_ignoring_expect,
                                                                                start_proxy):
    """The client sends the head alone and waits for `100 Continue` (2 s at most) before the body;
    the final answer is its own, and the connection stays in step for a second request. The origin
    never sends 100 itself, so the interim response has to come from the proxy."""
    origin = origin_ignoring_expect
    proxy = start_proxy(kind, origin)
    target, second = f"/expect/{tag()}", f"/expect/{tag()}/second"
    body = b"x" * 3000
    with RawHTTP("127.0.0.1", proxy.port, timeout=5) as c:
        c.send(f"POST {target} HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: {len(body)}\r\n"
               f"Content-Type: application/octet-stream\r\n\r\n".encode())
        c.sock.settimeout(2)
        try:
            interim = c.read_head()
        except (socket.timeout, TimeoutError):
            pytest.fail(f"{kind}: no 100 Continue within 2 s of a head with Expect: 100-continue")
        assert interim.status == 100, f"{kind}: expected 100 Continue first, got {interim!r}"
        c.sock.settimeout(5)
        c.send(body)
        final = c.read_response()
        assert final.status == 200 and answered_path(final) == target, final
        assert final.json()["body_length"] == len(body)
        c.request("GET", second)
        after = c.read_response()
        assert after.status == 200 and answered_path(after) == second, after
    assert_every_origin_answer_was_delivered(origin, {origin_n(final): target, origin_n(after): second})
    assert_origin_saw_no_anomaly(origin)


H2C_FIELDS = [("Connection", "Upgrade, HTTP2-Settings"), ("Upgrade", "h2c"),
              ("HTTP2-Settings", "AAMAAABkAARAAAAAAAIAAAAA")]


@pytest.mark.parametrize("kind", KINDS)
def test_h2c_upgrade_is_ignored_and_the_request_served_over_http_1_1(kind, origin, start_proxy):
    """An `Upgrade: h2c` request is answered 200 in HTTP/1.1 (an upgrade to h2c may be ignored,
    RFC 9113 §3.1) and no `Upgrade` reaches the origin. tracegate also drops `HTTP2-Settings`,
    which the `Connection` header names; nginx forwards it (it does not act on `Connection`)."""
    proxy = start_proxy(kind, origin)
    target, second = f"/h2c/{tag()}", f"/h2c/{tag()}/second"
    with RawHTTP("127.0.0.1", proxy.port, timeout=5) as c:
        c.request("GET", target, H2C_FIELDS)
        first = c.read_response()
        assert first.status == 200 and first.version == "HTTP/1.1", f"{kind}: {first!r}"
        assert answered_path(first) == target
        c.request("GET", second)
        after = c.read_response()
        assert after.status == 200 and answered_path(after) == second, after
    if kind == "tracegate":
        seen = [r for r in origin.snapshot() if r.target == target]
        assert seen and not seen[0].field_values("HTTP2-Settings"), origin.describe()
    assert_every_origin_answer_was_delivered(origin, {origin_n(first): target, origin_n(after): second})
    assert_origin_saw_no_anomaly(origin)


@pytest.mark.parametrize("kind", KINDS)
def test_curl_asking_for_http2_over_cleartext_gets_its_answer_over_http_1_1(kind, origin, start_proxy):
    """`curl --http2 http://...` sends the h2c upgrade: it must get the answer, in HTTP/1.1."""
    proxy = start_proxy(kind, origin)
    target = f"/curl-h2c/{tag()}"
    out = subprocess.run(["curl", "--http2", "-sS", "-o", "-", "-w", "\n%{http_code} %{http_version}",
                          f"http://127.0.0.1:{proxy.port}{target}"],
                         capture_output=True, text=True, timeout=15)
    assert out.returncode == 0, f"{kind}: curl exited {out.returncode}: {out.stderr}"
    body, _, status = out.stdout.rpartition("\n")
    assert status == "200 1.1", f"{kind}: curl saw {status!r}; body {body[:300]!r}"
    assert json.loads(body)["path"] == target
    assert_origin_saw_no_anomaly(origin)


def test_a_declined_websocket_handshake_gets_the_origins_answer_and_early_frames_never_reach_it(origin, start_proxy):
    """tracegate only (nginx, unconfigured, drops the upgrade): the handshake reaches the origin with its
    `Upgrade: websocket`; the origin, which speaks no WebSocket, answers 200, and that answer is what
    the client gets. A frame the client wrote before any 101 is not tunnelled: it waits to be read as
    the next request head (which it never completes), and the origin sees nothing of it."""
    proxy = start_proxy("tracegate", origin)
    target = f"/ws/{tag()}"
    with RawHTTP("127.0.0.1", proxy.port, timeout=5) as c:
        c.request("GET", target, [("Connection", "Upgrade"), ("Upgrade", "websocket"),
                                  ("Sec-WebSocket-Version", "13"),
                                  ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")])
        c.send(b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58")  # a masked text frame: "Hello"
        answer = c.read_response()
        assert answer.status == 200 and answered_path(answer) == target, f"{answer!r}"
        time.sleep(0.3)
    origin.wait_quiet()
    seen = origin.snapshot()
    assert [r.target for r in seen] == [target], origin.describe()
    assert [v.lower() for v in seen[0].field_values("Upgrade")] == ["websocket"], origin.describe()
    assert_origin_saw_no_anomaly(origin)


def test_an_upgrade_to_anything_but_websocket_is_refused_with_501(origin, start_proxy):
    proxy = start_proxy("tracegate", origin)
    with RawHTTP("127.0.0.1", proxy.port, timeout=5) as c:
        c.request("GET", f"/up/{tag()}", [("Connection", "Upgrade"), ("Upgrade", "IRC/6.9")])
        assert_json_error(c.read_response(), 501)
    time.sleep(0.2)
    assert not origin.snapshot(), origin.describe()


@pytest.mark.parametrize("kind", KINDS)
def test_http_1_2_request_is_served_with_an_http_1_1_response(kind, origin, start_proxy):
    """RFC 9112 §2.3: a higher minor version is answered as the highest one implemented."""
    proxy = start_proxy(kind, origin)
    target = f"/v12/{tag()}"
    with RawHTTP("127.0.0.1", proxy.port, timeout=5) as c:
        c.send(f"GET {target} HTTP/1.2\r\nHost: x\r\n\r\n".encode())
        resp = c.read_response()
    assert resp.status == 200 and resp.version == "HTTP/1.1", f"{kind}: {resp!r}"
    assert answered_path(resp) == target
    assert_origin_saw_no_anomaly(origin)


@pytest.mark.parametrize("kind", KINDS)
def test_http_2_request_line_on_an_http_1_connection_is_refused_with_505(kind, origin, start_proxy):
    proxy = start_proxy(kind, origin)
    with RawHTTP("127.0.0.1", proxy.port, timeout=5) as c:
        c.send(f"GET /v20/{tag()} HTTP/2.0\r\nHost: x\r\n\r\n".encode())
        resp = c.read_response()
        assert resp.status == 505, f"{kind}: {resp!r}"
        if kind == "tracegate":
            assert_json_error(resp, 505)
        assert c.is_closed_by_peer(timeout=2), f"{kind}: connection left open after 505"
    assert not origin.snapshot(), origin.describe()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("variant", ["connection-content-length", "duplicate-content-length"])
def test_response_with_odd_length_fields_reaches_the_client_delimited_and_in_step(kind, variant, origin, start_proxy):
    """The origin answers with `Connection: Content-Length` or with two equal Content-Length fields:
    the client gets a response it can delimit (one length, or chunked), and a second request on
    the same connection gets its own answer."""
    proxy = start_proxy(kind, origin)
    target, second = f"/respond/{variant}/{tag()}", f"/after/{tag()}"
    with RawHTTP("127.0.0.1", proxy.port, timeout=5) as c:
        c.request("GET", target)
        head = c.read_head()
        lengths = head.header_all("Content-Length")
        chunked = "chunked" in ",".join(head.header_all("Transfer-Encoding")).lower()
        assert len(lengths) == 1 or (chunked and not lengths), \
            f"{kind}: response not delimited by one length or chunked coding: {head!r}"
        head.body = b"".join(c.iter_body(head))
        assert head.status == 200 and answered_path(head) == target, f"{kind}: {head!r}"
        c.request("GET", second)
        after = c.read_response()
        assert after.status == 200 and answered_path(after) == second, f"{kind}: {after!r}"


# ---- response-queue poisoning through a Node.js origin -----------------------------------------------


@pytest.fixture
def node_origin():
    port = free_port()
    proc = subprocess.Popen(["node", str(NODE_ORIGIN), str(port), "50"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        assert proc.stdout.readline().strip() == b"listening", "node origin did not start"
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest.mark.parametrize("kind", KINDS)
def test_response_queue_cannot_be_poisoned_through_a_node_origin(kind, node_origin, start_proxy):
    """An attacker keeps sending `Connection: Content-Length` bodies that hold a request while 10
    innocent clients loop on their own paths through a slow (50 ms) keep-alive Node origin. No
    innocent may receive an answer naming another path; the count is printed for both proxies."""
    proxy = start_proxy(kind, node_origin)
    stop = threading.Event()
    t = tag()
    counts = {"ok": 0, "poisoned": 0, "errors": 0, "attacks": 0}
    lock = threading.Lock()
    poisoned_examples: list[str] = []

    def count(key: str, example: str | None = None) -> None:
        with lock:
            counts[key] += 1
            if example and len(poisoned_examples) < 5:
                poisoned_examples.append(example)

    def attacker() -> None:
        k = 0
        while not stop.is_set():
            k += 1
            body = f"GET /smuggled/{t}/{k} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
            try:
                with RawHTTP("127.0.0.1", proxy.port, timeout=3) as c:
                    c.send(f"POST /attack/{t}/{k} HTTP/1.1\r\nHost: x\r\nConnection: Content-Length\r\n"
                           f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
                    c.read_response()
                count("attacks")
            except (OSError, Eof):
                pass

    def innocent(i: int) -> None:
        c: RawHTTP | None = None
        j = 0
        while not stop.is_set():
            j += 1
            target = f"/innocent/{t}/{i}/{j}"
            try:
                c = c or RawHTTP("127.0.0.1", proxy.port, timeout=5)
                c.request("GET", target)
                resp = c.read_response()
                if resp.status != 200:
                    count("errors", f"{target}: {resp.status}")
                elif json.loads(resp.body)["path"] != target:
                    count("poisoned", f"{target} got {json.loads(resp.body)['path']}")
                else:
                    count("ok")
                if (resp.header("Connection") or "").lower() == "close":
                    c.close()
                    c = None
            except (OSError, Eof, ValueError) as e:
                count("errors", f"{target}: {e!r}")
                if c:
                    c.close()
                c = None
        if c:
            c.close()

    threads = [threading.Thread(target=attacker, daemon=True)] + \
              [threading.Thread(target=innocent, args=(i,), daemon=True) for i in range(10)]
    for th in threads:
        th.start()
    time.sleep(4)
    stop.set()
    for th in threads:
        th.join(10)
    print(f"\n{kind}: response-queue poisoning through Node: {counts}; examples: {poisoned_examples}")
    assert counts["attacks"] > 5 and counts["ok"] > 100, f"{kind}: too little traffic got through: {counts}"
    assert counts["poisoned"] == 0, f"{kind}: {counts['poisoned']} innocent answers were someone else's: " \
                                    f"{poisoned_examples}"
    assert counts["errors"] == 0, f"{kind}: innocent requests failed: {counts} {poisoned_examples}"


# ---- slow clients ------------------------------------------------------------------------------------


class Crowd:
    """Many client connections driven from one thread: write to them, read what arrives, and note
    when each is closed by the proxy."""

    def __init__(self, port: int, n: int, rcvbuf: int | None = None):
        self.socks: list[socket.socket] = []
        self.received: list[bytearray] = []
        self.closed_at: list[float | None] = []
        self.selector = selectors.DefaultSelector()
        self.opened = time.monotonic()
        for i in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            if rcvbuf:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            s.settimeout(5)
            s.connect(("127.0.0.1", port))
            s.setblocking(False)
            self.socks.append(s)
            self.received.append(bytearray())
            self.closed_at.append(None)
            self.selector.register(s, selectors.EVENT_READ, i)

    def open_indexes(self) -> list[int]:
        return [i for i, t in enumerate(self.closed_at) if t is None]

    def send(self, data: bytes | Callable[[int], bytes], only: list[int] | None = None) -> None:
        for i in self.open_indexes() if only is None else only:
            if self.closed_at[i] is not None:
                continue
            try:
                self.socks[i].send(data(i) if callable(data) else data)
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                self._closed(i)

    def poll(self, duration: float, read_size: int = 65536) -> None:
        """Read whatever arrives for `duration` seconds (at most `read_size` bytes per socket and
        wake-up, so slow readers stay slow)."""
        deadline = time.monotonic() + duration
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            for key, _ in self.selector.select(timeout=min(left, 0.05)):
                i = key.data
                try:
                    data = self.socks[i].recv(read_size)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    data = b""
                if data:
                    self.received[i] += data
                else:
                    self._closed(i)
            if read_size < 65536:
                time.sleep(0.05)  # slow readers: a few reads a second at most

    def _closed(self, i: int) -> None:
        if self.closed_at[i] is None:
            self.closed_at[i] = time.monotonic()
            try:
                self.selector.unregister(self.socks[i])
            except (KeyError, ValueError):
                pass

    def close(self) -> None:
        for i, s in enumerate(self.socks):
            if self.closed_at[i] is None:
                try:
                    self.selector.unregister(s)
                except (KeyError, ValueError):
                    pass
            s.close()
        self.selector.close()


def parse_response(data: bytes) -> Response:
    """One complete response from raw bytes."""
    head, sep, body = bytes(data).partition(b"\r\n\r\n")
    assert sep, f"no complete response head in {bytes(data)[:200]!r}"
    lines = head.decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    code, _, reason = rest.partition(" ")
    headers = [(k, v.strip()) for k, _, v in (line.partition(":") for line in lines[1:])]
    resp = Response(int(code), reason, version, headers, head_raw=head)
    length = resp.header("Content-Length")
    resp.body = body[:int(length)] if length is not None else body
    return resp


def probe(proxy: Proxy, within: float) -> float:
    """A normal request during an attack: answered by the origin within `within` seconds."""
    target = f"/probe/{tag()}"
    t0 = time.monotonic()
    resp = innocent_request(proxy.port, target, timeout=within)
    elapsed = time.monotonic() - t0
    assert resp.status == 200 and answered_path(resp) == target, f"{proxy.kind}: probe got {resp!r}"
    assert elapsed <= within, f"{proxy.kind}: probe answered after {elapsed:.1f}s"
    return elapsed


def settle_rss(proxy: Proxy) -> int:
    """RSS after a short pause (so transient buffers are gone), in KiB."""
    time.sleep(0.5)
    return proxy.rss_kib()


@pytest.mark.parametrize("kind", KINDS)
def test_slowloris_connections_are_cut_at_the_header_timeout_while_others_are_served(kind, origin, start_proxy):
    """400 connections trickle a request head, 50 send nothing. With a 2 s header timeout both
    proxies close them all at about 2 s and serve a normal client meanwhile; tracegate answers each
    partial head with a 408 JSON error and closes silent connections without a word. (nginx closes
    both kinds silently.)"""
    proxy = start_proxy(kind, origin, client_header_timeout="2s")
    probe(proxy, within=3)
    base = settle_rss(proxy)
    partial, silent = Crowd(proxy.port, 400), Crowd(proxy.port, 50)
    try:
        partial.send(lambda i: f"GET /slowloris/{i} HTTP/1.1\r\nHost: x\r\n".encode())
        start = time.monotonic()
        rss_peak, probe_time, k = base, None, 0
        while time.monotonic() - start < 6 and (partial.open_indexes() or silent.open_indexes()):
            k += 1
            partial.send(f"X-Trickle-{k}: v\r\n".encode())
            partial.poll(0.25)
            silent.poll(0.25)
            rss_peak = max(rss_peak, proxy.rss_kib())
            if probe_time is None and time.monotonic() - start > 1:
                probe_time = probe(proxy, within=3)
        assert probe_time is not None
        growth = (rss_peak - base) / 450
        print(f"\n{kind}: slowloris RSS {base} -> {rss_peak} KiB ({growth:.1f} KiB per connection), "
              f"probe {probe_time:.2f}s, fds {proxy.fd_count()}")
        still_open = len(partial.open_indexes()) + len(silent.open_indexes())
        assert not still_open, f"{kind}: {still_open} slowloris connections open 6 s after their start"
        for crowd in (partial, silent):
            earliest = min(t - crowd.opened for t in crowd.closed_at)
            assert earliest >= 1.5, f"{kind}: a connection was cut after {earliest:.2f}s, before the 2 s timeout"
        if kind == "tracegate":
            assert growth <= 64, f"tracegate grew {growth:.1f} KiB per slowloris connection"
            for data in partial.received:
                assert_json_error(parse_response(data), 408)
            assert all(not data for data in silent.received), \
                f"silent connections got bytes: {[bytes(d[:80]) for d in silent.received if d][:3]}"
        assert not origin.snapshot() or all(r.path.startswith("/probe/") for r in origin.snapshot()), origin.describe()
    finally:
        partial.close()
        silent.close()


@pytest.mark.parametrize("kind", KINDS)
def test_slow_bodies_hold_no_upstream_connection_and_stalled_ones_get_cut(kind, origin, start_proxy):
    """300 POSTs of 4096 bytes trickle their bodies (16 bytes every 0.25 s) and 20 stop after 100
    bytes. Bodies that small are read whole before an upstream connection is taken (tracegate's
    `request_buffering`, 64 KiB by default; nginx's request buffering), so the origin holds no
    connection for them; with a 2 s body timeout the stalled ones are cut (tracegate: 408 JSON)
    while the trickling ones are not, and a normal client is served throughout."""
    proxy = start_proxy(kind, origin, client_body_timeout="2s")
    probe(proxy, within=3)
    base, origin_base = settle_rss(proxy), origin.open_connections()
    head = "POST /slow-body/{} HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 4096\r\n\r\n"
    trickling, stalled = Crowd(proxy.port, 300), Crowd(proxy.port, 20)
    try:
        trickling.send(lambda i: head.format(f"t{i}").encode())
        stalled.send(lambda i: head.format(f"s{i}").encode() + b"x" * 100)
        start = time.monotonic()
        rss_peak, origin_peak, probe_time = base, origin_base, None
        while time.monotonic() - start < 5:
            trickling.send(b"y" * 16)
            trickling.poll(0.125)
            stalled.poll(0.125)
            rss_peak = max(rss_peak, proxy.rss_kib())
            origin_peak = max(origin_peak, origin.open_connections())
            if probe_time is None and time.monotonic() - start > 1:
                probe_time = probe(proxy, within=3)
        growth = (rss_peak - base) / 320
        print(f"\n{kind}: slow bodies RSS {base} -> {rss_peak} KiB ({growth:.1f} KiB per connection), "
              f"origin connections {origin_base} -> {origin_peak}, probe {probe_time:.2f}s")
        assert origin_peak <= origin_base + 2, \
            f"{kind}: the origin held {origin_peak} connections (baseline {origin_base}) while bodies trickled"
        assert not any(r.path.startswith("/slow-body/") for r in origin.snapshot()), origin.describe()
        assert not stalled.open_indexes(), f"{kind}: {len(stalled.open_indexes())} stalled uploads still open"
        assert len(trickling.open_indexes()) == 300, \
            f"{kind}: {300 - len(trickling.open_indexes())} uploads that kept sending were cut"
        if kind == "tracegate":
            assert growth <= 64, f"tracegate grew {growth:.1f} KiB per slow upload"
            for data in stalled.received:
                assert_json_error(parse_response(data), 408)
    finally:
        trickling.close()
        stalled.close()
    assert_origin_saw_no_anomaly(origin)


SLOW_READERS = 300
CAPTURE_MEMORY_LIMIT_KIB = 16 * 1024  # tracegate's default capture_memory_limit
MIB = 1024 * 1024


def slow_read_growth(proxy: Proxy, origin: RecordingOrigin) -> tuple[float, int, int]:
    """300 clients with a 4 KiB receive buffer ask for 1 MiB each and read 8 bytes at a time; a
    normal client is served meanwhile. Returns (KiB of RSS growth per slow client, baseline KiB,
    KiB once they are gone)."""
    for _ in range(5):  # warm up buffers and pools with full-speed downloads
        resp = innocent_request(proxy.port, f"/warm/{tag()}?pad={MIB}", timeout=10)
        assert resp.status == 200 and len(resp.body) > MIB
    base = settle_rss(proxy)
    seen_before = len(origin.snapshot())
    crowd = Crowd(proxy.port, SLOW_READERS, rcvbuf=4096)
    try:
        crowd.send(lambda i: f"GET /slow-read/{i}?pad={MIB} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not (
                all(len(data) >= 12 for data in crowd.received) and len(origin.snapshot()) >= seen_before + SLOW_READERS):
            crowd.poll(0.25, read_size=8)
        started = sum(1 for data in crowd.received if data.startswith(b"HTTP/1.1 200"))
        assert started == SLOW_READERS, f"{proxy.kind}: {started} of {SLOW_READERS} slow readers got a 200 head"
        probe(proxy, within=3)
        samples = []
        for _ in range(4):
            crowd.poll(0.25, read_size=8)
            samples.append(proxy.rss_kib())
        assert not [i for i, t in enumerate(crowd.closed_at) if t is not None], \
            f"{proxy.kind}: slow readers were disconnected with the default send timeout"
    finally:
        crowd.close()
    peak = max(samples)
    after = proxy.rss_kib()
    try:
        after = wait_until(lambda: (r := proxy.rss_kib()) <= base + 30 * 1024 and r, 10, interval=0.25)
    except AssertionError:
        pass
    growth = (peak - base) / SLOW_READERS
    print(f"\n{proxy.kind}: slow readers RSS {base} -> {peak} KiB ({growth:.1f} KiB per connection), "
          f"{after} KiB once they left")
    return growth, base, after


@pytest.mark.budget(60)
def test_slow_readers_cost_tracegate_no_more_memory_than_nginx(origin, start_proxy):
    """Slow readers of a 1 MiB answer: tracegate reads the upstream only as fast as the client reads
    (no whole-body buffering), so it grows at most 64 KiB per slow client on average and no more
    than 1.5 times what nginx grows (+8 MiB), and its RSS returns close to the baseline once the
    clients leave. (nginx runs with `proxy_max_temp_file_size 0`, so it keeps what it reads in its
    memory buffers and does not spill 300 MiB to temp files.)"""
    ng = start_proxy("nginx", origin, nginx_server={"proxy_max_temp_file_size": "0"})
    nginx_growth, _, _ = slow_read_growth(ng, origin)
    tg = start_proxy("tracegate", origin)
    tg_growth, tg_base, tg_after = slow_read_growth(tg, origin)
    # Beyond what nginx has, tracegate keeps copies of the bodies for their traces: at most
    # capture_memory_limit (16 MiB by default) in all, however many clients there are, and about as
    # much again while their traces are built (measured: 28-30 MiB in all at 300 slow readers).
    tracing = 2 * CAPTURE_MEMORY_LIMIT_KIB
    per_connection = (tg_growth * SLOW_READERS - tracing) / SLOW_READERS
    assert per_connection <= 64, f"tracegate grew {tg_growth:.1f} KiB per slow reader"
    assert tg_growth * SLOW_READERS <= 1.5 * max(nginx_growth, 0) * SLOW_READERS + tracing + 8 * 1024, \
        f"tracegate grew {tg_growth:.1f} KiB per slow reader, nginx {nginx_growth:.1f}"
    assert tg_after <= tg_base + 30 * 1024, f"tracegate RSS stayed at {tg_after} KiB (baseline {tg_base})"
    assert_origin_saw_no_anomaly(origin)


@pytest.mark.parametrize("kind", KINDS)
def test_client_that_reads_nothing_is_disconnected_after_the_send_timeout(kind, origin, start_proxy):
    """With a 2 s send timeout, a client that stops reading a 16 MiB answer (more than the proxy's
    kernel send buffer can take, 4 MiB at most) is disconnected: draining its socket 5 s later ends
    in a close well before the whole answer."""
    proxy = start_proxy(kind, origin, send_timeout="2s")
    probe(proxy, within=3)
    size = 16 * MIB
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.settimeout(5)
    try:
        s.connect(("127.0.0.1", proxy.port))
        s.sendall(f"GET /no-read/{tag()}?pad={size} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        time.sleep(5)
        s.settimeout(3)
        received, ended = 0, False
        try:
            while True:
                data = s.recv(1 << 20)
                if not data:
                    ended = True
                    break
                received += len(data)
        except (ConnectionResetError, BrokenPipeError):
            ended = True
        except (socket.timeout, TimeoutError):
            pass
    finally:
        s.close()
    assert ended and received < size, \
        f"{kind}: a client that read nothing for 5 s was not disconnected ({received} bytes arrived, closed: {ended})"
    probe(proxy, within=3)


def test_connection_beyond_max_connections_gets_503_and_later_ones_are_served(origin, start_proxy):
    """tracegate only: nginx has no counterpart (`worker_connections` stops accepting without a word,
    `limit_conn` counts requests, not connections). The 51st connection gets a 503 JSON error and
    is closed, the refusal is counted, and once connections go away new ones are served."""
    proxy = start_proxy("tracegate", origin, max_connections="50")
    tg = proxy.tracegate
    refused_before = metric(tg, "tracegate_connections_refused_total")
    held = [RawHTTP("127.0.0.1", proxy.port, timeout=5) for _ in range(50)]
    try:
        for c in held[:5]:  # some of them busy with a keep-alive exchange, the rest idle
            c.request("GET", f"/held/{tag()}")
            assert c.read_response().status == 200
        time.sleep(0.3)
        with RawHTTP("127.0.0.1", proxy.port, timeout=3) as extra:
            extra.sock.settimeout(1)
            try:
                resp = extra.read_response()
            except (socket.timeout, TimeoutError):
                extra.sock.settimeout(3)
                extra.request("GET", f"/extra/{tag()}")
                resp = extra.read_response()
            assert_json_error(resp, 503)
            assert extra.is_closed_by_peer(timeout=2), "the refused connection was left open"
        assert metric(tg, "tracegate_connections_refused_total") >= refused_before + 1
    finally:
        for c in held:
            c.close()
    wait_until(lambda: innocent_request(proxy.port, f"/after-cap/{tag()}").status == 200, 5,
               message="a new connection to be served once the others closed")
    assert all(not r.path.startswith("/extra/") for r in origin.snapshot()), origin.describe()


def lower_fd_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (128, 128))


@pytest.mark.parametrize("kind", KINDS)
def test_running_out_of_file_descriptors_backs_off_instead_of_spinning(kind, origin, start_proxy):
    """With RLIMIT_NOFILE at 128 and more connections waiting than descriptors left, accept fails
    with EMFILE. Both proxies back off (nginx disables accepting for 500 ms): under 20% of a core
    while saturated, the failure is logged, tracegate counts it in `tracegate_accept_errors_total`,
    and once the connections close a normal request is served again."""
    # max_connections above what 128 descriptors allow, so that accept itself runs out of them.
    extra = {"max_connections": "1000"} if kind == "tracegate" else {}
    proxy = start_proxy(kind, origin, preexec_fn=lower_fd_limit, **extra)
    probe(proxy, within=3)
    socks = []
    try:
        for _ in range(250):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", proxy.port))
            socks.append(s)
        wait_until(lambda: proxy.fd_count() >= 120, 5, message=f"{kind} to use up its descriptors")
        time.sleep(0.5)
        cpu0, t0 = proxy.cpu_seconds(), time.monotonic()
        time.sleep(2)
        share = (proxy.cpu_seconds() - cpu0) / (time.monotonic() - t0)
        print(f"\n{kind}: {proxy.fd_count()} fds, {share:.1%} of a core while out of descriptors")
        assert share < 0.2, f"{kind} used {share:.0%} of a core while accept failed (no back-off)"
        logs = proxy.logs().lower()
        assert "too many open files" in logs or "emfile" in logs, f"{kind} logged no accept failure:\n{logs[-2000:]}"
        if kind == "tracegate":
            assert metric(proxy.tracegate, "tracegate_accept_errors_total") > 0
    finally:
        for s in socks:
            s.close()
    wait_until(lambda: innocent_request(proxy.port, f"/after-emfile/{tag()}").status == 200, 10,
               message=f"{kind} to serve again once descriptors were free")


def test_by_default_the_connection_cap_stays_below_the_descriptor_limit(origin, start_proxy):
    """With RLIMIT_NOFILE at 128 and the default max_connections (derived from the limit), tracegate
    never runs out of descriptors: connections beyond the cap get a 503 and are counted, it stays
    idle while they wait, and serves again once they are gone."""
    proxy = start_proxy("tracegate", origin, preexec_fn=lower_fd_limit)
    probe(proxy, within=3)
    socks = []
    try:
        for _ in range(200):
            socks.append(socket.create_connection(("127.0.0.1", proxy.port), timeout=5))
        wait_until(lambda: metric(proxy.tracegate, "tracegate_connections_refused_total") > 0, 5,
                   message="connections beyond the cap to be refused")
        cpu0, t0 = proxy.cpu_seconds(), time.monotonic()
        time.sleep(1.5)
        share = (proxy.cpu_seconds() - cpu0) / (time.monotonic() - t0)
        assert share < 0.2, f"tracegate used {share:.0%} of a core at its connection cap"
        assert metric(proxy.tracegate, "tracegate_accept_errors_total") == 0
        def answered_503(s: socket.socket) -> bool:
            s.settimeout(0.05)  # a connection within the cap waits for its request: nothing to read
            try:
                return s.recv(4096, socket.MSG_PEEK).startswith(b"HTTP/1.1 503")
            except OSError:
                return False
        assert any(answered_503(s) for s in socks), "no connection beyond the cap was answered 503"
    finally:
        for s in socks:
            s.close()
    wait_until(lambda: innocent_request(proxy.port, f"/after-cap/{tag()}").status == 200, 10,
               message="tracegate to serve again once connections closed")
