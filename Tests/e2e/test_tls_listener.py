"""HTTPS on the public listener (tls_cert_file + tls_key_file), and certificate reload on SIGHUP
without dropping open connections."""

from __future__ import annotations

import shutil
import signal
import socket
import ssl
import subprocess
import time

import requests

from harness import run_tracegate, wait_until


def make_certificate(folder, name: str):
    """A self-signed certificate for `localhost` whose subject's O is `name` (to tell certificates apart)."""
    cert, key = folder / f"{name}-cert.pem", folder / f"{name}-key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", f"/CN=localhost/O={name}", "-addext", "subjectAltName=DNS:localhost",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True)
    return cert, key


def served_organisation(port: int) -> str:
    """The O of the certificate a new TLS connection to `port` is given."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            der = tls.getpeercert(binary_form=True)
    text = subprocess.run(["openssl", "x509", "-inform", "DER", "-noout", "-subject"], input=der,
                          capture_output=True, check=True).stdout.decode()
    return text.split("O = ", 1)[1].split(",")[0].strip()


def read_response(sock) -> bytes:
    """One whole Content-Length response from `sock`."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        body += sock.recv(65536)
    return head


def test_https_listener_forwards_and_reports_https_upstream(backend, start_tracegate, tmp_path):
    cert, key = make_certificate(tmp_path, "first")
    tg = start_tracegate(backend.url, tls_cert_file=str(cert), tls_key_file=str(key))
    response = requests.get(f"https://localhost:{tg.port}/echo?x=1", verify=str(cert), timeout=5)
    assert response.status_code == 200
    echo = response.json()
    assert echo["query"] == "x=1"
    assert ["X-Forwarded-Proto", "https"] in echo["headers"]
    # Plain HTTP on the TLS port gets no HTTP answer, and the listener keeps serving.
    with socket.create_connection(("127.0.0.1", tg.port), timeout=5) as plain:
        plain.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
        assert not plain.recv(100).startswith(b"HTTP/1.1 200")
    assert requests.get(f"https://localhost:{tg.port}/echo", verify=str(cert), timeout=5).status_code == 200


def test_sighup_reloads_the_certificate_without_dropping_open_connections(backend, start_tracegate, tmp_path):
    first_cert, first_key = make_certificate(tmp_path, "first")
    second_cert, second_key = make_certificate(tmp_path, "second")
    cert, key = tmp_path / "live-cert.pem", tmp_path / "live-key.pem"
    shutil.copy(first_cert, cert)
    shutil.copy(first_key, key)
    tg = start_tracegate(backend.url, tls_cert_file=str(cert), tls_key_file=str(key))
    assert served_organisation(tg.port) == "first"

    context = ssl.create_default_context(cafile=str(first_cert))
    opened = context.wrap_socket(socket.create_connection(("127.0.0.1", tg.port), timeout=5), server_hostname="localhost")
    request = b"GET /echo HTTP/1.1\r\nHost: localhost\r\n\r\n"
    opened.sendall(request)
    assert read_response(opened).startswith(b"HTTP/1.1 200")

    shutil.copy(second_cert, cert)
    shutil.copy(second_key, key)
    tg.signal(signal.SIGHUP)
    wait_until(lambda: "reloaded the TLS certificate" in tg.stderr(), 5, message="reload logged")
    assert served_organisation(tg.port) == "second"
    # The connection opened before the reload keeps working, with the certificate it started with.
    opened.sendall(request)
    assert read_response(opened).startswith(b"HTTP/1.1 200")
    assert dict(x[0] for x in opened.getpeercert()["subject"])["organizationName"] == "first"
    opened.close()

    # A broken file on the next SIGHUP keeps the current certificate, and the process serving.
    key.write_text("not a key")
    tg.signal(signal.SIGHUP)
    wait_until(lambda: "cannot reload the TLS certificate" in tg.stderr(), 5, message="failed reload logged")
    assert tg.running()
    assert served_organisation(tg.port) == "second"


def test_sighup_without_tls_is_logged_and_harmless(proxy):
    proxy.signal(signal.SIGHUP)
    wait_until(lambda: "SIGHUP: nothing to reload" in proxy.stderr(), 5, message="SIGHUP logged")
    assert proxy.running()
    assert requests.get(f"{proxy.url}/echo", timeout=5).status_code == 200


def test_certificate_and_key_go_together(tmp_path):
    cert, _ = make_certificate(tmp_path, "only")
    p = run_tracegate(["check-config", "--upstream", "http://127.0.0.1:9", "--tls-cert-file", str(cert)])
    assert p.returncode != 0
    assert "tls_key_file" in p.stderr and "go together" in p.stderr, p.stderr


def test_unreadable_certificate_stops_start_up_naming_the_file(backend, tmp_path):
    missing = tmp_path / "missing.pem"
    p = run_tracegate(["--upstream", backend.url, "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
                       "--tls-cert-file", str(missing), "--tls-key-file", str(missing)], timeout=10)
    assert p.returncode == 2
    assert str(missing) in p.stderr, p.stderr
