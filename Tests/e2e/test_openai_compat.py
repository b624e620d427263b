"""OpenAI-compatible chat completions pass through the proxy, streamed and not."""

from __future__ import annotations

import json
import time

import requests

CHAT = {"model": "fake-model", "messages": [{"role": "system", "content": "be brief"},
                                            {"role": "user", "content": "hello proxy world"}]}


def test_non_streamed_completion_passes_through(proxy):
    r = requests.post(f"{proxy.url}/v1/chat/completions", json=CHAT, timeout=10)
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "You said: hello proxy world"}
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"]


def test_streamed_completion_arrives_token_by_token_and_ends_with_done(proxy):
    t0 = time.monotonic()
    times, payloads = [], []
    with requests.post(f"{proxy.url}/v1/chat/completions", json={**CHAT, "stream": True},
                       headers={"X-Fake-Token-Interval-Ms": "60"}, stream=True, timeout=10) as r:
        assert r.status_code == 200
        assert r.headers["Content-Type"].startswith("text/event-stream")
        for line in r.iter_lines(chunk_size=None):
            if line.startswith(b"data: "):
                payloads.append(line[6:])
                times.append(time.monotonic() - t0)
    assert payloads[-1] == b"[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == "You said: hello proxy world"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    # Tokens arrive spread over time, not in one burst at the end.
    assert times[-1] - times[0] >= 0.6 * 0.06 * (len(times) - 2), [round(t, 3) for t in times]


def test_upstream_error_status_and_body_pass_through(proxy):
    r = requests.post(f"{proxy.url}/v1/chat/completions?fail=429", json=CHAT, timeout=10)
    assert r.status_code == 429
    assert r.json()["error"]["code"] == "429"


def test_upstream_delay_within_first_byte_timeout_is_fine(backend, start_tracegate):
    tg = start_tracegate(backend.url, first_byte_timeout="2s")
    r = requests.post(f"{tg.url}/v1/chat/completions", json=CHAT, headers={"X-Fake-Delay-Ms": "500"}, timeout=10)
    assert r.status_code == 200
    r = requests.post(f"{tg.url}/v1/chat/completions", json=CHAT, headers={"X-Fake-Delay-Ms": "3000"}, timeout=10)
    assert r.status_code == 504
    assert set(r.json()) >= {"error", "request_id"}
