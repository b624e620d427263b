"""WebSocket through tracegate: the `websockets` client, through the proxy, against a WebSocket chat
backend of ours (`ws_backend.py`). The handshake is forwarded with its upgrade fields and a request
id, the 101 comes back, then messages flow both ways unchanged: text, binary, large, fragmented and
compressed (permessage-deflate, negotiated end to end), pings, close codes, half-closes. Tunnels idle
out, are capped, end with SIGTERM's grace, and a client that never reads holds bounded memory."""

from __future__ import annotations

import base64
import os
import signal
import socket
import threading
import time

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from websockets.exceptions import ConnectionClosed, InvalidStatus

from helpers import wait_until
from ws_backend import SWITCHING_PROTOCOLS, check_half_close_passes_through, raw_tunnel, read_head, ws_connect


def ws_open(port: int, path: str):
    """A connection held open across statements (closed by the test)."""
    return ws_connect(port, path, legacy=True)


def metric(tg, name: str, **labels: str) -> float:
    text = requests.get(f"{tg.admin_url}/metrics", timeout=5).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return 0.0


def test_messages_of_every_kind_pass_unchanged_and_the_handshake_is_forwarded(ws_backend, start_tracegate):
    tg = start_tracegate(ws_backend.url)
    with ws_connect(tg.port, "/echo", additional_headers={"X-User-ID": "alice", "X-Session-ID": "chat-1"}) as ws:
        assert ws.response.status_code == 101
        assert "permessage-deflate" in ws.response.headers.get("Sec-WebSocket-Extensions", ""), \
            "compression is negotiated end to end"
        ws.send("hello")
        assert ws.recv(timeout=5) == "hello"
        binary = bytes(range(256)) * 64
        ws.send(binary)
        assert ws.recv(timeout=5) == binary
        large = os.urandom(3 << 20)  # incompressible, several TCP windows
        ws.send(large)
        assert ws.recv(timeout=10) == large
        ws.send(["frag", "mented ", "message"])  # one message in three frames
        assert ws.recv(timeout=5) == "fragmented message"
    handshake = ws_backend.handshakes[0]
    assert handshake["upgrade"].lower() == "websocket"
    assert "upgrade" in handshake["connection"].lower()
    assert handshake["x-user-id"] == "alice" and handshake["x-session-id"] == "chat-1"
    assert handshake.get("x-request-id"), handshake
    assert handshake.get("x-forwarded-for") == "127.0.0.1", handshake


def test_streamed_replies_and_messages_the_server_sends_unasked_arrive_in_order(ws_backend, start_tracegate):
    tg = start_tracegate(ws_backend.url)
    with ws_connect(tg.port, "/stream") as ws:
        for turn in ("first", "second"):
            ws.send(turn)
            assert [ws.recv(timeout=5) for _ in range(4)] == [f"part {n} of {turn}" for n in range(3)] + ["[done]"]
    with ws_connect(tg.port, "/push?n=5&ms=50") as ws:
        assert [ws.recv(timeout=5) for _ in range(5)] == [f"push {n}" for n in range(5)]


def test_pings_and_close_codes_pass_through_both_ways(ws_backend, start_tracegate):
    tg = start_tracegate(ws_backend.url)
    with ws_connect(tg.port, "/echo") as ws:
        assert ws.ping().wait(5), "no pong"
    with ws_connect(tg.port, "/close?code=4001") as ws:
        ws.send("bye?")
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=5)
        assert closed.value.rcvd.code == 4001 and closed.value.rcvd.reason == "bye"
    ws = ws_open(tg.port, "/echo")
    ws.close(4002, "client bye")
    wait_until(lambda: 4002 in ws_backend.client_close_codes, 5, message="the client's close code at the backend")


def test_abrupt_closes_on_either_side_end_the_tunnel_and_the_proxy_serves_on(ws_backend, start_tracegate):
    tg = start_tracegate(ws_backend.url)
    with ws_connect(tg.port, "/drop") as ws:
        ws.send("go")
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=5)
        assert closed.value.rcvd is None, "no close frame: the backend dropped the connection"
    ws = ws_open(tg.port, "/echo")
    ws.socket.shutdown(socket.SHUT_RDWR)  # the client vanishes without a close frame
    ws.socket.close()
    wait_until(lambda: len(ws_backend.client_close_codes) >= 2, 5, message="the backend to see the client gone")
    wait_until(lambda: metric(tg, "tracegate_websocket_tunnels_open") == 0, 5, message="no tunnel left open")
    with ws_connect(tg.port, "/echo") as ws:
        ws.send("still here")
        assert ws.recv(timeout=5) == "still here"


def test_a_half_close_passes_through_and_the_other_direction_goes_on(start_tracegate):
    check_half_close_passes_through(start_tracegate)


def test_an_idle_tunnel_is_closed_after_websocket_idle_timeout(ws_backend, start_tracegate):
    tg = start_tracegate(ws_backend.url, websocket_idle_timeout="1s")
    with ws_connect(tg.port, "/echo") as ws:
        for _ in range(3):  # traffic keeps it open past the timeout
            ws.send("tick")
            assert ws.recv(timeout=5) == "tick"
            time.sleep(0.6)
        time.sleep(1.5)
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=5)
    assert metric(tg, "tracegate_websocket_tunnels_closed_total", end="idle") == 1


def test_a_tunnel_whose_upstream_takes_nothing_is_closed_after_send_timeout(start_tracegate):
    """An upstream that answers the handshake, keeps sending, and never reads what the client sends:
    once the bytes for it back up, the tunnel is closed after send_timeout (its sending does not
    count as activity for the stall), as a client that takes nothing would be."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def upstream():
        conn, _ = listener.accept()
        with conn:
            read_head(conn)
            conn.sendall(SWITCHING_PROTOCOLS)
            try:
                while not stop.wait(0.2):
                    conn.sendall(b"\x81\x02hi")  # alive and talking, never reading
            except OSError:
                pass

    thread = threading.Thread(target=upstream, daemon=True)
    thread.start()
    tg = start_tracegate(f"http://127.0.0.1:{listener.getsockname()[1]}", send_timeout="1s")
    client, _ = raw_tunnel(tg.port, timeout=10)
    client.setblocking(False)
    frame = b"\x82\xfe\xff\xff\x01\x02\x03\x04" + b"x" * 65535
    started, closed_at = time.monotonic(), None
    while closed_at is None and time.monotonic() - started < 15:
        try:
            client.send(frame)
        except BlockingIOError:
            pass
        except OSError:
            closed_at = time.monotonic()
            break
        try:
            while True:
                if client.recv(65536) == b"":
                    closed_at = time.monotonic()
                    break
        except BlockingIOError:
            pass
        except OSError:
            closed_at = time.monotonic()
        time.sleep(0.05)
    stop.set()
    client.close()
    listener.close()
    assert closed_at is not None, "the tunnel stayed open with its upstream taking nothing"
    assert closed_at - started < 10
    wait_until(lambda: metric(tg, "tracegate_websocket_tunnels_closed_total", end="send_timeout") == 1, timeout=5)
    assert metric(tg, "tracegate_websocket_tunnels_closed_total", end="idle") == 0


def test_upgrades_beyond_max_websocket_connections_get_503_until_one_closes(ws_backend, start_tracegate):
    tg = start_tracegate(ws_backend.url, max_websocket_connections="2")
    first, second = ws_open(tg.port, "/echo"), ws_open(tg.port, "/echo")
    assert metric(tg, "tracegate_websocket_tunnels_open") == 2
    assert metric(tg, "tracegate_requests_in_flight") == 0, "a tunnel counts as a tunnel, not a request in flight"
    with pytest.raises(InvalidStatus) as refused:
        ws_open(tg.port, "/echo")
    assert refused.value.response.status_code == 503
    first.close()

    def third_gets_in():
        try:
            ws_open(tg.port, "/echo").close()
            return True
        except InvalidStatus:
            return False
    wait_until(third_gets_in, 5, message="a slot freed by the closed tunnel")
    second.close()


def test_sigterm_gives_tunnels_the_grace_then_closes_them(ws_backend, start_tracegate):
    tg = start_tracegate(ws_backend.url, grace="1s")
    with ws_connect(tg.port, "/echo") as ws:
        tg.signal(signal.SIGTERM)
        ws.send("during the grace")
        assert ws.recv(timeout=2) == "during the grace"
        started = time.monotonic()
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=5)
        assert time.monotonic() - started < 3
    assert tg.wait_exit(5) == 0


def test_a_client_that_never_reads_holds_bounded_memory(ws_backend, start_tracegate):
    """The backend sends 64 MiB to a client that reads nothing: reads of the backend stop when the
    client's socket is full, so tracegate's memory stays flat; other tunnels are served meanwhile."""
    tg = start_tracegate(ws_backend.url)
    before = tg.rss_kib()
    sock = socket.create_connection(("127.0.0.1", tg.port), timeout=5)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET /flood?bytes={64 << 20} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                  f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n\r\n").encode())
    time.sleep(2)
    with ws_connect(tg.port, "/echo") as ws:
        ws.send("meanwhile")
        assert ws.recv(timeout=5) == "meanwhile"
    grown = tg.rss_kib() - before
    assert grown < 16 << 10, f"RSS grew {grown} KiB while the client read nothing"
    sock.close()


def test_frames_and_bytes_each_way_are_counted_when_a_tunnel_closes(ws_backend, start_tracegate):
    tg = start_tracegate(ws_backend.url)
    with ws_connect(tg.port, "/stream", compression=None) as ws:
        ws.send("one")  # 1 frame up; 4 down
        for _ in range(4):
            ws.recv(timeout=5)
        ws.send(["frag", "ments"])  # 3 frames up (websockets ends an iterable with an empty final frame); 4 down
        for _ in range(4):
            ws.recv(timeout=5)
        ws.ping(b"p")  # 1 up; its pong 1 down
        time.sleep(0.2)
    # The close handshake adds one close frame each way.
    wait_until(lambda: metric(tg, "tracegate_websocket_tunnels_open") == 0, 5, message="the tunnel to close")
    assert metric(tg, "tracegate_websocket_frames_total", direction="client_to_upstream") == 1 + 3 + 1 + 1
    assert metric(tg, "tracegate_websocket_frames_total", direction="upstream_to_client") == 4 + 4 + 1 + 1
    assert metric(tg, "tracegate_websocket_bytes_total", direction="client_to_upstream") > 0
