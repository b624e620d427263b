"""https upstreams: certificate verification on by default, a custom CA bundle, and opting out;
WebSocket tunnels to them, half-close included."""

import ssl
import subprocess

import pytest

from backend import Backend
from helpers import raw_request
from ws_backend import WebSocketBackend, check_half_close_passes_through, ws_connect


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
def server_tls(certificate) -> ssl.SSLContext:
    """A server context with the `localhost` certificate, for the upstreams."""
    cert, key = certificate
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


@pytest.fixture()
def tls_backend(server_tls):
    backend = Backend("tls", tls=server_tls).start()
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


def test_websocket_tunnels_to_an_https_upstream(certificate, server_tls, start_tracegate):
    backend = WebSocketBackend(tls=server_tls).start()
    try:
        tg = start_tracegate(backend.url, upstream_ca_file=str(certificate[0]))
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


def test_a_half_close_passes_through_to_an_https_upstream(certificate, server_tls, start_tracegate):
    """Over TLS the upstream sees the client's half-close as the end of its stream (close_notify or
    end-of-file), replies, and the reply still reaches the client."""
    check_half_close_passes_through(start_tracegate, tls=server_tls, upstream_ca_file=str(certificate[0]))
