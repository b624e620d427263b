"""The OpenAI Responses API and Anthropic Messages through the proxy, with their official Python
clients, streamed and not: each exchange becomes a CHAT_MODEL trace whose response preview is the
assistant's assembled text and whose token usage is what the backend computed.

The fake backend records every answer (id and usage) in /stats, so the traces are compared with
what the backend produced, not with what the client was sent.
"""

from __future__ import annotations

import anthropic
from openai import OpenAI

from mlflow_harness import (expected_usage, request_id, root_span, state, trace_id_of, unique, upstream_span,
                            wait_for_trace)

QUESTION = "and what does it export"
ANSWER = "You said: and what does it export"  # what the fake backend answers to QUESTION
TOKEN_INTERVAL_MS = 40


def recorded(backend, answer_id: str) -> dict:
    found = [c for c in backend.snapshot()["chat_completions"] if c["id"] == answer_id]
    assert len(found) == 1, (answer_id, backend.snapshot()["chat_completions"])
    return found[0]


def chat_facts(trace) -> dict:
    root, upstream = root_span(trace), upstream_span(trace)
    return {"span type": root.span_type, "format": root.attributes.get("mlflow.message.format"),
            "request preview": trace.info.request_preview, "response preview": trace.info.response_preview,
            "token usage": trace.info.token_usage, "user": trace.info.trace_metadata.get("mlflow.trace.user"),
            "session": trace.info.trace_metadata.get("mlflow.trace.session"), "state": state(trace),
            "root span": root.name, "upstream span": (upstream.name, upstream.span_type)}


def expected_facts(path: str, message_format: str, usage: dict, user: str, session: str) -> dict:
    """The root span is named after the operation and model, as the SDK's autologging names it; the
    upstream call is its LLM child, named after the request line."""
    operation, model = {"/v1/responses": ("responses", "fake-model"),
                        "/v1/messages": ("messages", "fake-claude")}[path]
    return {"span type": "CHAT_MODEL", "format": message_format, "request preview": QUESTION,
            "response preview": ANSWER, "token usage": expected_usage(usage), "user": user, "session": session,
            "state": "OK", "root span": f"{operation} {model}", "upstream span": (f"POST {path}", "LLM")}


def openai_client(tg, user: str, session: str) -> OpenAI:
    return OpenAI(base_url=f"{tg.url}/v1", api_key="sk-test", max_retries=0, timeout=15,
                  default_headers={"X-User-ID": user, "X-Session-ID": session})


def anthropic_client(tg, user: str, session: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=tg.url, api_key="sk-ant-test", max_retries=0, timeout=15,
                               default_headers={"X-User-ID": user, "X-Session-ID": session})


RESPONSES_INPUT = [{"role": "system", "content": "be brief"}, {"role": "user", "content": QUESTION}]


def test_responses_api_non_streamed(exporting_tracegate, backend, mlflow_client, mlflow_experiment):
    tg = exporting_tracegate()
    user, session, rid = unique("resp-user"), unique("resp-session"), request_id()
    raw = openai_client(tg, user, session).responses.with_raw_response.create(
        model="fake-model", input=RESPONSES_INPUT, extra_headers={"X-Request-ID": rid})
    response = raw.parse()
    assert response.output_text == ANSWER
    trace = wait_for_trace(mlflow_client, mlflow_experiment, rid)
    assert trace.info.trace_id == trace_id_of(raw)
    usage = recorded(backend, response.id)["usage"]
    assert chat_facts(trace) == expected_facts("/v1/responses", "openai", usage, user, session)


def test_responses_api_streamed_arrives_event_by_event(exporting_tracegate, backend, mlflow_client,
                                                       mlflow_experiment):
    import time

    tg = exporting_tracegate()
    user, session, rid = unique("resp-user"), unique("resp-session"), request_id()
    deltas, arrivals, response_id = [], [], None
    stream = openai_client(tg, user, session).responses.create(
        model="fake-model", input=RESPONSES_INPUT, stream=True,
        extra_headers={"X-Request-ID": rid, "X-Fake-Token-Interval-Ms": str(TOKEN_INTERVAL_MS)})
    for event in stream:
        if event.type == "response.output_text.delta":
            deltas.append(event.delta)
            arrivals.append(time.monotonic())
        elif event.type == "response.completed":
            response_id = event.response.id
    assert "".join(deltas) == ANSWER
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:])]
    assert len(gaps) >= 5 and sorted(gaps)[len(gaps) // 2] >= TOKEN_INTERVAL_MS / 1000 * 0.5, gaps
    trace = wait_for_trace(mlflow_client, mlflow_experiment, rid)
    usage = recorded(backend, response_id)["usage"]
    assert chat_facts(trace) == expected_facts("/v1/responses", "openai", usage, user, session)


def test_anthropic_messages_non_streamed(exporting_tracegate, backend, mlflow_client, mlflow_experiment):
    tg = exporting_tracegate()
    user, session, rid = unique("claude-user"), unique("claude-session"), request_id()
    message = anthropic_client(tg, user, session).messages.create(
        model="fake-claude", max_tokens=100, messages=[{"role": "user", "content": QUESTION}],
        extra_headers={"X-Request-ID": rid})
    assert message.content[0].text == ANSWER
    trace = wait_for_trace(mlflow_client, mlflow_experiment, rid)
    usage = recorded(backend, message.id)["usage"]
    assert chat_facts(trace) == expected_facts("/v1/messages", "anthropic", usage, user, session)


def test_anthropic_messages_streamed_usage_is_cumulative(exporting_tracegate, backend, mlflow_client,
                                                         mlflow_experiment):
    tg = exporting_tracegate()
    user, session, rid = unique("claude-user"), unique("claude-session"), request_id()
    with anthropic_client(tg, user, session).messages.stream(
            model="fake-claude", max_tokens=100, messages=[{"role": "user", "content": QUESTION}],
            extra_headers={"X-Request-ID": rid, "X-Fake-Token-Interval-Ms": str(TOKEN_INTERVAL_MS)}) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert "".join(pieces) == ANSWER
    assert len(pieces) > 3, pieces
    usage = recorded(backend, final.id)["usage"]
    # message_start carries input tokens and a provisional output count; message_delta the final count.
    assert final.usage.output_tokens == usage["completion_tokens"]
    trace = wait_for_trace(mlflow_client, mlflow_experiment, rid)
    assert chat_facts(trace) == expected_facts("/v1/messages", "anthropic", usage, user, session)
