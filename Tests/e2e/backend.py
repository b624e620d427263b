#!/usr/bin/env python3
"""Fake upstream for tracegate's end-to-end tests (standard library only).

Run it alone:  python3 backend.py --port 8001
Or in-process: backend = Backend(name="a").start(); ...; backend.stop()

Every response carries `X-Backend: <name>` so a test can tell which backend answered.
Endpoints (all accept any method unless noted; query parameters are optional):

  /echo[...]?delay_ms=&close=1   JSON: method, target, path, query, headers (ordered
                                 [name, value] pairs, original case), body length and
                                 sha256, framing seen, connection id and peer address.
  /raw[/...]                     The request body, verbatim, with the request's Content-Type
                                 (any path below it, e.g. /raw/v1/messages to answer a chat request).
  /bytes?n=&seed=&chunked=1      n deterministic bytes (see `data_chunks`), Content-Length
                                 framing or chunked.
  /sse?events=20&interval_ms=50  text/event-stream, one chunk per `data:` event.
  /status/<code>?h=Name:Value&body=text
                                 That status, extra headers (repeatable, sent in order) and body.
  /hang                          Reads the request, never answers; notes when the peer closes.
  /stall-mid-stream?stall_ms=    Sends the head and one chunk, then goes silent; notes when
                                 the peer closes.
  /reset-mid-body?n=             Announces n bytes, sends half, then resets the connection.
  /close-after-response          Answers with keep-alive framing, then closes the connection.
  /upload?tag=&read_delay_ms=    Reads the body chunk by chunk (after an optional delay),
                                 recording each receipt under `tag` in /stats (so a test can
                                 see a chunk arrive before the client has sent the next one).
  /early-hints                   A 103 interim response, then 200 "final answer".
  /garbage                       Answers with bytes that are not HTTP, then closes.
  /close-without-response        Reads the request and closes the connection without answering.
  /until-close?n=                n bytes framed by closing the connection (no length, not chunked).
  /big-headers?size=&count=      `count` response headers of `size` bytes each.
  /gzip?n=                       A gzip-compressed JSON body (`Content-Encoding: gzip`), the bytes
                                 of `gzip_body(n)`.
  /huge-event?size=              text/event-stream: one event whose data line holds `size` bytes,
                                 sent in 64 KiB chunks, then `data: after` (`huge_event(size)`).
  /endless-sse[...]?interval_ms= Chat-completion chunks with content "w0 ", "w1 "... every
                                 interval_ms (default 20) until the peer goes away (counted in
                                 `aborted_streams`). Any path below it, e.g. /endless-sse/v1/chat/completions.
  /v1/chat/completions           OpenAI-compatible (POST). Non-streamed JSON, or SSE chunks
                                 ending with `data: [DONE]` when the JSON body has
                                 "stream": true. Controls (header or query):
                                   X-Fake-Delay-Ms / delay_ms          wait before the head
                                   X-Fake-Fail / fail                  answer that status with
                                                                       an OpenAI error object
                                   X-Fake-Token-Interval-Ms / token_interval_ms
                                   X-Fake-Fail-After / fail_after      streamed: cut the
                                                                       connection after N chunks
                                   X-Fake-Done-Linger-Ms / done_linger_ms
                                                                       streamed: wait this long
                                                                       between `data: [DONE]` and
                                                                       the end of the chunked body
                                 Streamed with "stream_options": {"include_usage": true}: a last
                                 chunk with empty `choices` and the `usage`, as OpenAI sends it.
                                 Every completion answered is recorded in /stats `chat_completions`
                                 (id, stream, include_usage, usage), whether or not the usage was sent.
  /stats                         JSON counters (GET); see `Stats.snapshot`.

Requests may carry `?tag=...`; tags are recorded in /stats (`seen_tags`, `completed_tags`).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import http.server
import json
import random
import select
import socket
import ssl
import struct
import threading
import time
import uuid
from functools import lru_cache
from typing import Iterator
from urllib.parse import parse_qs, urlsplit

# --------------------------------------------------------------------------------------
# Deterministic data: a prime-sized random block repeated, so that a proxy which drops,
# duplicates or reorders buffers (whose sizes are powers of two) changes the sha256.

_BLOCK_LEN = 1_000_003


@lru_cache(maxsize=4)
def _block(seed: int) -> bytes:
    return random.Random(seed).randbytes(_BLOCK_LEN)


def data_chunks(n: int, seed: int = 0, piece: int = 64 * 1024) -> Iterator[memoryview]:
    """The n bytes served by /bytes?n=&seed=, in pieces of at most `piece` bytes."""
    block = memoryview(_block(seed))
    pos = 0
    while pos < n:
        off = pos % _BLOCK_LEN
        take = min(piece, _BLOCK_LEN - off, n - pos)
        yield block[off : off + take]
        pos += take


def gzip_body(n: int) -> bytes:
    """The body of /gzip?n=: a JSON document, gzip-compressed with a fixed header (mtime 0)."""
    return gzip.compress(json.dumps({"items": list(range(n))}).encode(), mtime=0)


def huge_event(size: int) -> bytes:
    """The body of /huge-event?size=: one event of `size` data bytes, then a small one."""
    return b"data: " + b"x" * size + b"\n\ndata: after\n\n"


def data_sha256(n: int, seed: int = 0) -> str:
    h = hashlib.sha256()
    for part in data_chunks(n, seed, piece=1 << 20):
        h.update(part)
    return h.hexdigest()


# --------------------------------------------------------------------------------------


class Stats:
    """Counters shared by all handler threads; `snapshot()` is what /stats returns."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.connections_accepted = 0
        self.connections_open = 0
        self.requests = 0
        self.aborted_streams = 0  # a streamed response whose write failed (peer went away)
        self.completed_streams = 0
        self.hang_closed = 0  # /hang requests whose peer closed the connection
        self.stall_closed = 0  # /stall-mid-stream requests whose peer closed the connection
        self.server_closed = 0  # connections closed by /close-after-response
        self.chunk_events: dict[str, list[int]] = {}  # tag -> sizes of body chunks received
        self.seen_tags: list[str] = []  # tag of every request whose head was read
        self.completed_tags: list[str] = []  # tag of every request fully answered
        self.peers: list[list] = []  # [connection_id, peer_port] per request, in order
        self.chat_completions: list[dict] = []  # per /v1/chat/completions answered: id, usage, ...

    def add(self, field: str, amount: int = 1) -> None:
        with self.lock:
            setattr(self, field, getattr(self, field) + amount)

    def snapshot(self) -> dict:
        with self.lock:
            return {
                "connections_accepted": self.connections_accepted,
                "connections_open": self.connections_open,
                "requests": self.requests,
                "aborted_streams": self.aborted_streams,
                "completed_streams": self.completed_streams,
                "hang_closed": self.hang_closed,
                "stall_closed": self.stall_closed,
                "server_closed": self.server_closed,
                "chunk_events": {k: list(v) for k, v in self.chunk_events.items()},
                "seen_tags": list(self.seen_tags),
                "completed_tags": list(self.completed_tags),
                "peers": [list(p) for p in self.peers],
                "chat_completions": [dict(c) for c in self.chat_completions],
            }


class PeerGone(Exception):
    """The peer closed or reset the connection while we were writing to it."""


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # The head and the body are written separately: with Nagle's algorithm on, the body waits for
    # the client's delayed ACK, 40 ms per response on Linux, direct or through any proxy.
    disable_nagle_algorithm = True
    server_version = "fake-backend/1"
    server: "_Server"

    # ---- connection bookkeeping ----------------------------------------------------

    def setup(self) -> None:
        super().setup()
        stats = self.server.stats
        with stats.lock:
            stats.connections_accepted += 1
            stats.connections_open += 1
            self.connection_id = stats.connections_accepted
        self.requests_on_connection = 0

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass
        self.server.stats.add("connections_open", -1)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - stdlib signature
        if self.server.verbose:
            super().log_message(format, *args)

    # ---- dispatch --------------------------------------------------------------------

    def handle_one_request(self) -> None:
        # Route every method (including custom ones such as PROPFIND) through `dispatch`.
        try:
            self.raw_requestline = self.rfile.readline(65537)
            if len(self.raw_requestline) > 65536:
                self.send_error(414)
                return
            if not self.raw_requestline:
                self.close_connection = True
                return
            if not self.parse_request():
                return
            self.dispatch()
            self.wfile.flush()
        except (ConnectionError, PeerGone, socket.timeout, BrokenPipeError):
            self.close_connection = True

    def dispatch(self) -> None:
        split = urlsplit(self.path)
        self.raw_path = split.path
        self.raw_query = split.query
        self.query = parse_qs(split.query, keep_blank_values=True)
        self.tag = self.q("tag")
        self.requests_on_connection += 1
        stats = self.server.stats
        with stats.lock:
            if self.raw_path != "/stats":
                stats.requests += 1
                stats.peers.append([self.connection_id, self.client_address[1]])
            if self.tag:
                stats.seen_tags.append(self.tag)
        path = self.raw_path
        if path == "/stats":
            self.route_stats()
        elif path == "/raw" or path.startswith("/raw/"):
            self.route_raw()
        elif path == "/bytes":
            self.route_bytes()
        elif path == "/sse":
            self.route_sse()
        elif path.startswith("/status/"):
            self.route_status()
        elif path == "/hang":
            self.route_hang()
        elif path == "/stall-mid-stream":
            self.route_stall_mid_stream()
        elif path == "/reset-mid-body":
            self.route_reset_mid_body()
        elif path == "/close-after-response":
            self.route_close_after_response()
        elif path == "/upload":
            self.route_upload()
        elif path == "/early-hints":
            self.route_early_hints()
        elif path == "/garbage":
            self.route_garbage()
        elif path == "/close-without-response":
            self.route_close_without_response()
        elif path == "/until-close":
            self.route_until_close()
        elif path == "/big-headers":
            self.route_big_headers()
        elif path == "/gzip":
            self.route_gzip()
        elif path == "/huge-event":
            self.route_huge_event()
        elif path.startswith("/endless-sse"):
            self.route_endless_sse()
        elif path == "/v1/responses":
            self.route_responses()
        elif path == "/v1/messages":
            self.route_anthropic_messages()
        elif path == "/v1/chat/completions":
            self.route_chat_completions()
        else:  # /echo and anything else: echo the request
            self.route_echo()
        if self.tag:
            with stats.lock:
                stats.completed_tags.append(self.tag)

    # ---- helpers ---------------------------------------------------------------------

    def q(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[0] if values else default

    def qint(self, name: str, default: int) -> int:
        return int(self.q(name, str(default)))

    def control(self, header: str, query: str) -> str | None:
        """A test control, from a request header or a query parameter."""
        return self.headers.get(header) or self.q(query)

    def is_chunked(self) -> bool:
        te = self.headers.get_all("Transfer-Encoding") or []
        return any("chunked" in v.lower() for v in te)

    def read_body_chunks(self) -> Iterator[bytes]:
        """Yield the request body as it arrives (decoding chunked framing)."""
        if self.is_chunked():
            while True:
                line = self.rfile.readline(1024)
                if not line:
                    raise ConnectionError("eof in chunk size")
                size = int(line.split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return
                remaining = size
                while remaining:
                    data = self.rfile.read1(remaining) if hasattr(self.rfile, "read1") else self.rfile.read(remaining)
                    if not data:
                        raise ConnectionError("eof in chunk")
                    remaining -= len(data)
                    yield data
                if self.rfile.readline(3).strip():
                    raise ConnectionError("bad chunk terminator")
        else:
            remaining = int(self.headers.get("Content-Length") or 0)
            while remaining:
                data = self.rfile.read(min(remaining, 256 * 1024))
                if not data:
                    raise ConnectionError("eof in body")
                remaining -= len(data)
                yield data

    def read_body(self) -> bytes:
        return b"".join(self.read_body_chunks())

    def write(self, data: bytes) -> None:
        try:
            self.wfile.write(data)
        except OSError as e:
            raise PeerGone(str(e)) from e

    def start_response(self, status: int, headers: list[tuple[str, str]], reason: str | None = None) -> None:
        self.send_response(status, reason)
        self.send_header("X-Backend", self.server.name)
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()

    def respond(self, status: int, body: bytes, content_type: str = "application/json",
                extra: list[tuple[str, str]] | None = None) -> None:
        headers = [("Content-Type", content_type)]
        if status not in (204, 304):
            headers.append(("Content-Length", str(len(body))))
        if self.q("close") == "1":
            headers.append(("Connection", "close"))
            self.close_connection = True
        headers += extra or []
        self.start_response(status, headers)
        if self.command != "HEAD" and status not in (204, 304):
            self.write(body)

    def respond_json(self, status: int, obj) -> None:
        self.respond(status, json.dumps(obj).encode())

    def write_chunk(self, data: bytes) -> None:
        self.write(b"%x\r\n%s\r\n" % (len(data), data))

    def end_chunks(self) -> None:
        self.write(b"0\r\n\r\n")

    def wait_for_peer_close(self, seconds: float) -> bool:
        """Wait up to `seconds` (or until the server stops) for the peer to close."""
        deadline = time.monotonic() + seconds
        sock = self.connection
        while time.monotonic() < deadline and not self.server.stopping.is_set():
            readable, _, _ = select.select([sock], [], [], 0.05)
            if readable:
                try:
                    if not sock.recv(65536, socket.MSG_PEEK):
                        return True
                    sock.recv(65536)  # discard anything else the peer sends
                except OSError:
                    return True
        return False

    # ---- routes ----------------------------------------------------------------------

    def route_stats(self) -> None:
        self.read_body()
        self.respond_json(200, self.server.stats.snapshot())

    def route_echo(self) -> None:
        h = hashlib.sha256()
        length = 0
        for part in self.read_body_chunks():
            h.update(part)
            length += len(part)
        delay = self.qint("delay_ms", 0)
        if delay:
            time.sleep(delay / 1000)
        self.respond_json(200, {
            "backend": self.server.name,
            "method": self.command,
            "target": self.path,
            "path": self.raw_path,
            "query": self.raw_query,
            "version": self.request_version,
            "headers": [[k, v] for k, v in self.headers.items()],
            "body_length": length,
            "body_sha256": h.hexdigest(),
            "body_chunked": self.is_chunked(),
            "connection_id": self.connection_id,
            "request_on_connection": self.requests_on_connection,
            "peer": [self.client_address[0], self.client_address[1]],
        })

    def route_raw(self) -> None:
        body = self.read_body()
        self.respond(200, body, self.headers.get("Content-Type", "application/octet-stream"))

    def route_bytes(self) -> None:
        self.read_body()
        n = self.qint("n", 1024)
        seed = self.qint("seed", 0)
        chunked = self.q("chunked") == "1"
        headers = [("Content-Type", "application/octet-stream")]
        headers.append(("Transfer-Encoding", "chunked") if chunked else ("Content-Length", str(n)))
        self.start_response(200, headers)
        if self.command == "HEAD":
            return
        try:
            for part in data_chunks(n, seed):
                self.write_chunk(part) if chunked else self.write(part)
            if chunked:
                self.end_chunks()
        except PeerGone:
            self.server.stats.add("aborted_streams")
            raise
        self.server.stats.add("completed_streams")

    def route_sse(self) -> None:
        self.read_body()
        events = self.qint("events", 20)
        interval = self.qint("interval_ms", 50) / 1000
        self.start_response(200, [
            ("Content-Type", "text/event-stream"),
            ("Cache-Control", "no-cache"),
            ("Transfer-Encoding", "chunked"),
        ])
        try:
            start = time.monotonic()
            for i in range(events):
                if i:
                    # Pace against the start time so the schedule does not drift.
                    time.sleep(max(0.0, start + i * interval - time.monotonic()))
                payload = json.dumps({"i": i, "t": time.time()})
                self.write_chunk(f"id: {i}\ndata: {payload}\n\n".encode())
            self.end_chunks()
        except PeerGone:
            self.server.stats.add("aborted_streams")
            raise
        self.server.stats.add("completed_streams")

    def route_status(self) -> None:
        self.read_body()
        code = int(self.raw_path.split("/")[2])
        extra = []
        for item in self.query.get("h", []):
            name, _, value = item.partition(":")
            extra.append((name, value.strip()))
        body = (self.q("body", "") or "").encode()
        self.respond(code, body, "text/plain", extra)

    def route_hang(self) -> None:
        self.read_body()
        if self.wait_for_peer_close(self.qint("max_s", 60)):
            self.server.stats.add("hang_closed")
        self.close_connection = True

    def route_stall_mid_stream(self) -> None:
        self.read_body()
        self.start_response(200, [("Content-Type", "text/plain"), ("Transfer-Encoding", "chunked")])
        self.write_chunk(b"first part\n")
        if self.wait_for_peer_close(self.qint("stall_ms", 60_000) / 1000):
            self.server.stats.add("stall_closed")
            self.close_connection = True
            return
        self.write_chunk(b"second part\n")
        self.end_chunks()

    def route_reset_mid_body(self) -> None:
        self.read_body()
        n = self.qint("n", 1_000_000)
        self.start_response(200, [("Content-Type", "application/octet-stream"), ("Content-Length", str(n))])
        sent = 0
        for part in data_chunks(n // 2):
            self.write(part)
            sent += len(part)
        # SO_LINGER with a zero timeout turns close() into a reset.
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        self.connection.close()

    def route_close_after_response(self) -> None:
        self.read_body()
        body = b"closing now\n"
        # Keep-alive framing, no `Connection: close`: the proxy only learns of the close
        # from the socket, as with a backend whose keep-alive timeout has passed.
        self.start_response(200, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        self.write(body)
        self.wfile.flush()
        self.close_connection = True
        self.connection.shutdown(socket.SHUT_RDWR)
        self.server.stats.add("server_closed")

    def route_early_hints(self) -> None:
        self.read_body()
        self.write(b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n")
        self.respond(200, b"final answer", "text/plain")

    def route_garbage(self) -> None:
        self.read_body()
        self.write(b"THIS IS NOT HTTP\r\n\r\n")
        self.close_connection = True

    def route_close_without_response(self) -> None:
        self.read_body()
        self.close_connection = True
        self.connection.shutdown(socket.SHUT_RDWR)

    def route_until_close(self) -> None:
        self.read_body()
        n = self.qint("n", 100_000)
        # Neither Content-Length nor chunked: the body ends when the connection closes.
        self.start_response(200, [("Content-Type", "application/octet-stream"), ("Connection", "close")])
        self.close_connection = True
        for part in data_chunks(n):
            self.write(part)

    def route_big_headers(self) -> None:
        self.read_body()
        size = self.qint("size", 16 * 1024)
        count = self.qint("count", 1)
        body = b"big headers"
        headers = [(f"X-Big-{i}", "v" * size) for i in range(count)]
        self.respond(200, body, "text/plain", headers)

    def route_gzip(self) -> None:
        self.read_body()
        self.respond(200, gzip_body(self.qint("n", 1000)), "application/json", [("Content-Encoding", "gzip")])

    def route_huge_event(self) -> None:
        self.read_body()
        body = huge_event(self.qint("size", 1 << 20))
        self.start_response(200, [("Content-Type", "text/event-stream"), ("Transfer-Encoding", "chunked")])
        for i in range(0, len(body), 64 * 1024):
            self.write_chunk(body[i : i + 64 * 1024])
        self.end_chunks()

    def route_endless_sse(self) -> None:
        self.read_body()
        interval = self.qint("interval_ms", 20) / 1000
        self.start_response(200, [("Content-Type", "text/event-stream"), ("Cache-Control", "no-cache"),
                                  ("Transfer-Encoding", "chunked")])
        i = 0
        try:
            while not self.server.stopping.is_set():
                chunk = {"id": "chatcmpl-endless", "object": "chat.completion.chunk", "created": 1, "model": "endless",
                         "choices": [{"index": 0, "delta": {"content": f"w{i} "}, "finish_reason": None}]}
                self.write_chunk(f"data: {json.dumps(chunk)}\n\n".encode())
                i += 1
                time.sleep(interval)
        except PeerGone:
            self.server.stats.add("aborted_streams")
            raise
        self.close_connection = True

    def route_upload(self) -> None:
        tag = self.tag or "untagged"
        read_delay = self.qint("read_delay_ms", 0)
        if read_delay:  # a slow consumer: let the body pile up before reading it
            time.sleep(read_delay / 1000)
        h = hashlib.sha256()
        length = 0
        for part in self.read_body_chunks():
            with self.server.stats.lock:
                self.server.stats.chunk_events.setdefault(tag, []).append(len(part))
            h.update(part)
            length += len(part)
        self.respond_json(200, {"body_length": length, "body_sha256": h.hexdigest(),
                                "chunks": len(self.server.stats.chunk_events.get(tag, []))})

    def route_chat_completions(self) -> None:
        raw = self.read_body()
        if self.command != "POST":
            self.respond_json(405, {"error": {"message": "use POST", "type": "invalid_request_error",
                                              "code": None}})
            return
        try:
            req = json.loads(raw or b"{}")
        except ValueError:
            self.respond_json(400, {"error": {"message": "invalid JSON body", "type": "invalid_request_error",
                                              "code": None}})
            return
        delay = int(self.control("X-Fake-Delay-Ms", "delay_ms") or 0)
        if delay:
            time.sleep(delay / 1000)
        fail = self.control("X-Fake-Fail", "fail")
        if fail:
            self.respond_json(int(fail), {"error": {"message": f"fake failure {fail}", "type": "server_error",
                                                    "code": str(fail)}})
            return
        model = req.get("model", "fake-model")
        messages = req.get("messages") or []
        last = next((m.get("content", "") for m in reversed(messages) if m.get("role") == "user"), "")
        text = f"You said: {last}" if last else "Hello from the fake backend."
        tokens = [w + " " for w in text.split(" ")]
        tokens[-1] = tokens[-1].rstrip()
        completion_id = "chatcmpl-" + uuid.uuid4().hex[:24]
        created = int(time.time())
        usage = {"prompt_tokens": sum(len(str(m.get("content", "")).split()) for m in messages),
                 "completion_tokens": len(tokens)}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        include_usage = bool((req.get("stream_options") or {}).get("include_usage"))
        with self.server.stats.lock:
            self.server.stats.chat_completions.append({
                "id": completion_id, "stream": bool(req.get("stream")), "include_usage": include_usage,
                "usage": dict(usage)})
        if not req.get("stream"):
            self.respond_json(200, {
                "id": completion_id, "object": "chat.completion", "created": created, "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "finish_reason": "stop"}],
                "usage": usage,
            })
            return
        interval = int(self.control("X-Fake-Token-Interval-Ms", "token_interval_ms") or 10) / 1000
        fail_after = self.control("X-Fake-Fail-After", "fail_after")
        self.start_response(200, [("Content-Type", "text/event-stream"), ("Cache-Control", "no-cache"),
                                  ("Transfer-Encoding", "chunked")])

        def chunk(delta: dict, finish: str | None) -> bytes:
            obj = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model,
                   "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            return f"data: {json.dumps(obj)}\n\n".encode()

        pieces = [chunk({"role": "assistant", "content": ""}, None)]
        pieces += [chunk({"content": t}, None) for t in tokens]
        pieces.append(chunk({}, "stop"))
        if include_usage:
            pieces.append(("data: " + json.dumps({
                "id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model,
                "choices": [], "usage": usage}) + "\n\n").encode())
        try:
            for i, piece in enumerate(pieces):
                if fail_after is not None and i >= int(fail_after):
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.close_connection = True
                    self.connection.close()
                    return
                self.write_chunk(piece)
                time.sleep(interval)
            self.write_chunk(b"data: [DONE]\n\n")
            linger = int(self.control("X-Fake-Done-Linger-Ms", "done_linger_ms") or 0)
            if linger:
                self.wfile.flush()
                time.sleep(linger / 1000)
            self.end_chunks()
        except PeerGone:
            self.server.stats.add("aborted_streams")
            raise
        self.server.stats.add("completed_streams")


    def chat_request(self) -> dict | None:
        """The JSON body of a POST, or None after answering 405/400."""
        raw = self.read_body()
        if self.command != "POST":
            self.respond_json(405, {"error": {"message": "use POST", "type": "invalid_request_error"}})
            return None
        try:
            return json.loads(raw or b"{}")
        except ValueError:
            self.respond_json(400, {"error": {"message": "invalid JSON body", "type": "invalid_request_error"}})
            return None

    def record_completion(self, completion_id: str, stream: bool, usage: dict) -> None:
        with self.server.stats.lock:
            self.server.stats.chat_completions.append(
                {"id": completion_id, "stream": stream, "include_usage": True, "usage": dict(usage)})

    def stream_events(self, events: list[tuple[str | None, dict]]) -> None:
        """Sends SSE events (with `event:` names when given), one chunk each, token_interval_ms apart."""
        interval = int(self.control("X-Fake-Token-Interval-Ms", "token_interval_ms") or 10) / 1000
        self.start_response(200, [("Content-Type", "text/event-stream"), ("Cache-Control", "no-cache"),
                                  ("Transfer-Encoding", "chunked")])
        try:
            for name, data in events:
                prefix = f"event: {name}\n" if name else ""
                self.write_chunk(f"{prefix}data: {json.dumps(data)}\n\n".encode())
                time.sleep(interval)
            self.end_chunks()
        except PeerGone:
            self.server.stats.add("aborted_streams")
            raise
        self.server.stats.add("completed_streams")

    def route_responses(self) -> None:
        """OpenAI Responses API: `input` (string or messages) → one output_text message."""
        req = self.chat_request()
        if req is None:
            return
        model = req.get("model", "fake-model")
        given = req.get("input", "")
        if isinstance(given, str):
            last = given
        else:
            last = ""
            for item in reversed(given):
                if item.get("role") != "user":
                    continue
                content = item.get("content", "")
                last = content if isinstance(content, str) else "".join(
                    part.get("text", "") for part in content if isinstance(part, dict))
                break
        text = f"You said: {last}" if last else "Hello from the fake backend."
        tokens = [w + " " for w in text.split(" ")]
        tokens[-1] = tokens[-1].rstrip()
        response_id, message_id = "resp_" + uuid.uuid4().hex, "msg_" + uuid.uuid4().hex
        usage = {"input_tokens": len(last.split()), "output_tokens": len(tokens)}
        usage["total_tokens"] = usage["input_tokens"] + usage["output_tokens"]
        self.record_completion(response_id, bool(req.get("stream")),
                               {"prompt_tokens": usage["input_tokens"], "completion_tokens": usage["output_tokens"],
                                "total_tokens": usage["total_tokens"]})
        message = {"id": message_id, "type": "message", "status": "completed", "role": "assistant",
                   "content": [{"type": "output_text", "text": text, "annotations": []}]}
        base = {"id": response_id, "object": "response", "created_at": int(time.time()), "model": model,
                "error": None, "incomplete_details": None, "instructions": None, "metadata": {},
                "parallel_tool_calls": True, "temperature": 1.0, "tool_choice": "auto", "tools": [], "top_p": 1.0}
        done = dict(base, status="completed", output=[message], usage=dict(
            usage, input_tokens_details={"cached_tokens": 0}, output_tokens_details={"reasoning_tokens": 0}))
        if not req.get("stream"):
            self.respond_json(200, done)
            return
        started = dict(base, status="in_progress", output=[], usage=None)
        events: list[tuple[str | None, dict]] = [
            ("response.created", {"type": "response.created", "sequence_number": 0, "response": started}),
            ("response.output_item.added", {"type": "response.output_item.added", "sequence_number": 1,
                                            "output_index": 0, "item": dict(message, status="in_progress",
                                                                            content=[])}),
            ("response.content_part.added", {"type": "response.content_part.added", "sequence_number": 2,
                                             "item_id": message_id, "output_index": 0, "content_index": 0,
                                             "part": {"type": "output_text", "text": "", "annotations": []}}),
        ]
        for token in tokens:
            events.append(("response.output_text.delta", {
                "type": "response.output_text.delta", "sequence_number": len(events), "item_id": message_id,
                "output_index": 0, "content_index": 0, "delta": token, "logprobs": []}))
        events += [
            ("response.output_text.done", {"type": "response.output_text.done", "sequence_number": len(events),
                                           "item_id": message_id, "output_index": 0, "content_index": 0,
                                           "text": text, "logprobs": []}),
            ("response.output_item.done", {"type": "response.output_item.done", "sequence_number": len(events) + 1,
                                           "output_index": 0, "item": message}),
            ("response.completed", {"type": "response.completed", "sequence_number": len(events) + 2,
                                    "response": done}),
        ]
        self.stream_events(events)

    def route_anthropic_messages(self) -> None:
        """Anthropic Messages: usage in message_start, cumulative output tokens in message_delta."""
        req = self.chat_request()
        if req is None:
            return
        model = req.get("model", "fake-claude")
        last = ""
        for message in reversed(req.get("messages") or []):
            if message.get("role") != "user":
                continue
            content = message.get("content", "")
            last = content if isinstance(content, str) else "".join(
                block.get("text", "") for block in content if isinstance(block, dict))
            break
        text = f"You said: {last}" if last else "Hello from the fake backend."
        tokens = [w + " " for w in text.split(" ")]
        tokens[-1] = tokens[-1].rstrip()
        message_id = "msg_" + uuid.uuid4().hex[:24]
        input_tokens, output_tokens = len(last.split()) + 3, len(tokens)
        self.record_completion(message_id, bool(req.get("stream")),
                               {"prompt_tokens": input_tokens, "completion_tokens": output_tokens,
                                "total_tokens": input_tokens + output_tokens})
        if not req.get("stream"):
            self.respond_json(200, {
                "id": message_id, "type": "message", "role": "assistant", "model": model,
                "content": [{"type": "text", "text": text}], "stop_reason": "end_turn", "stop_sequence": None,
                "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens}})
            return
        events: list[tuple[str | None, dict]] = [
            ("message_start", {"type": "message_start", "message": {
                "id": message_id, "type": "message", "role": "assistant", "model": model, "content": [],
                "stop_reason": None, "stop_sequence": None,
                "usage": {"input_tokens": input_tokens, "output_tokens": 1}}}),
            ("content_block_start", {"type": "content_block_start", "index": 0,
                                     "content_block": {"type": "text", "text": ""}}),
            ("ping", {"type": "ping"}),
        ]
        events += [("content_block_delta", {"type": "content_block_delta", "index": 0,
                                            "delta": {"type": "text_delta", "text": t}}) for t in tokens]
        events += [
            ("content_block_stop", {"type": "content_block_stop", "index": 0}),
            ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                               "usage": {"output_tokens": output_tokens}}),
            ("message_stop", {"type": "message_stop"}),
        ]
        self.stream_events(events)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address, name: str, verbose: bool = False):
        self.name = name
        self.verbose = verbose
        self.stats = Stats()
        self.stopping = threading.Event()
        super().__init__(address, Handler)


class Backend:
    """A fake backend on a free loopback port, served from a background thread."""

    def __init__(self, name: str = "backend", host: str = "127.0.0.1", port: int = 0, verbose: bool = False,
                 tls: "ssl.SSLContext | None" = None):
        self.server = _Server((host, port), name, verbose)
        if tls is not None:
            # Every accepted connection does the TLS handshake in its own handler thread.
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True,
                                                 do_handshake_on_connect=False)
        self.scheme = "https" if tls is not None else "http"
        self.name = name
        self.host, self.port = self.server.server_address[:2]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       name=f"backend-{name}", daemon=True)

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"

    @property
    def stats(self) -> Stats:
        return self.server.stats

    def snapshot(self) -> dict:
        return self.server.stats.snapshot()

    def start(self) -> "Backend":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.stopping.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--name", default="backend")
    parser.add_argument("--verbose", action="store_true", help="log each request to stderr")
    args = parser.parse_args()
    backend = Backend(args.name, args.host, args.port, args.verbose)
    print(f"fake backend {args.name!r} listening on {backend.url}", flush=True)
    try:
        backend.server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        backend.server.stopping.set()
        backend.server.server_close()


if __name__ == "__main__":
    main()
