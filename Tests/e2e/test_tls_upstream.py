"""https upstreams: certificate verification on by default, a custom CA bundle, and opting out;
WebSocket tunnels to them, half-close included."""

import os
import socket
import ssl
import subprocess
import threading

import pytest

from backend import Backend
from helpers import raw_request
from ws_backend import WebSocketBackend, ws_connect


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    """A self-signed certificate for `localhost`, acting as its own CA."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True)
    return cert, key


@pytest.fixture()
def tls_backend(certificate):
    cert, key = certificate
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    backend = Backend("tls", tls=context).start()
    yield backend
    backend.stop()


def test_https_upstream_with_custom_ca_bundle_is_forwarded(tls_backend, certificate, start_tracegate):
    tg = start_tracegate(f"https://localhost:{tls_backend.port}", upstream_ca_file=str(certificate[0]))
    r = raw_request(tg.port, "GET", "/status/200?body=over-tls")
    assert r.status == 200, r
    assert r.body == b"over-tls"
    assert tls_backend.snapshot()["requests"] == 1


def test_untrusted_upstream_certificate_is_refused_with_502(tls_backend, start_tracegate):
    tg = start_tracegate(f"https://localhost:{tls_backend.port}")
    r = raw_request(tg.port, "GET", "/status/200")
    assert r.status == 502, r
    assert b"TLS" in r.body or b"certificate" in r.body.lower(), r.body
    assert tls_backend.snapshot()["requests"] == 0


def test_verification_can_be_turned_off(tls_backend, start_tracegate):
    tg = start_tracegate(f"https://localhost:{tls_backend.port}", upstream_tls_verify="false")
    r = raw_request(tg.port, "GET", "/status/200?body=unverified")
    assert r.status == 200, r
    assert r.body == b"unverified"


def test_websocket_tunnels_to_an_https_upstream(certificate, start_tracegate):
    cert, key = certificate
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    backend = WebSocketBackend(tls=context).start()
    try:
        tg = start_tracegate(backend.url, upstream_ca_file=str(cert))
        with ws_connect(tg.port, "/stream") as ws:
            ws.send("over tls")
            replies = [ws.recv(timeout=5) for _ in range(4)]
            ws.send(b"\x00binary\xff")
            more = [ws.recv(timeout=5) for _ in range(4)]
        assert replies == [f"part {n} of over tls" for n in range(3)] + ["[done]"], replies
        assert more[-1] == "[done]", more
        assert backend.handshakes and backend.handshakes[0].get("upgrade", "").lower() == "websocket"
    finally:
        backend.stop()


def test_a_half_close_passes_through_to_an_https_upstream(certificate, start_tracegate):
    """The client half-closes; over TLS the upstream sees the end of the stream (close_notify or
    end-of-file), replies, and the reply still reaches the client."""
    cert, key = certificate
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))
    seen: dict[str, bytes] = {}

    def upstream():
        raw, _ = listener.accept()
        with context.wrap_socket(raw, server_side=True) as conn:
            head = b""
            while b"\r\n\r\n" not in head:
                head += conn.recv(4096)
            conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                         b"Sec-WebSocket-Accept: x\r\n\r\n")
            received = head.split(b"\r\n\r\n", 1)[1]
            while chunk := conn.recv(4096):  # until the client's half-close arrives
                received += chunk
            seen["upstream"] = received
            conn.sendall(b"reply after EOF:" + received)

    thread = threading.Thread(target=upstream, daemon=True)
    thread.start()
    tg = start_tracegate(f"https://localhost:{listener.getsockname()[1]}", upstream_ca_file=str(cert))
    sock = socket.create_connection(("127.0.0.1", tg.port), timeout=5)
    sock.sendall(b"GET /raw HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                 b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(4096)
    assert head.startswith(b"HTTP/1.1 101"), head
    sent = b"\x81\x84" + os.urandom(8)
    sock.sendall(sent)
    sock.shutdown(socket.SHUT_WR)
    answer = head.split(b"\r\n\r\n", 1)[1]
    while chunk := sock.recv(4096):
        answer += chunk
    sock.close()
    thread.join(5)
    listener.close()
    assert seen.get("upstream") == sent, "the upstream got the bytes, then the end of the stream"
    assert answer == b"reply after EOF:" + sent
