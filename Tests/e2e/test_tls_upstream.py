"""https upstreams: certificate verification on by default, a custom CA bundle, and opting out."""

import ssl
import subprocess

import pytest

from backend import Backend
from helpers import raw_request


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
