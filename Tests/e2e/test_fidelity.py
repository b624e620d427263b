"""Requests and responses cross the proxy unchanged: methods, targets, headers, bodies, statuses."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess

import pytest
import requests

from backend import data_chunks, data_sha256
from helpers import RawHTTP, raw_request

METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "PROPFIND", "MKCOL", "PURGE"]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def forwarded_headers(echo: dict, name: str) -> list[str]:
    return [v for k, v in echo["headers"] if k.lower() == name.lower()]


@pytest.mark.parametrize("method", METHODS)
def test_method_reaches_backend_unchanged(shared_proxy, method):
    body = f"body for {method}".encode()
    r = requests.request(method, f"{shared_proxy.url}/echo", data=body, timeout=10)
    assert r.status_code == 200, r.text
    echo = r.json()
    assert echo["method"] == method
    assert echo["body_length"] == len(body)
    assert echo["body_sha256"] == sha(body)


def test_head_returns_headers_without_body_and_connection_stays_usable(shared_proxy):
    with RawHTTP("127.0.0.1", shared_proxy.port) as c:
        c.request("HEAD", "/bytes?n=12345")
        head = c.read_response("HEAD")
        assert head.status == 200
        assert head.header("Content-Length") == "12345"
        assert head.body == b""
        # If the proxy had sent a body after the HEAD response, it would corrupt the next response.
        c.request("GET", "/echo?after=head")
        after = c.read_response()
        assert after.status == 200, after
        assert after.json()["query"] == "after=head"


@pytest.mark.parametrize("target", [
    "/echo",
    "/echo/",
    "/echo/a%20b/%2F/%25/~user;matrix=1/..%2f",
    "/echo/unicode/%E2%9C%93?q=%E2%9C%93",
    "/echo?q=a%20b&plus=a+b&x=%2F%3F%26%3D&empty=&dup=1&dup=2&flag",
    "/echo?" + "long=" + "x" * 4000,
    "/echo/%7Bbraces%7D?json=%7B%22a%22%3A1%7D",
    "/echo//double//slashes?",
])
def test_path_and_query_reach_backend_byte_for_byte(shared_proxy, target):
    r = raw_request(shared_proxy.port, "GET", target)
    assert r.status == 200, r
    assert r.json()["target"] == target


def test_request_headers_keep_case_order_and_repeated_values(shared_proxy):
    sent = [
        ("X-Mixed-CaSe", "Value With  Spaces"),
        ("x-lower", "lower"),
        ("X-Repeated", "first"),
        ("X-Other", "between"),
        ("X-Repeated", "second"),
        ("X-Repeated", "third, with comma"),
        ("Accept", "text/html"),
        ("Accept", "application/json;q=0.9"),
        ("Cookie", "a=1"),
        ("Cookie", "b=2"),
        ("X-Empty", ""),
        ("Authorization", "Bearer secret-token"),
    ]
    r = raw_request(shared_proxy.port, "GET", "/echo", sent)
    assert r.status == 200, r
    echo = r.json()
    received = [(k, v) for k, v in echo["headers"]]
    # Every header we sent arrives with its name spelled the same, and in the same relative order.
    ours = [(k, v) for k, v in received if k.lower() in {n.lower() for n, _ in sent}]
    assert ours == sent, f"sent {sent}\nbackend saw {received}"


def test_response_headers_keep_case_order_and_repeated_values(shared_proxy):
    wanted = [("X-Resp-CaSe", "Mixed"), ("Set-Cookie", "a=1; Path=/"), ("X-Resp-Repeated", "one"),
              ("Set-Cookie", "b=2; HttpOnly"), ("X-Resp-Repeated", "two"), ("Cache-Control", "no-store"),
              ("Cache-Control", "private")]
    query = "&".join(f"h={k}:{v}".replace(" ", "%20").replace(";", "%3B") for k, v in wanted)
    r = raw_request(shared_proxy.port, "GET", f"/status/200?{query}&body=ok")
    assert r.status == 200, r
    assert r.body == b"ok"
    got = [(k, v) for k, v in r.headers if k.lower() in {n.lower() for n, _ in wanted}]
    assert got == wanted, f"client saw {r.headers}"


@pytest.mark.parametrize("code", [200, 201, 202, 204, 301, 302, 304, 400, 401, 403, 404, 409, 418, 422,
                                  429, 500, 502, 503, 504])
def test_status_code_and_body_come_back_unchanged(shared_proxy, code):
    with RawHTTP("127.0.0.1", shared_proxy.port) as c:
        c.request("GET", f"/status/{code}?body=status-{code}&h=Location:/elsewhere&h=X-Code:{code}")
        r = c.read_response()
        assert r.status == code, r
        assert r.header("X-Code") == str(code)
        assert r.header("Location") == "/elsewhere"
        assert r.body == (b"" if code in (204, 304) else f"status-{code}".encode())
        # The framing was right: the connection carries another exchange.
        c.request("GET", "/echo?after=" + str(code))
        after = c.read_response()
        assert after.status == 200 and after.json()["query"] == f"after={code}", after


def test_binary_body_with_every_byte_value_round_trips(shared_proxy):
    body = bytes(range(256)) * 64 + b"\r\n\r\n0\r\n\r\n" + b"\x00" * 100
    r = requests.post(f"{shared_proxy.url}/raw", data=body, headers={"Content-Type": "application/x-weird"},
                      timeout=10)
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "application/x-weird"
    assert r.content == body


def test_empty_body_post_arrives_as_empty(shared_proxy):
    r = raw_request(shared_proxy.port, "POST", "/echo", [("Content-Length", "0")])
    assert r.status == 200, r
    echo = r.json()
    assert echo["body_length"] == 0
    assert echo["method"] == "POST"


def test_random_5mb_upload_with_content_length_arrives_intact(shared_proxy):
    body = os.urandom(5 * 1024 * 1024 + 7)
    r = requests.put(f"{shared_proxy.url}/echo", data=body, timeout=30)
    assert r.status_code == 200
    echo = r.json()
    assert echo["body_length"] == len(body)
    assert echo["body_sha256"] == sha(body)
    assert forwarded_headers(echo, "Content-Length") == [str(len(body))]


def test_random_5mb_chunked_upload_arrives_intact(shared_proxy):
    body = os.urandom(5 * 1024 * 1024 + 13)
    pieces = [body[i:i + 100_003] for i in range(0, len(body), 100_003)]
    r = requests.post(f"{shared_proxy.url}/echo", data=iter(pieces), timeout=30)  # generator -> chunked
    assert r.status_code == 200
    echo = r.json()
    assert echo["body_length"] == len(body)
    assert echo["body_sha256"] == sha(body)


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_random_5mb_download_arrives_intact(shared_proxy, chunked):
    n = 5 * 1024 * 1024 + 3
    r = requests.get(f"{shared_proxy.url}/bytes?n={n}&seed=7&chunked={int(chunked)}", timeout=30)
    assert r.status_code == 200
    assert len(r.content) == n
    assert sha(r.content) == data_sha256(n, seed=7)


def test_random_5mb_body_round_trips_both_ways(shared_proxy):
    body = os.urandom(5 * 1024 * 1024)
    r = requests.post(f"{shared_proxy.url}/raw", data=body, headers={"Content-Type": "application/octet-stream"},
                      timeout=30)
    assert r.status_code == 200
    assert len(r.content) == len(body)
    assert sha(r.content) == sha(body)


def test_chunked_upload_reaches_backend_with_one_framing(shared_proxy):
    """Whatever framing the proxy uses upstream, it is exactly one of them, never both."""
    with RawHTTP("127.0.0.1", shared_proxy.port) as c:
        c.request("POST", "/echo", [("Transfer-Encoding", "chunked")])
        c.send(b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
        r = c.read_response()
    assert r.status == 200, r
    echo = r.json()
    assert echo["body_length"] == 11 and echo["body_sha256"] == sha(b"hello world")
    cl = forwarded_headers(echo, "Content-Length")
    te = forwarded_headers(echo, "Transfer-Encoding")
    assert bool(cl) != bool(te), f"upstream framing headers: Content-Length={cl} Transfer-Encoding={te}"
    if te:
        assert [v.lower() for v in te] == ["chunked"]


# ---- the same through curl ---------------------------------------------------------------


def curl(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(["curl", "-sS", "--http1.1", *args], capture_output=True, timeout=timeout)


def test_curl_custom_method_path_and_headers(shared_proxy):
    p = curl("-X", "PROPFIND", "--path-as-is", "-H", "Depth: 1", "-H", "X-CuRl-Case: yes",
             f"{shared_proxy.url}/echo/dav/%7Euser/../x?a=%20b")
    assert p.returncode == 0, p.stderr
    echo = json.loads(p.stdout)
    assert echo["method"] == "PROPFIND"
    assert echo["target"] == "/echo/dav/%7Euser/../x?a=%20b"
    assert ["Depth", "1"] in echo["headers"]
    assert ["X-CuRl-Case", "yes"] in echo["headers"]


def test_curl_upload_and_download_of_5mb_file(shared_proxy, tmp_path):
    src = tmp_path / "upload.bin"
    src.write_bytes(os.urandom(5 * 1024 * 1024 + 1))
    out = tmp_path / "download.bin"
    p = curl("--data-binary", f"@{src}", "-H", "Content-Type: application/octet-stream", "-o", str(out),
             "-w", "%{http_code}", f"{shared_proxy.url}/raw")
    assert p.returncode == 0, p.stderr
    assert p.stdout == b"200"
    assert sha(out.read_bytes()) == sha(src.read_bytes())


def test_curl_chunked_upload(shared_proxy, tmp_path):
    src = tmp_path / "upload.bin"
    src.write_bytes(os.urandom(2 * 1024 * 1024 + 5))
    p = curl("-T", str(src), "-H", "Transfer-Encoding: chunked", "-X", "POST", f"{shared_proxy.url}/echo")
    assert p.returncode == 0, p.stderr
    echo = json.loads(p.stdout)
    assert echo["body_length"] == src.stat().st_size
    assert echo["body_sha256"] == sha(src.read_bytes())


def test_curl_head_and_status(shared_proxy):
    p = curl("-I", f"{shared_proxy.url}/status/404?h=X-Thing:1")
    assert p.returncode == 0, p.stderr
    head = p.stdout.decode()
    assert head.startswith("HTTP/1.1 404"), head
    assert "X-Thing: 1" in head


# ---- HTTP/1.1 details --------------------------------------------------------------------


def test_pipelined_requests_are_answered_in_order(shared_proxy):
    with RawHTTP("127.0.0.1", shared_proxy.port) as c:
        c.send(b"".join(b"GET /echo?n=%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(3)) +
               b"POST /echo?n=3 HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nbody")
        got = [c.read_response() for _ in range(4)]
    assert [r.status for r in got] == [200] * 4, got
    assert [r.json()["query"] for r in got] == ["n=0", "n=1", "n=2", "n=3"]
    assert got[3].json()["body_length"] == 4


def test_expect_100_continue_gets_an_interim_response_before_the_body_is_sent(shared_proxy):
    body = b"e" * 100_000
    with RawHTTP("127.0.0.1", shared_proxy.port, timeout=3) as c:
        c.request("POST", "/echo", [("Content-Length", str(len(body))), ("Expect", "100-continue")])
        first = c.read_head()  # a client that waits for `100 Continue` must get it (or a final answer)
        assert first.status == 100, first
        c.send(body)
        r = c.read_response()
    assert r.status == 200, r
    assert r.json()["body_length"] == len(body)


def test_interim_103_response_does_not_break_the_exchange(shared_proxy):
    with RawHTTP("127.0.0.1", shared_proxy.port, timeout=5) as c:
        c.request("GET", "/early-hints")
        r = c.read_response()  # skips any 1xx the proxy relays
        assert (r.status, r.body) == (200, b"final answer"), r
        c.request("GET", "/echo?after=103")
        after = c.read_response()
        assert after.status == 200 and after.json()["query"] == "after=103", after


def test_http_1_0_client_gets_a_complete_response_and_a_close(shared_proxy):
    with RawHTTP("127.0.0.1", shared_proxy.port) as c:
        c.send(b"GET /bytes?n=5000 HTTP/1.0\r\nHost: x\r\n\r\n")
        r = c.read_response()
        assert r.status == 200
        assert r.version in ("HTTP/1.0", "HTTP/1.1")
        assert "chunked" not in (r.header("Transfer-Encoding") or "").lower(), "chunked sent to an HTTP/1.0 client"
        assert r.body == b"".join(bytes(p) for p in data_chunks(5000))
        assert c.is_closed_by_peer(timeout=3)


def test_response_framed_by_connection_close_arrives_whole(shared_proxy):
    n = 3_000_000
    r = requests.get(f"{shared_proxy.url}/until-close?n={n}", timeout=10)
    assert r.status_code == 200
    assert len(r.content) == n
    assert sha(r.content) == data_sha256(n)


def test_large_response_headers_pass_through(shared_proxy):
    r = raw_request(shared_proxy.port, "GET", "/big-headers?size=20000&count=3")
    assert r.status == 200, r
    assert [len(r.header(f"X-Big-{i}") or "") for i in range(3)] == [20000] * 3


def test_concurrent_requests_each_get_their_own_answer(shared_proxy):
    """50 clients at once, each with its own body: no response is swapped or mixed up."""
    import concurrent.futures

    def one(i: int):
        body = os.urandom(1000 + i * 997)
        r = requests.post(f"{shared_proxy.url}/echo?client={i}&delay_ms={i % 5 * 20}", data=body,
                          headers={"X-Client": str(i)}, timeout=20)
        echo = r.json()
        return (r.status_code, echo["query"], echo["body_sha256"], ["X-Client", str(i)] in echo["headers"]) == \
            (200, f"client={i}&delay_ms={i % 5 * 20}", sha(body), True)

    with concurrent.futures.ThreadPoolExecutor(max_workers=50) as pool:
        results = list(pool.map(one, range(50)))
    assert all(results), f"{results.count(False)} of 50 concurrent requests got a wrong answer"
