"""Every failure is answered (never hung) with a JSON error, and the proxy keeps serving."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from harness import assert_sockets_settle, assert_still_serves
from helpers import Eof, RawHTTP, assert_json_error, free_port, raw_request, send_raw, wait_until


def baseline_sockets(tg) -> int:
    """The proxy's socket count once a normal exchange has warmed its pool up."""
    assert_still_serves(tg)
    return tg.socket_count()


# ---- upstream failures -------------------------------------------------------------------


def test_backend_refusing_connections_gives_502(start_tracegate):
    tg = start_tracegate(f"http://127.0.0.1:{free_port()}")  # nothing listens there
    t0 = time.monotonic()
    r = raw_request(tg.port, "GET", "/anything", [("X-Request-ID", "rid-502")])
    assert time.monotonic() - t0 < 3
    body = assert_json_error(r, 502)
    assert body["request_id"] == "rid-502"


def test_backend_refusing_connections_gives_502_with_generated_request_id(start_tracegate):
    tg = start_tracegate(f"http://127.0.0.1:{free_port()}")
    body = assert_json_error(raw_request(tg.port, "POST", "/x", body=b"payload"), 502)
    assert len(body["request_id"]) >= 16


@pytest.fixture
def blackhole():
    """A port whose accept queue is full, so that new SYNs are dropped and connects hang."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(8):
        s = socket.socket()
        s.setblocking(False)
        try:
            s.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        fillers.append(s)
    probe = socket.socket()
    probe.settimeout(0.3)
    try:
        probe.connect(("127.0.0.1", port))
        pytest.fail("could not fill the accept queue: connects do not hang on this machine")
    except (socket.timeout, TimeoutError):
        pass
    finally:
        probe.close()
    yield port
    for s in fillers:
        s.close()
    listener.close()


def test_connect_timeout_gives_504(blackhole, start_tracegate):
    tg = start_tracegate(f"http://127.0.0.1:{blackhole}", connect_timeout="500ms")
    t0 = time.monotonic()
    r = raw_request(tg.port, "GET", "/slow-connect", timeout=10)
    elapsed = time.monotonic() - t0
    assert_json_error(r, 504)
    assert 0.4 <= elapsed <= 2.5, f"answered after {elapsed:.2f}s with connect_timeout=500ms"


def test_backend_that_never_answers_gives_504_after_first_byte_timeout(backend, start_tracegate):
    tg = start_tracegate(backend.url, first_byte_timeout="1s")
    base = baseline_sockets(tg)
    t0 = time.monotonic()
    r = raw_request(tg.port, "GET", "/hang", timeout=10)
    elapsed = time.monotonic() - t0
    assert_json_error(r, 504)
    assert 0.9 <= elapsed <= 3, f"answered after {elapsed:.2f}s with first_byte_timeout=1s"
    # The proxy gives up on the upstream connection too.
    wait_until(lambda: backend.snapshot()["hang_closed"] == 1, timeout=3,
               message="the backend to see the hung connection closed")
    assert_still_serves(tg, backend)
    assert_sockets_settle(tg, base)


def test_first_byte_timeout_counts_from_the_end_of_the_request(backend, start_tracegate):
    """A slow upload is not cut by the first-byte timeout."""
    tg = start_tracegate(backend.url, first_byte_timeout="1s")
    with RawHTTP("127.0.0.1", tg.port) as c:
        c.request("POST", "/echo", [("Content-Length", "10")])
        for i in range(4):  # 1.6 s of upload, longer than the timeout
            c.send(b"ab")
            time.sleep(0.4)
        c.send(b"cd")
        r = c.read_response()
    assert r.status == 200, r
    assert r.json()["body_length"] == 10


def test_backend_silent_mid_stream_is_cut_after_idle_timeout(backend, start_tracegate):
    tg = start_tracegate(backend.url, idle_timeout="1s")
    with RawHTTP("127.0.0.1", tg.port, timeout=10) as c:
        c.request("GET", "/stall-mid-stream?stall_ms=30000")
        resp = c.read_head()
        assert resp.status == 200, resp
        t0 = time.monotonic()
        received = b""
        complete = False
        try:
            for part in c.iter_body(resp):
                received += part
            complete = True
        except Exception:  # the cut: EOF or reset in the middle of the body
            pass
        elapsed = time.monotonic() - t0
    assert b"first part" in received
    assert not complete, "the stalled stream was ended as if it were complete"
    assert b"second part" not in received
    assert 0.8 <= elapsed <= 4, f"stream cut after {elapsed:.2f}s with idle_timeout=1s"
    wait_until(lambda: backend.snapshot()["stall_closed"] == 1, timeout=3,
               message="the backend to see the stalled connection closed")
    assert_still_serves(tg, backend)


def test_idle_timeout_before_any_byte_gives_504(backend, start_tracegate):
    """With no response byte yet, the shorter of the two timeouts applies to /hang and the
    client gets an answer, not a hang."""
    tg = start_tracegate(backend.url, first_byte_timeout="1s", idle_timeout="30s")
    assert_json_error(raw_request(tg.port, "GET", "/hang", timeout=10), 504)


@pytest.mark.parametrize("path", ["/garbage", "/close-without-response"])
def test_backend_invalid_or_missing_response_gives_502(backend, proxy, path):
    t0 = time.monotonic()
    assert_json_error(raw_request(proxy.port, "GET", path, timeout=10), 502)
    assert time.monotonic() - t0 < 3
    assert_still_serves(proxy, backend)


def test_backend_reset_mid_body_cuts_the_client_response(backend, proxy):
    n = 2_000_000
    with RawHTTP("127.0.0.1", proxy.port, timeout=10) as c:
        c.request("GET", f"/reset-mid-body?n={n}")
        resp = c.read_head()
        assert resp.status == 200
        received = 0
        complete = False
        t0 = time.monotonic()
        try:
            for part in c.iter_body(resp):
                received += len(part)
            complete = True
        except socket.timeout:
            pytest.fail(f"client left hanging after {received} bytes of a reset upstream response")
        except Exception:
            pass
    assert not complete, "a response whose upstream was reset mid-body arrived as if complete"
    assert received < n
    assert time.monotonic() - t0 < 5
    assert_still_serves(proxy, backend)


# ---- client errors -----------------------------------------------------------------------


def test_oversized_request_head_gives_431(backend, start_tracegate):
    tg = start_tracegate(backend.url, max_header_bytes="8KiB")
    ok = raw_request(tg.port, "GET", "/echo", [("X-Big", "a" * 4000)])
    assert ok.status == 200, ok
    r = raw_request(tg.port, "GET", "/echo", [("X-Big", "a" * 16000)])
    assert_json_error(r, 431)
    many = [(f"X-H{i}", "v" * 50) for i in range(300)]
    assert_json_error(raw_request(tg.port, "GET", "/echo", many), 431)
    assert backend.snapshot()["requests"] == 1
    assert_still_serves(tg, backend)


def _send_body_in_background(c: RawHTTP, body: bytes) -> threading.Thread:
    def send():
        try:
            c.send(body)
        except OSError:
            pass  # the proxy may stop reading once it has answered 413

    t = threading.Thread(target=send, daemon=True)
    t.start()
    return t


def test_body_over_limit_with_content_length_gives_413(backend, start_tracegate):
    tg = start_tracegate(backend.url, max_body_bytes="1MiB")
    at_limit = raw_request(tg.port, "POST", "/echo", body=b"x" * (1024 * 1024))
    assert at_limit.status == 200 and at_limit.json()["body_length"] == 1024 * 1024
    with RawHTTP("127.0.0.1", tg.port) as c:
        c.request("POST", "/echo", [("Content-Length", str(1024 * 1024 + 1))])
        _send_body_in_background(c, b"x" * (1024 * 1024 + 1))
        assert_json_error(c.read_response(), 413)
    assert backend.snapshot()["requests"] == 1, "the oversized request reached the backend"
    assert_still_serves(tg, backend)


def test_body_over_limit_chunked_gives_413(backend, start_tracegate):
    tg = start_tracegate(backend.url, max_body_bytes="1MiB")
    chunk = b"y" * 65536
    with RawHTTP("127.0.0.1", tg.port) as c:
        c.request("POST", "/echo", [("Transfer-Encoding", "chunked")])
        _send_body_in_background(c, (b"%x\r\n%s\r\n" % (len(chunk), chunk)) * 20 + b"0\r\n\r\n")  # 1.25 MiB
        assert_json_error(c.read_response(), 413)
    assert_still_serves(tg, backend)


def test_chunked_body_within_limit_passes(backend, start_tracegate):
    tg = start_tracegate(backend.url, max_body_bytes="1MiB")
    chunk = b"z" * 65536
    with RawHTTP("127.0.0.1", tg.port) as c:
        c.request("POST", "/echo", [("Transfer-Encoding", "chunked")])
        c.send((b"%x\r\n%s\r\n" % (len(chunk), chunk)) * 16 + b"0\r\n\r\n")  # exactly 1 MiB
        r = c.read_response()
    assert r.status == 200, r
    assert r.json()["body_length"] == 1024 * 1024


@pytest.mark.parametrize("raw", [
    b"GARBAGE\r\n\r\n",
    b"GET /echo HTTP/1.1 extra\r\nHost: x\r\n\r\n",
    b"GET\r\nHost: x\r\n\r\n",
    b"GET /echo HTTP/1.1\r\nBad Header Name: x\r\nHost: x\r\n\r\n",
    b"GET /echo HTTP/1.1\r\nHost: x\r\nNo-Colon-Here\r\n\r\n",
], ids=["garbage", "extra-token", "no-target", "space-in-name", "no-colon"])
def test_malformed_request_gives_400(backend, proxy, raw):
    base = baseline_sockets(proxy)
    before = backend.snapshot()["requests"]
    with RawHTTP("127.0.0.1", proxy.port) as c:
        c.send(raw)
        r = c.read_response()
        assert_json_error(r, 400)
        assert c.is_closed_by_peer(timeout=3), "connection left open after a malformed request"
    assert backend.snapshot()["requests"] == before
    assert_still_serves(proxy, backend)
    assert_sockets_settle(proxy, base)


@pytest.mark.parametrize("headers", [
    [("Content-Length", "5"), ("Transfer-Encoding", "chunked")],
    [("Transfer-Encoding", "chunked"), ("Content-Length", "5")],
    [("Content-Length", "5"), ("Content-Length", "6")],
    [("Content-Length", "5, 6")],
    [("Transfer-Encoding", "chunked, identity")],
    [("Transfer-Encoding", "gzip")],
], ids=["cl-then-te", "te-then-cl", "two-cl", "cl-list", "te-not-last-chunked", "te-without-chunked"])
def test_request_smuggling_shapes_give_400(backend, proxy, headers):
    before = backend.snapshot()["requests"]
    with RawHTTP("127.0.0.1", proxy.port) as c:
        c.request("POST", "/echo", headers)
        c.send(b"5\r\nhello\r\n0\r\n\r\nGET /echo?smuggled=1 HTTP/1.1\r\nHost: x\r\n\r\n")
        r = c.read_response()
        assert_json_error(r, 400)
        assert c.is_closed_by_peer(timeout=3), "connection left open after an ambiguous request"
    time.sleep(0.2)  # give a smuggled request the chance to show up at the backend
    assert backend.snapshot()["requests"] == before, backend.snapshot()["peers"]
    assert_still_serves(proxy, backend)


def test_http11_request_without_host_gives_400(backend, proxy):
    """RFC 9112 §3.2: an HTTP/1.1 request without Host MUST get 400."""
    assert_json_error(send_raw(proxy.port, b"GET /echo HTTP/1.1\r\nX-A: 1\r\n\r\n"), 400)
    assert backend.snapshot()["requests"] == 0


def test_request_with_two_host_headers_gives_400(backend, proxy):
    """RFC 9112 §3.2: more than one Host field line MUST get 400."""
    assert_json_error(send_raw(proxy.port, b"GET /echo HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n"),
                      400)
    assert backend.snapshot()["requests"] == 0


def test_http10_request_with_transfer_encoding_is_not_kept_alive(backend, proxy):
    """RFC 9112 §6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing; the
    connection MUST be closed after it, so bytes after it are never taken as a request."""
    with RawHTTP("127.0.0.1", proxy.port) as c:
        c.send(b"POST /echo HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"5\r\nhello\r\n0\r\n\r\nGET /echo?smuggled=1 HTTP/1.1\r\nHost: x\r\n\r\n")
        first = c.read_response()
        assert first.status in (200, 400), first
        closed = c.is_closed_by_peer(timeout=2)
    seen = backend.snapshot()["requests"]
    assert closed, f"connection kept alive after an HTTP/1.0 request with Transfer-Encoding " \
                   f"(backend saw {seen} requests)"
    assert backend.snapshot()["requests"] <= 1


def test_connect_method_gets_a_complete_json_error(backend, proxy):
    """CONNECT (tunnelling) is out of scope: it gets a complete JSON error, never a tunnel."""
    with RawHTTP("127.0.0.1", proxy.port, timeout=3) as c:
        c.send(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
        head = c.read_head()
        assert 400 <= head.status < 600, head
        try:
            head.body = b"".join(c.iter_body(head))
        except Exception as e:
            pytest.fail(f"error response to CONNECT announced Content-Length {head.header('Content-Length')} "
                        f"but the body did not arrive ({e!r}): {head!r}")
    assert_json_error(head, head.status)
    assert backend.snapshot()["requests"] == 0


def test_an_upgrade_to_an_unknown_protocol_gives_501(backend, proxy):
    r = raw_request(proxy.port, "GET", "/ws", [("Connection", "Upgrade"), ("Upgrade", "foo/2")])
    assert_json_error(r, 501)
    assert backend.snapshot()["requests"] == 0
    assert_still_serves(proxy, backend)


def test_a_websocket_handshake_a_plain_http_backend_declines_gets_the_backends_answer(backend, proxy):
    r = raw_request(proxy.port, "GET", "/echo", [
        ("Connection", "Upgrade"), ("Upgrade", "websocket"), ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ])
    assert r.status == 200, r
    assert backend.snapshot()["requests"] == 1
    assert_still_serves(proxy, backend)


# ---- client going away -------------------------------------------------------------------


def test_client_disconnect_mid_stream_closes_the_backend_connection(backend, proxy):
    base = baseline_sockets(proxy)
    with RawHTTP("127.0.0.1", proxy.port) as c:
        c.request("GET", "/sse?events=400&interval_ms=20")
        resp = c.read_head()
        assert resp.status == 200
        body = c.iter_body(resp)
        next(body), next(body)  # two events arrived: the stream is flowing
    t0 = time.monotonic()
    wait_until(lambda: backend.snapshot()["aborted_streams"] == 1, timeout=3,
               message="the backend to see its stream aborted after the client went away")
    assert time.monotonic() - t0 < 3
    assert backend.snapshot()["completed_streams"] == 0
    assert_still_serves(proxy, backend)
    assert_sockets_settle(proxy, base)


def test_client_disconnect_during_large_download_closes_the_backend_connection(backend, proxy):
    with RawHTTP("127.0.0.1", proxy.port) as c:
        c.request("GET", f"/bytes?n={512 * 1024 * 1024}")
        resp = c.read_head()
        assert resp.status == 200
        next(c.iter_body(resp))
    wait_until(lambda: backend.snapshot()["aborted_streams"] == 1, timeout=3,
               message="the backend to see its download aborted")
    assert_still_serves(proxy, backend)


def test_client_disconnect_while_waiting_for_first_byte_closes_the_backend_connection(backend, proxy):
    with RawHTTP("127.0.0.1", proxy.port) as c:
        c.request("GET", "/hang")
        wait_until(lambda: backend.snapshot()["requests"] == 1, timeout=3)
    wait_until(lambda: backend.snapshot()["hang_closed"] == 1, timeout=3,
               message="the backend to see the waiting request's connection closed")
    assert_still_serves(proxy, backend)


def test_many_failures_leak_no_sockets(backend, start_tracegate):
    """Every failure path above, repeated: the proxy's sockets return to their baseline."""
    tg = start_tracegate(backend.url, first_byte_timeout="300ms", idle_timeout="300ms", max_header_bytes="4KiB",
                         max_body_bytes="64KiB")
    base = baseline_sockets(tg)

    def quietly(fn):
        try:
            fn()
        except (OSError, Eof):
            pass  # some of these end in a reset: that is the point

    for _ in range(5):
        send_raw(tg.port, b"GARBAGE\r\n\r\n")
        raw_request(tg.port, "GET", "/echo", [("X-Big", "a" * 8000)])
        raw_request(tg.port, "GET", "/hang")
        raw_request(tg.port, "GET", "/garbage")
        raw_request(tg.port, "GET", "/close-without-response")
        quietly(lambda: raw_request(tg.port, "GET", "/stall-mid-stream"))
        quietly(lambda: raw_request(tg.port, "GET", "/reset-mid-body?n=200000"))
        quietly(lambda: raw_request(tg.port, "POST", "/echo", body=b"x" * 100_000))
        raw_request(tg.port, "POST", "/echo", [("Content-Length", "3"), ("Transfer-Encoding", "chunked")], b"abc")
        raw_request(tg.port, "GET", "/ws", [("Connection", "Upgrade"), ("Upgrade", "websocket")])
        with RawHTTP("127.0.0.1", tg.port) as c:  # client gone mid-stream
            c.request("GET", "/sse?events=100&interval_ms=10")
            c.read_head()
        with RawHTTP("127.0.0.1", tg.port) as c:  # client gone while its request waits
            c.request("GET", "/echo?delay_ms=200")
    assert_sockets_settle(tg, base)
    assert_still_serves(tg, backend)
    wait_until(lambda: backend.snapshot()["connections_open"] <= 2, timeout=5,
               message="the backend's open connections to drop back (upstream connections leak)")
