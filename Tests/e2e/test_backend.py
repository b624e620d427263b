"""The fake backend itself behaves as the other tests assume (no proxy involved)."""

from __future__ import annotations

import hashlib
import json

import requests

from backend import data_sha256
from helpers import RawHTTP, raw_request, wait_until


def test_echo_reports_the_raw_request(backend):
    r = raw_request(backend.port, "PROPFIND", "/echo/a%20b?x=%2F&y", [("X-CaSe", "1"), ("X-M", "a"), ("X-M", "b")],
                    body=b"hello")
    echo = r.json()
    assert echo["method"] == "PROPFIND"
    assert echo["target"] == "/echo/a%20b?x=%2F&y"
    assert ["X-CaSe", "1"] in echo["headers"]
    assert [h for h in echo["headers"] if h[0] == "X-M"] == [["X-M", "a"], ["X-M", "b"]]
    assert echo["body_sha256"] == hashlib.sha256(b"hello").hexdigest()


def test_bytes_are_deterministic_in_both_framings(backend):
    for chunked in (0, 1):
        body = requests.get(f"{backend.url}/bytes?n=3000000&seed=5&chunked={chunked}", timeout=10).content
        assert hashlib.sha256(body).hexdigest() == data_sha256(3_000_000, seed=5)
    assert data_sha256(1000, seed=1) != data_sha256(1000, seed=2)


def test_sse_and_stats(backend):
    with RawHTTP("127.0.0.1", backend.port) as c:
        c.request("GET", "/sse?events=3&interval_ms=10")
        resp = c.read_head()
        body = b"".join(c.iter_body(resp))
    assert body.count(b"data: ") == 3
    wait_until(lambda: backend.snapshot()["completed_streams"] == 1, timeout=2)


def test_upload_records_chunks_as_they_arrive(backend):
    with RawHTTP("127.0.0.1", backend.port) as c:
        c.request("POST", "/upload?tag=t", [("Transfer-Encoding", "chunked")])
        c.send(b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
        assert c.read_response().json()["body_length"] == 5
    assert backend.snapshot()["chunk_events"]["t"] == [3, 2]


def test_chat_completions_stream(backend):
    r = requests.post(f"{backend.url}/v1/chat/completions", json={"stream": True, "messages": [
        {"role": "user", "content": "hi"}]}, timeout=5)
    lines = [line for line in r.text.split("\n\n") if line]
    assert lines[-1] == "data: [DONE]"
    assert json.loads(lines[0][6:])["object"] == "chat.completion.chunk"


def test_chat_completions_stream_sends_usage_only_when_asked_and_records_it(backend):
    messages = [{"role": "user", "content": "count these words"}]
    plain = requests.post(f"{backend.url}/v1/chat/completions", json={"stream": True, "messages": messages},
                          timeout=5)
    assert '"usage"' not in plain.text
    r = requests.post(f"{backend.url}/v1/chat/completions", json={
        "stream": True, "stream_options": {"include_usage": True}, "messages": messages}, timeout=5)
    events = [json.loads(line[6:]) for line in r.text.split("\n\n") if line and line != "data: [DONE]"]
    assert events[-2]["choices"][0]["finish_reason"] == "stop"
    assert events[-1]["choices"] == []
    assert events[-1]["usage"] == {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}
    recorded = backend.snapshot()["chat_completions"]
    assert [(c["stream"], c["include_usage"], c["usage"]) for c in recorded] == [
        (True, False, events[-1]["usage"]), (True, True, events[-1]["usage"])]
    assert recorded[1]["id"] == events[-1]["id"]
