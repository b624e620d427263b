"""Hostile input: malformed heads, control characters, odd bodies, huge and endless streams and
absurd ids. The request that can be served is served (bytes unchanged), the one that cannot is
refused with a JSON error, its trace still lands in MLflow readable, and the proxy keeps serving.

Not repeated here (see test_failures.py): request smuggling shapes, garbage request lines, spaces
in header names, headers without a colon, the 431/413 limits with ordinary headers and bodies.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re

import pytest

from backend import gzip_body, huge_event
from harness import assert_still_serves
from helpers import RawHTTP, assert_json_error, raw_request, wait_until
from mlflow_harness import get_trace_when, request_id, root_span, state, trace_id_of, upstream_span, wait_for_trace


def refused_and_closed(port: int, raw: bytes, status: int = 400) -> dict:
    """Send `raw` on a fresh connection: a JSON error with `status`, then the connection closes."""
    with RawHTTP("127.0.0.1", port, timeout=5) as c:
        c.send(raw)
        body = assert_json_error(c.read_response(), status)
        assert c.is_closed_by_peer(timeout=3), f"connection left open after {raw[:80]!r}"
    return body


def span_text(span, key: str) -> str:
    """A span attribute holding text (mlflow.spanInputs / mlflow.spanOutputs) as the text itself."""
    value = span.attributes.get(key)
    return value if isinstance(value, str) else json.dumps(value)


def finished_trace(mlflow_client, trace_id: str):
    return get_trace_when(mlflow_client, trace_id, lambda t: state(t) != "IN_PROGRESS")


# ---- malformed heads: raw sockets ----------------------------------------------------------------

HEAD = b"GET /echo HTTP/1.1\r\nHost: x\r\n"


@pytest.mark.parametrize("raw", [
    HEAD + b"X-A: a\x00b\r\n\r\n",
    HEAD + b"X-A: a\rb\r\n\r\n",
    HEAD + b"X-A: a\nb\r\n\r\n",
    HEAD + b"X-A: a\x01b\r\n\r\n",
    HEAD + b"X-A: a\x7fb\r\n\r\n",
    HEAD + b"X-A: a\r\n folded\r\n\r\n",
    HEAD + b"X-A : a\r\n\r\n",
    HEAD + b": no-name\r\n\r\n",
    HEAD + b"X-\x00A: a\r\n\r\n",
    b"GET /ec\x00ho HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /echo\rx HTTP/1.1\r\nHost: x\r\n\r\n",
    b"G\x00T /echo HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET  /echo HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /echo HTTP/1.1 \r\nHost: x\r\n\r\n",
    b"GET /echo HTTX/1.1\r\nHost: x\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(32)) + b"\r\n\r\n",
], ids=["nul-in-value", "bare-cr-in-value", "bare-lf-in-value", "ctl-in-value", "del-in-value", "obs-fold",
        "space-before-colon", "empty-name", "nul-in-name", "nul-in-target", "bare-cr-in-request-line",
        "nul-in-method", "double-space", "trailing-space", "bad-protocol", "tls-client-hello"])
def test_control_characters_and_malformed_heads_are_refused_with_400_and_never_forwarded(backend, proxy, raw):
    refused_and_closed(proxy.port, raw)
    assert backend.snapshot()["requests"] == 0, backend.snapshot()["peers"]
    assert_still_serves(proxy, backend)


def test_header_value_with_non_ascii_bytes_is_forwarded_unchanged(backend, proxy):
    """obs-text (0x80-0xFF) is allowed in field values: forwarded byte for byte, not refused."""
    value = "caf\u00e9 \u65e5\u672c \U0001f389 \"quoted\" 'single' \\back".encode()
    with RawHTTP("127.0.0.1", proxy.port) as c:
        c.send(HEAD + b"X-Odd: " + value + b"\r\n\r\n")
        r = c.read_response()
    assert r.status == 200, r
    seen = dict((k.lower(), v) for k, v in r.json()["headers"])
    # http.server decodes header bytes as latin-1: encode back to compare bytes.
    assert seen["x-odd"].encode("latin-1") == value
    assert_still_serves(proxy, backend)


def test_head_that_never_ends_is_refused_with_431_without_waiting(backend, start_tracegate):
    tg = start_tracegate(backend.url, max_header_bytes="8KiB")
    with RawHTTP("127.0.0.1", tg.port, timeout=5) as c:
        c.send(HEAD + b"X-Endless: " + b"a" * 20_000)  # no line end, no blank line
        assert_json_error(c.read_response(), 431)
    with RawHTTP("127.0.0.1", tg.port, timeout=5) as c:
        c.send(b"GET /" + b"p" * 20_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        assert_json_error(c.read_response(), 431)
    with RawHTTP("127.0.0.1", tg.port, timeout=5) as c:
        c.send(HEAD + b"".join(b"X-%d: v\r\n" % i for i in range(2000)) + b"\r\n")
        assert_json_error(c.read_response(), 431)
    assert backend.snapshot()["requests"] == 0
    assert_still_serves(tg, backend)


@pytest.mark.parametrize("framing,status", [
    (b"Content-Length: -1\r\n", 400),
    (b"Content-Length: abc\r\n", 400),
    (b"Content-Length: 1e3\r\n", 400),
    (b"Content-Length: 99999999999999999999999999\r\n", 400),
    (b"Content-Length: 99999999999\r\n", 413),
], ids=["negative", "not-a-number", "exponent", "overflowing", "over-limit"])
def test_invalid_or_absurd_content_length_is_refused(backend, start_tracegate, framing, status):
    tg = start_tracegate(backend.url, max_body_bytes="1MiB")
    refused_and_closed(tg.port, b"POST /echo HTTP/1.1\r\nHost: x\r\n" + framing + b"\r\nhello", status)
    assert backend.snapshot()["requests"] == 0
    assert_still_serves(tg, backend)


@pytest.mark.parametrize("body", [
    b"fffffffffffffffffffffffff\r\nx\r\n0\r\n\r\n",
    b"-5\r\nhello\r\n0\r\n\r\n",
    b"0x5\r\nhello\r\n0\r\n\r\n",
    b"5\r\nhello\r\n0\r\nX-Trailer: a\rb\r\n\r\n",
], ids=["overflowing-size", "negative-size", "hex-prefix", "bare-cr-in-trailer"])
def test_hostile_chunk_framing_is_refused_with_400(backend, start_tracegate, body):
    tg = start_tracegate(backend.url, max_body_bytes="1MiB")
    refused_and_closed(tg.port, b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + body)
    assert_still_serves(tg, backend)


@pytest.mark.parametrize("trailer", [b"X-Trailer: a\x00b", b"X-Trailer: a\x01b", b"no colon here"],
                         ids=["nul-in-trailer", "ctl-in-trailer", "trailer-without-colon"])
def test_control_characters_in_trailer_fields_are_refused_like_in_the_head(backend, proxy, trailer):
    with RawHTTP("127.0.0.1", proxy.port, timeout=5) as c:
        c.send(b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"5\r\nhello\r\n0\r\n" + trailer + b"\r\n\r\n")
        r = c.read_response()
    assert_still_serves(proxy, backend)
    assert_json_error(r, 400)


# ---- odd bodies: forwarded unchanged, traced readably --------------------------------------------


@pytest.mark.parametrize("body,readable", [
    (b'{"model": "m", "messages": [{"role": "user", "content": "bad \xff\xfe\xc3 bytes \x00"}]}', False),
    (b'{"model": "m", "messages": [{"role": "user", "content": "cut', True),
    (b'\x00\x01\x02 {"a": NaN, \'b\': [1,,2]} \xe2\x80', False),
    ("\u00e9\u65e5\U0001f389 not json at all \u2028".encode(), True),
], ids=["invalid-utf8-in-json", "cut-json", "binary-junk", "unicode-text"])
def test_invalid_utf8_and_invalid_json_bodies_are_forwarded_unchanged_and_traced_readably(
        exporting_tracegate, mlflow_client, mlflow_experiment, body, readable):
    tg = exporting_tracegate()
    rid = request_id()
    r = raw_request(tg.port, "POST", "/raw", [("Content-Type", "application/json"), ("X-Request-ID", rid)], body)
    assert r.status == 200, r
    assert r.body == body, "the body did not come back byte for byte"

    trace = wait_for_trace(mlflow_client, mlflow_experiment, rid)
    assert trace.info.trace_id == trace_id_of(r)
    assert state(trace) == "OK"
    root = root_span(trace)
    assert root.attributes.get("tracegate.request.bytes") == len(body)
    assert root.attributes.get("tracegate.response.bytes") == len(body)
    for key in ("mlflow.spanInputs", "mlflow.spanOutputs"):
        text = span_text(root, key)
        if readable:  # valid UTF-8: the text itself
            assert text == body.decode(), (key, text)
        else:  # not UTF-8: a note with the size, never mangled bytes
            assert json.loads(text) == {"binary": True, "size": len(body), "content_type": "application/json"}, text
    assert_still_serves(tg)


def test_gzip_response_is_forwarded_byte_identical_and_traced_as_compressed(
        exporting_tracegate, mlflow_client, mlflow_experiment):
    tg = exporting_tracegate()
    rid = request_id()
    expected = gzip_body(5000)
    r = raw_request(tg.port, "GET", "/gzip?n=5000", [("X-Request-ID", rid), ("Accept-Encoding", "gzip")])
    assert r.status == 200, r
    assert r.header("Content-Encoding") == "gzip"
    assert r.body == expected, "compressed body changed on the way"
    assert json.loads(gzip.decompress(r.body)) == {"items": list(range(5000))}

    trace = wait_for_trace(mlflow_client, mlflow_experiment, rid)
    root = root_span(trace)
    outputs = span_text(root, "mlflow.spanOutputs")
    assert json.loads(outputs) == {"compressed": "gzip", "size": len(expected), "content_type": "application/json"}
    assert root.attributes.get("tracegate.response.bytes") == len(expected)
    assert "\ufffd" not in outputs and "\x1f" not in outputs
    assert_still_serves(tg)


def test_gzip_request_body_is_forwarded_byte_identical_and_traced_as_compressed(
        exporting_tracegate, mlflow_client, mlflow_experiment):
    tg = exporting_tracegate()
    rid = request_id()
    payload = gzip.compress(json.dumps({"model": "m", "messages": [{"role": "user", "content": "zip"}]}).encode(),
                            mtime=0)
    r = raw_request(tg.port, "POST", "/echo", [("Content-Encoding", "gzip"), ("Content-Type", "application/json"),
                                                ("X-Request-ID", rid)], payload)
    assert r.status == 200, r
    assert r.json()["body_sha256"] == hashlib.sha256(payload).hexdigest()

    root = root_span(wait_for_trace(mlflow_client, mlflow_experiment, rid))
    assert json.loads(span_text(root, "mlflow.spanInputs")) == {
        "compressed": "gzip", "size": len(payload), "content_type": "application/json"}
    assert_still_serves(tg)


def test_chat_response_with_absurd_token_counts_does_not_take_the_proxy_down(
        exporting_tracegate, mlflow_client, mlflow_experiment):
    """An Anthropic-shaped answer (here: the request echoed by /raw) whose token counts add up past
    the largest integer: the exchange is served, the trace lands, and the proxy keeps running."""
    tg = exporting_tracegate()
    rid = request_id()
    body = json.dumps({
        "model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": "count"}],
        "type": "message", "role": "assistant", "content": [{"type": "text", "text": "many"}],
        "usage": {"input_tokens": 9223372036854775807, "output_tokens": 5}}).encode()
    r = raw_request(tg.port, "POST", "/raw/v1/messages", [("Content-Type", "application/json"),
                                                          ("X-Request-ID", rid)], body)
    assert r.status == 200 and r.body == body, r
    trace = wait_for_trace(mlflow_client, mlflow_experiment, rid)
    assert root_span(trace).span_type == "CHAT_MODEL"
    usage = upstream_span(trace).attributes.get("mlflow.chat.tokenUsage")
    usage = json.loads(usage) if isinstance(usage, str) else usage
    assert usage == {"input_tokens": 9223372036854775807, "output_tokens": 5,
                     "total_tokens": 9223372036854775807}, usage
    assert tg.running(), "tracegate died"
    assert_still_serves(tg)


# ---- huge and endless streams --------------------------------------------------------------------


def test_sse_event_larger_than_the_capture_limit_is_forwarded_whole_and_traced_as_truncated(
        exporting_tracegate, mlflow_client, mlflow_experiment):
    tg = exporting_tracegate(capture_max_body_bytes="64KiB")
    rid = request_id()
    size = 3 * 1024 * 1024
    expected = huge_event(size)
    with RawHTTP("127.0.0.1", tg.port, timeout=20) as c:
        c.request("GET", f"/huge-event?size={size}", [("X-Request-ID", rid)])
        r = c.read_response()
    assert r.status == 200, r.status
    assert r.header("Content-Type") == "text/event-stream"
    assert len(r.body) == len(expected) and r.body == expected, "the huge event did not arrive whole"

    trace = wait_for_trace(mlflow_client, mlflow_experiment, rid)
    assert state(trace) == "OK"
    root = root_span(trace)
    assert root.attributes.get("tracegate.response.truncated") is True, root.attributes
    assert root.attributes.get("tracegate.response.bytes") == len(expected)
    outputs = span_text(root, "mlflow.spanOutputs")
    assert outputs.startswith("data: xxxx"), outputs[:100]
    assert outputs.endswith(f"[truncated: {len(expected)} bytes in all]"), outputs[-200:]
    assert len(outputs.encode()) < 70 * 1024, "the trace kept more than the capture limit"
    assert_still_serves(tg)


def test_endless_chat_stream_abandoned_by_the_client_is_an_aborted_error_trace_with_the_partial_text(
        exporting_tracegate, backend, mlflow_client):
    tg = exporting_tracegate()
    request = json.dumps({"model": "m", "stream": True, "messages": [{"role": "user", "content": "go on forever"}]})
    received = b""
    with RawHTTP("127.0.0.1", tg.port, timeout=10) as c:
        c.request("POST", "/endless-sse/v1/chat/completions", [("Content-Type", "application/json")],
                  request.encode())
        head = c.read_head()
        assert head.status == 200, head
        trace_id = trace_id_of(head)
        for part in c.iter_body(head):
            received += part
            if b'"w5 "' in received:
                break  # six chunks arrived; now the client walks away mid-stream
    wait_until(lambda: backend.snapshot()["aborted_streams"] == 1, timeout=10,
               message="the backend to see the endless stream abandoned")

    trace = finished_trace(mlflow_client, trace_id)
    assert state(trace) == "ERROR", trace.info
    root = root_span(trace)
    assert "disconnected" in (root.status.description or ""), root.status
    assert [e.attributes.get("exception.type") for e in root.events if e.name == "exception"] == ["ClientAborted"]
    assert root.span_type == "CHAT_MODEL"
    output = json.loads(span_text(root, "mlflow.spanOutputs"))
    text = output["choices"][0]["message"]["content"]
    assert text.startswith("w0 w1 w2 w3 w4 w5 "), text[:200]
    assert re.fullmatch(r"(w\d+ )+", text), text[:200]
    assert "final event" in (root.attributes.get("tracegate.chat.warnings") or "")
    assert_still_serves(tg, backend)


# ---- absurd ids ------------------------------------------------------------------------------------


def _ten_thousand(prefix: str) -> str:
    """`prefix`, quotes, backslashes and characters of 1 to 4 UTF-8 bytes, 10,000 characters in all."""
    pattern = "\"'\\ \u00fc\u7528\U0001f389%;,="
    text = prefix + "-" + pattern * (10_000 // len(pattern) + 1)
    return text[:9_999] + "."  # not ending in white space, which would be trimmed


def test_ten_thousand_character_ids_with_quotes_and_unicode_are_served_and_the_trace_lands(
        exporting_tracegate, mlflow_client):
    tg = exporting_tracegate(max_header_bytes="80KiB")
    user, session, rid = _ten_thousand("user"), _ten_thousand("session"), _ten_thousand("rid")
    with RawHTTP("127.0.0.1", tg.port) as c:  # header values on the wire: UTF-8 bytes
        c.request("GET", "/echo", [(name, value.encode().decode("latin-1")) for name, value in
                                   [("X-User-ID", user), ("X-Session-ID", session), ("X-Request-ID", rid)]])
        r = c.read_response()
    assert r.status == 200, r
    assert r.header("X-Request-ID").encode("latin-1").decode() == rid, "request id not returned unchanged"
    # The client request id is set by StartTraceV3, after the spans: wait for it.
    trace = get_trace_when(mlflow_client, trace_id_of(r), lambda t: t.info.client_request_id is not None)
    info = trace.info

    def shortened(value: str, limit: int, kept: str | None) -> None:
        assert kept is not None and len(kept) == limit, (limit, kept and len(kept))
        assert re.fullmatch(r"~[0-9a-f]{16}", kept[-17:]), kept[-17:]
        assert value.startswith(kept[:-17])

    # MLflow 3.17.2 returns only the first 250 characters of a metadata value, so tracegate shortens
    # the user to 250 with the hash suffix: two long user ids sharing a prefix still read back apart.
    shortened(user, 250, info.trace_metadata.get("mlflow.trace.user"))
    shortened(session, 250, info.trace_metadata.get("mlflow.trace.session"))
    shortened(rid, 50, info.client_request_id)
    # The full values go to tags, capped at 8000 by tracegate; MLflow returns tag values cut at 4096.
    assert info.tags.get("tracegate.user_full") == user[:4096]
    assert info.tags.get("tracegate.session_full") == session[:4096]
    assert info.tags.get("tracegate.request_id_full") == rid[:4096]
    warnings = root_span(trace).attributes.get("tracegate.warnings") or ""
    assert "user id has 10000 characters" in warnings and "session id has 10000 characters" in warnings and "client request id has 10000 characters" in warnings, \
        warnings
    assert_still_serves(tg)


def test_id_with_a_control_character_is_not_exported_but_the_request_and_trace_are_kept(
        exporting_tracegate, mlflow_client, mlflow_experiment):
    """HTAB is legal inside a header value; as an id it is a control character: dropped, with a warning."""
    tg = exporting_tracegate()
    rid = request_id()
    r = raw_request(tg.port, "GET", "/echo", [("X-User-ID", "evil\tuser"), ("X-Session-ID", "fine-session"),
                                               ("X-Request-ID", rid)])
    assert r.status == 200, r
    trace = wait_for_trace(mlflow_client, mlflow_experiment, rid)
    assert "mlflow.trace.user" not in trace.info.trace_metadata, trace.info.trace_metadata
    assert trace.info.trace_metadata.get("mlflow.trace.session") == "fine-session"
    assert "user id contains a control character" in root_span(trace).attributes.get("tracegate.warnings", "")
    assert_still_serves(tg)
