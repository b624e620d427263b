"""Connections are kept alive on both sides, and reused only while they are usable."""

from __future__ import annotations

import time

import requests

from helpers import RawHTTP, wait_until


def test_sequential_requests_on_one_client_connection_reuse_one_backend_connection(backend, proxy):
    with RawHTTP("127.0.0.1", proxy.port) as c:
        for i in range(10):
            c.request("GET", f"/echo?i={i}")
            r = c.read_response()
            assert r.status == 200, r
            assert r.json()["query"] == f"i={i}"
    peers = backend.snapshot()["peers"]
    assert len(peers) == 10
    ports = {port for _, port in peers}
    assert len(ports) <= 2, f"10 sequential requests used {len(ports)} backend connections: {peers}"


def test_sequential_clients_share_pooled_backend_connections(backend, start_tracegate):
    tg = start_tracegate(backend.url, threads="1")
    for i in range(5):
        with RawHTTP("127.0.0.1", tg.port) as c:  # a new client connection each time
            c.request("GET", f"/echo?client={i}")
            assert c.read_response().status == 200
    stats = backend.snapshot()
    assert stats["requests"] == 5
    assert stats["connections_accepted"] <= 2, f"5 sequential clients opened {stats['connections_accepted']} " \
                                               f"backend connections: {stats['peers']}"


def test_requests_session_keeps_its_connection(proxy):
    s = requests.Session()
    client_ports = set()
    for i in range(5):
        r = s.get(f"{proxy.url}/echo?i={i}", timeout=5, stream=True)
        client_ports.add(r.raw.connection.sock.getsockname()[1])
        assert r.json()["query"] == f"i={i}"
        r.close()
    assert len(client_ports) == 1, "the proxy closed a keep-alive client connection between requests"


def test_backend_connection_close_is_not_reused(backend, proxy):
    with RawHTTP("127.0.0.1", proxy.port) as c:
        c.request("GET", "/echo?close=1")
        first = c.read_response()
        assert first.status == 200
        c.request("GET", "/echo?second")
        second = c.read_response()
        assert second.status == 200, second
    assert first.json()["connection_id"] != second.json()["connection_id"]


def test_backend_that_closes_an_idle_connection_does_not_fail_the_next_request(backend, proxy):
    """The backend closes after answering (no `Connection: close`, as when its keep-alive timeout
    passes); the next request must not be sent down the dead connection and fail."""
    for i in range(3):
        r = requests.get(f"{proxy.url}/close-after-response", timeout=5)
        assert r.status_code == 200 and r.text == "closing now\n"
        wait_until(lambda: backend.snapshot()["server_closed"] == i + 1, timeout=2)
        r = requests.get(f"{proxy.url}/echo?after-close={i}", timeout=5)
        assert r.status_code == 200, (r.status_code, r.text)


def test_idle_client_connection_is_closed_after_keepalive_timeout(backend, start_tracegate):
    tg = start_tracegate(backend.url, client_keepalive_timeout="1s")
    with RawHTTP("127.0.0.1", tg.port) as c:
        c.request("GET", "/echo")
        assert c.read_response().status == 200
        t0 = time.monotonic()
        assert c.is_closed_by_peer(timeout=4), "idle client connection still open 4s after a 1s keep-alive timeout"
        elapsed = time.monotonic() - t0
    assert 0.7 <= elapsed <= 3, f"closed after {elapsed:.2f}s, keep-alive timeout is 1s"


def test_client_connection_close_is_honoured(proxy):
    with RawHTTP("127.0.0.1", proxy.port) as c:
        c.request("GET", "/echo", [("Connection", "close")])
        r = c.read_response()
        assert r.status == 200
        assert c.is_closed_by_peer(timeout=3), "proxy kept the connection open after `Connection: close`"
