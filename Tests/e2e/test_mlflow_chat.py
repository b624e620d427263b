"""OpenAI Chat Completions through the proxy, with the official `openai` client, become CHAT_MODEL
traces: the last user message and the assistant's text as previews, and the backend's token usage.

The fake backend records every completion it answers (id and usage) in /stats, so the tests
compare the trace with what the backend actually computed, not with what the client was sent.
"""

from __future__ import annotations

import time
import uuid

import pytest
from openai import OpenAI

from mlflow_harness import (expected_usage, request_id, root_span, state, trace_id_of, trace_json, upstream_span,
                            trace_json_via_rest, unique, wait_for_trace)

MESSAGES = [
    {"role": "system", "content": "be brief"},
    {"role": "user", "content": "what is tracegate"},
    {"role": "assistant", "content": "a reverse proxy"},
    {"role": "user", "content": "and what does it export"},
]
LAST_USER_MESSAGE = "and what does it export"
ANSWER = "You said: and what does it export"  # what the fake backend answers to MESSAGES
TOKEN_INTERVAL_MS = 80


def openai_client(tg, user: str, session: str, api_key: str = "sk-test") -> OpenAI:
    return OpenAI(base_url=f"{tg.url}/v1", api_key=api_key, max_retries=0, timeout=15,
                  default_headers={"X-User-ID": user, "X-Session-ID": session})


def backend_completion(backend, completion_id: str) -> dict:
    """What the backend recorded for this completion: its usage, whether it streamed, and whether
    the request it received asked for the usage in the stream."""
    found = [c for c in backend.snapshot()["chat_completions"] if c["id"] == completion_id]
    assert len(found) == 1, (completion_id, backend.snapshot()["chat_completions"])
    return found[0]


def assert_chat_trace(trace, user: str, session: str, usage: dict) -> None:
    """All the chat fields at once, so that a failure shows every difference."""
    info = trace.info
    root, upstream = root_span(trace), upstream_span(trace)
    actual = {"root span": root.name, "span type": root.span_type,
              "upstream span": (upstream.name, upstream.span_type), "request preview": info.request_preview,
              "response preview": info.response_preview, "token usage": info.token_usage,
              "user": info.trace_metadata.get("mlflow.trace.user"),
              "session": info.trace_metadata.get("mlflow.trace.session"), "state": state(trace)}
    expected = {"root span": "chat.completions fake-model", "span type": "CHAT_MODEL",
                "upstream span": ("POST /v1/chat/completions", "LLM"),
                "request preview": LAST_USER_MESSAGE, "response preview": ANSWER,
                "token usage": expected_usage(usage), "user": user, "session": session, "state": "OK"}
    assert actual == expected


def test_non_streamed_completion_trace_has_previews_usage_and_chat_span(exporting_tracegate, backend, mlflow_client,
                                                                       mlflow_experiment):
    tg = exporting_tracegate()
    user, session, rid = unique("chat-user"), unique("chat-session"), request_id()
    raw = openai_client(tg, user, session).chat.completions.with_raw_response.create(
        model="fake-model", messages=MESSAGES, extra_headers={"X-Request-ID": rid})
    completion = raw.parse()
    assert completion.choices[0].message.content == ANSWER
    recorded = backend_completion(backend, completion.id)
    assert completion.usage.model_dump(include={"prompt_tokens", "completion_tokens", "total_tokens"}) == \
        recorded["usage"]

    trace = wait_for_trace(mlflow_client, mlflow_experiment, rid)
    assert trace.info.trace_id == trace_id_of(raw)
    assert_chat_trace(trace, user, session, recorded["usage"])


def stream_completion(tg, user: str, session: str, rid: str, **options):
    """A streamed completion through the official client: (trace id header, chunks, arrival times)."""
    client = openai_client(tg, user, session)
    chunks, arrivals = [], []
    with client.chat.completions.with_streaming_response.create(
            model="fake-model", messages=MESSAGES, stream=True,
            extra_headers={"X-Request-ID": rid, "X-Fake-Token-Interval-Ms": str(TOKEN_INTERVAL_MS)},
            **options) as response:
        trace_id = trace_id_of(response)
        for chunk in response.parse():
            arrivals.append(time.monotonic())
            chunks.append(chunk)
    return trace_id, chunks, arrivals


def assembled_text(chunks) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def assert_arrived_one_by_one(chunks, arrivals) -> None:
    """The backend sleeps TOKEN_INTERVAL_MS after every chunk: a proxy that passes chunks on as
    they come delivers them spread out, not in one burst at the end."""
    gaps = [round(b - a, 3) for a, b in zip(arrivals, arrivals[1:])]
    spaced = [g for g in gaps if g >= 0.5 * TOKEN_INTERVAL_MS / 1000]
    assert len(spaced) >= len(chunks) - 2, f"chunks bunched together; gaps between arrivals (s): {gaps}"
    assert arrivals[-1] - arrivals[0] >= 0.6 * TOKEN_INTERVAL_MS / 1000 * (len(chunks) - 2), gaps


def test_streamed_completion_with_usage_arrives_chunk_by_chunk_and_its_trace_has_text_and_usage(
        exporting_tracegate, backend, mlflow_client, mlflow_experiment):
    tg = exporting_tracegate()
    user, session, rid = unique("stream-user"), unique("stream-session"), request_id()
    trace_id, chunks, arrivals = stream_completion(tg, user, session, rid, stream_options={"include_usage": True})

    assert assembled_text(chunks) == ANSWER
    recorded = backend_completion(backend, chunks[0].id)
    usage_chunks = [c for c in chunks if c.usage is not None]
    assert len(usage_chunks) == 1 and usage_chunks[0].choices == [], usage_chunks
    assert usage_chunks[0].usage.model_dump(include={"prompt_tokens", "completion_tokens", "total_tokens"}) == \
        recorded["usage"]
    # role chunk, one chunk per word (completion_tokens), finish chunk, usage chunk
    assert len(chunks) == recorded["usage"]["completion_tokens"] + 3, [c.model_dump() for c in chunks]
    assert_arrived_one_by_one(chunks, arrivals)

    trace = wait_for_trace(mlflow_client, mlflow_experiment, rid)
    assert trace.info.trace_id == trace_id
    assert_chat_trace(trace, user, session, recorded["usage"])


def test_streamed_completion_without_usage_option_has_the_text_but_no_invented_usage(
        exporting_tracegate, backend, mlflow_client, mlflow_experiment):
    """Without `stream_options.include_usage` the backend sends no usage, and tracegate does not
    alter requests to ask for it: the trace has the assembled text and no token usage."""
    tg = exporting_tracegate()
    user, session, rid = unique("stream-user"), unique("stream-session"), request_id()
    trace_id, chunks, arrivals = stream_completion(tg, user, session, rid)

    assert assembled_text(chunks) == ANSWER
    assert_arrived_one_by_one(chunks, arrivals)
    recorded = backend_completion(backend, chunks[0].id)
    assert recorded["include_usage"] is False, "tracegate must not inject include_usage"

    trace = wait_for_trace(mlflow_client, mlflow_experiment, rid)
    assert trace.info.trace_id == trace_id
    assert trace.info.response_preview == ANSWER
    assert trace.info.token_usage is None, trace.info.token_usage
    assert state(trace) == "OK"


def test_streamed_completion_without_usage_option_reaches_the_client_as_the_backend_sent_it(
        exporting_tracegate, backend):
    """Whatever the proxy does to learn the usage, a client that did not ask for a usage chunk
    gets none: role chunk, one chunk per word, finish chunk."""
    tg = exporting_tracegate()
    _, chunks, _ = stream_completion(tg, unique("stream-user"), unique("stream-session"), request_id())
    recorded = backend_completion(backend, chunks[0].id)
    assert [c for c in chunks if c.usage is not None] == [], \
        f"the client got a usage chunk it did not ask for (backend saw include_usage={recorded['include_usage']})"
    assert len(chunks) == recorded["usage"]["completion_tokens"] + 2, [c.model_dump() for c in chunks]


def test_streamed_trace_duration_covers_the_whole_stream(exporting_tracegate, mlflow_client, mlflow_experiment):
    tg = exporting_tracegate()
    rid = request_id()
    _, chunks, _ = stream_completion(tg, unique("stream-user"), unique("stream-session"), rid)
    # The backend sleeps TOKEN_INTERVAL_MS after each chunk, the last one included, before [DONE].
    trace = wait_for_trace(mlflow_client, mlflow_experiment, rid)
    assert trace.info.execution_duration >= len(chunks) * TOKEN_INTERVAL_MS, trace.info


@pytest.mark.parametrize("stream", [False, True], ids=["non-streamed", "streamed"])
def test_openai_api_key_and_cookies_appear_nowhere_in_the_chat_trace(exporting_tracegate, mlflow_server,
                                                                    mlflow_client, mlflow_experiment, stream):
    tg = exporting_tracegate()
    api_key, cookie, extra_key = ("sk-secret-" + uuid.uuid4().hex, "cookie-secret-" + uuid.uuid4().hex,
                                  "apikey-secret-" + uuid.uuid4().hex)
    user, rid = unique("secret-user"), request_id()
    client = openai_client(tg, user, unique("secret-session"), api_key=api_key)
    headers = {"X-Request-ID": rid, "Cookie": f"session={cookie}", "X-Api-Key": extra_key}
    if stream:
        text = assembled_text(list(client.chat.completions.create(
            model="fake-model", messages=MESSAGES, stream=True, stream_options={"include_usage": True},
            extra_headers=headers)))
    else:
        text = client.chat.completions.create(model="fake-model", messages=MESSAGES,
                                              extra_headers=headers).choices[0].message.content
    assert text == ANSWER

    trace = wait_for_trace(mlflow_client, mlflow_experiment, rid)
    assert trace.info.trace_metadata.get("mlflow.trace.user") == user
    assert trace.data.spans
    exported = trace_json(trace) + trace_json_via_rest(mlflow_server.url, trace.info.trace_id)
    leaked = [name for name, value in [("api key", api_key), ("cookie", cookie), ("x-api-key", extra_key)]
              if value in exported]
    assert not leaked, f"credentials found in the exported trace: {leaked}"


def test_official_client_closing_right_after_done_gives_a_complete_ok_trace(exporting_tracegate, mlflow_client,
                                                                            mlflow_experiment):
    """The official (sync) client stops at `data: [DONE]` and closes the connection without reading
    the end of the chunked body. With the backend's end held back 300ms that close always comes
    first (without the hold it is a race, lost now and then). The stream was complete for the
    client, so this is not an abort: the trace is OK and has the whole answer."""
    tg = exporting_tracegate()
    user, session, rid = unique("done-user"), unique("done-session"), request_id()
    client = openai_client(tg, user, session)
    with client.chat.completions.with_streaming_response.create(
            model="fake-model", messages=MESSAGES, stream=True, stream_options={"include_usage": True},
            extra_headers={"X-Request-ID": rid, "X-Fake-Done-Linger-Ms": "300"}) as response:
        trace_id = trace_id_of(response)
        chunks = list(response.parse())
    assert assembled_text(chunks) == ANSWER
    trace = wait_for_trace(mlflow_client, mlflow_experiment, rid)
    assert trace.info.trace_id == trace_id
    assert trace.info.response_preview == ANSWER, trace.info
    assert state(trace) == "OK", \
        f"trace state {state(trace)} for a stream read to [DONE]; access log: {tg.stdout_lines()[-1:]}"
