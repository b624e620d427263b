"""RFC 9110 proxy header rules, forwarding headers, Host, the request id and the upstream base path."""

from __future__ import annotations

import pytest
import requests

from helpers import UUID_RE, RawHTTP, raw_request

def names(echo: dict) -> list[str]:
    return [k.lower() for k, _ in echo["headers"]]


def values(echo: dict, name: str) -> list[str]:
    return [v for k, v in echo["headers"] if k.lower() == name.lower()]


def split_list(vals: list[str]) -> list[str]:
    return [part.strip() for v in vals for part in v.split(",") if part.strip()]


# ---- hop-by-hop, request direction -------------------------------------------------------


def test_hop_by_hop_request_headers_are_not_forwarded(shared_proxy):
    r = raw_request(shared_proxy.port, "GET", "/echo", [
        ("Connection", "keep-alive, X-Foo, x-bar"),
        ("Keep-Alive", "timeout=5, max=100"),
        ("Proxy-Connection", "keep-alive"),
        ("TE", "trailers"),
        ("Proxy-Authorization", "Basic cHJveHk6c2VjcmV0"),
        ("X-Foo", "named in Connection"),
        ("X-Bar", "also named in Connection"),
        ("X-Kept", "end-to-end"),
    ])
    assert r.status == 200, r
    echo = r.json()
    seen = names(echo)
    leaked = [h for h in ["keep-alive", "proxy-connection", "te", "proxy-authorization", "x-foo", "x-bar"]
              if h in seen]
    assert not leaked, f"hop-by-hop headers forwarded upstream: {leaked}\nbackend saw {echo['headers']}"
    # A Connection header the proxy sends upstream is its own: none of the client's tokens.
    assert not {"x-foo", "x-bar"} & {t.lower() for t in split_list(values(echo, "Connection"))}
    assert values(echo, "X-Kept") == ["end-to-end"]


def test_upgrade_header_without_connection_upgrade_is_not_forwarded(shared_proxy):
    """`Upgrade` is hop-by-hop; sent without `Connection: upgrade` it is no upgrade request, just
    a header the proxy must drop."""
    r = raw_request(shared_proxy.port, "GET", "/echo", [("Upgrade", "h2c"), ("X-Kept", "1")])
    assert r.status == 200, r
    echo = r.json()
    assert "upgrade" not in names(echo), echo["headers"]
    assert values(echo, "X-Kept") == ["1"]


def test_client_transfer_encoding_header_is_not_copied_upstream_as_a_value(shared_proxy):
    """The proxy frames the upstream request itself: a Content-Length body arrives without any
    Transfer-Encoding, and a chunked body's Transfer-Encoding is not duplicated."""
    r = raw_request(shared_proxy.port, "POST", "/echo", [("Content-Length", "3")], b"abc")
    echo = r.json()
    assert values(echo, "Transfer-Encoding") == [], echo["headers"]
    assert values(echo, "Content-Length") == ["3"]

    with RawHTTP("127.0.0.1", shared_proxy.port) as c:
        c.request("POST", "/echo", [("Transfer-Encoding", "chunked")])
        c.send(b"3\r\nabc\r\n0\r\n\r\n")
        echo = c.read_response().json()
    assert len(values(echo, "Transfer-Encoding")) <= 1, echo["headers"]
    assert echo["body_length"] == 3


# ---- hop-by-hop, response direction ------------------------------------------------------


def test_hop_by_hop_response_headers_are_not_returned(shared_proxy):
    hdrs = ["Connection:X-Resp-Private", "X-Resp-Private:secret", "Keep-Alive:timeout=5",
            "Proxy-Connection:keep-alive", "Upgrade:h2c", "X-Resp-Kept:yes"]
    query = "&".join(f"h={h}" for h in hdrs)
    r = raw_request(shared_proxy.port, "GET", f"/status/200?{query}&body=hello")
    assert r.status == 200, r
    assert r.body == b"hello"
    seen = r.header_names_lower()
    leaked = [h for h in ["x-resp-private", "keep-alive", "proxy-connection", "upgrade"] if h in seen]
    assert not leaked, f"hop-by-hop response headers reached the client: {leaked}\n{r.headers}"
    assert "x-resp-private" not in {t.lower() for t in split_list(r.header_all("Connection"))}
    assert r.header("X-Resp-Kept") == "yes"


def test_response_framing_is_exactly_one_of_length_or_chunked(shared_proxy):
    with RawHTTP("127.0.0.1", shared_proxy.port) as c:
        c.request("GET", "/bytes?n=1000&chunked=1")
        r = c.read_response()
    assert r.status == 200 and len(r.body) == 1000
    cl, te = r.header_all("Content-Length"), r.header_all("Transfer-Encoding")
    assert bool(cl) != bool(te), r.headers
    assert len(te) <= 1 and len(cl) <= 1, r.headers


# ---- forwarding headers ------------------------------------------------------------------


def test_x_forwarded_headers_are_added_with_the_client_address(shared_proxy):
    # Connect from 127.0.0.2 so the address cannot be a constant.
    r = raw_request(shared_proxy.port, "GET", "/echo", [("Host", "public.example:8443")], source_ip="127.0.0.2")
    echo = r.json()
    assert values(echo, "X-Forwarded-For") == ["127.0.0.2"], echo["headers"]
    assert values(echo, "X-Forwarded-Proto") == ["http"], echo["headers"]
    assert values(echo, "X-Forwarded-Host") == ["public.example:8443"], echo["headers"]


def test_x_forwarded_for_is_appended_to_an_existing_one(shared_proxy):
    r = raw_request(shared_proxy.port, "GET", "/echo", [("X-Forwarded-For", "203.0.113.7, 198.51.100.2")],
                    source_ip="127.0.0.3")
    echo = r.json()
    assert split_list(values(echo, "X-Forwarded-For")) == ["203.0.113.7", "198.51.100.2", "127.0.0.3"], \
        echo["headers"]


def test_host_sent_upstream_is_the_upstreams_own(shared_proxy, shared_backend):
    r = raw_request(shared_proxy.port, "GET", "/echo", [("Host", "public.example")])
    echo = r.json()
    assert values(echo, "Host") == [f"127.0.0.1:{shared_backend.port}"], echo["headers"]


def test_preserve_host_sends_the_clients_host(backend, start_tracegate):
    tg = start_tracegate(backend.url, preserve_host="true")
    echo = raw_request(tg.port, "GET", "/echo", [("Host", "public.example:8443")]).json()
    assert values(echo, "Host") == ["public.example:8443"], echo["headers"]


@pytest.mark.parametrize("mode,want_xff,want_via", [
    ("x-forwarded", True, False),
    ("via", False, True),
    ("both", True, True),
    ("none", False, False),
])
def test_forwarded_headers_setting(backend, start_tracegate, mode, want_xff, want_via):
    tg = start_tracegate(backend.url, forwarded_headers=mode)
    echo = raw_request(tg.port, "GET", "/echo", [("Host", "h.example")]).json()
    got = set(names(echo))
    xf = {"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"}
    if want_xff:
        assert xf <= got, echo["headers"]
    else:
        assert not xf & got, echo["headers"]
    if want_via:
        assert values(echo, "Via") == ["1.1 tracegate"], echo["headers"]
    else:
        assert "via" not in got, echo["headers"]


# ---- request id --------------------------------------------------------------------------


def test_request_id_is_generated_sent_upstream_and_returned(shared_proxy):
    ids = set()
    for _ in range(3):
        r = raw_request(shared_proxy.port, "GET", "/echo")
        upstream = values(r.json(), "X-Request-ID")
        returned = r.header_all("X-Request-ID")
        assert len(upstream) == 1 and UUID_RE.match(upstream[0]), r.json()["headers"]
        assert returned == upstream, (returned, upstream)
        ids.add(upstream[0])
    assert len(ids) == 3, "request ids repeat"


def test_request_id_from_client_is_passed_through_unchanged(shared_proxy):
    rid = "client-chosen-id/42:abc=="
    r = raw_request(shared_proxy.port, "GET", "/echo", [("x-request-id", rid)])
    assert values(r.json(), "X-Request-ID") == [rid], r.json()["headers"]
    assert r.header_all("X-Request-ID") == [rid], r.headers


def test_request_id_is_returned_even_when_the_backend_sets_none(shared_proxy):
    r = raw_request(shared_proxy.port, "GET", "/status/404?body=nope", [("X-Request-ID", "rid-404")])
    assert r.status == 404
    assert r.header_all("X-Request-ID") == ["rid-404"], r.headers


def test_request_id_header_name_is_configurable(backend, start_tracegate):
    tg = start_tracegate(backend.url, request_id_header="X-Trace-Id")
    r = raw_request(tg.port, "GET", "/echo")
    upstream = values(r.json(), "X-Trace-Id")
    assert len(upstream) == 1 and UUID_RE.match(upstream[0]), r.json()["headers"]
    assert r.header("X-Trace-Id") == upstream[0]
    r = raw_request(tg.port, "GET", "/echo", [("X-Trace-Id", "mine")])
    assert values(r.json(), "X-Trace-Id") == ["mine"]
    assert r.header("X-Trace-Id") == "mine"


# ---- upstream base path ------------------------------------------------------------------


def test_upstream_base_path_is_prepended(backend, start_tracegate):
    tg = start_tracegate(f"{backend.url}/base/v2")
    r = raw_request(tg.port, "GET", "/echo/x?y=%20z")
    assert r.json()["target"] == "/base/v2/echo/x?y=%20z"
    r = raw_request(tg.port, "GET", "/?q=1")
    assert r.json()["target"] in ("/base/v2/?q=1", "/base/v2?q=1")


def test_requests_library_sees_a_normal_proxy(shared_proxy):
    """A smoke test through `requests`, the way an application would use the proxy."""
    s = requests.Session()
    r = s.get(f"{shared_proxy.url}/echo?from=requests", headers={"X-App": "1"}, timeout=5)
    assert r.status_code == 200
    assert r.json()["query"] == "from=requests"
    assert r.headers["X-Backend"] == "shared"
    assert UUID_RE.match(r.headers["X-Request-ID"])


# ---- Server-Timing -------------------------------------------------------------------------


def server_timing(response) -> dict[str, float]:
    """`Server-Timing` metrics by name, in milliseconds."""
    metrics = {}
    for item in response.headers.get("Server-Timing", "").split(","):
        name, _, params = item.strip().partition(";")
        if name:
            metrics[name] = float(params.removeprefix("dur="))
    return metrics


def test_server_timing_reports_upstream_and_own_time(proxy):
    client = requests.Session()  # one client connection: one event loop, one upstream pool
    first = client.get(f"{proxy.url}/echo?delay_ms=120", timeout=5)
    assert first.status_code == 200
    timing = server_timing(first)
    assert set(timing) == {"tracegate", "connect", "upstream"}, first.headers  # a new upstream connection
    assert 120 <= timing["upstream"] < 1000, timing
    assert 0 <= timing["tracegate"] < 50, timing
    again = client.get(f"{proxy.url}/echo", timeout=5)  # the pooled connection: no connect time
    assert set(server_timing(again)) == {"tracegate", "upstream"}, again.headers
    assert server_timing(again)["upstream"] < 120


def test_server_timing_can_be_turned_off(backend, start_tracegate):
    tg = start_tracegate(backend.url, server_timing="false")
    response = requests.get(f"{tg.url}/echo", timeout=5)
    assert response.status_code == 200
    assert "Server-Timing" not in response.headers
