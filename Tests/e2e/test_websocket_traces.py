"""Each turn of a WebSocket conversation becomes an MLflow trace, read back from a real MLflow server.

Real clients: the `websockets` library against our chat backend (`ws_backend.py`, compression
negotiated as it is by default), and the official `openai` client's Realtime and Responses
WebSocket connections against fake OpenAI backends of ours. Traces are checked by user, session,
turn order and content; a connection cut mid-answer leaves an ERROR trace with what was said so far.
"""

from __future__ import annotations

import json
import socket
import time

from mlflow_harness import request_id, root_span, session_is, state, unique, upstream_span, user_is, wait_for_traces
from ws_backend import ws_connect


def by_turn(traces) -> list:
    return sorted(traces, key=lambda t: int(root_span(t).attributes["tracegate.websocket.turn"]))


def test_each_client_message_is_a_turn_traced_with_user_session_order_and_content(ws_backend, exporting_tracegate,
                                                                                  mlflow_client, mlflow_experiment):
    tg = exporting_tracegate(upstream=ws_backend.url)
    user, session, rid = unique("ws-user"), unique("ws-session"), request_id()
    said = ["hello there", "how are you?", "tell me a story"]
    replies = []
    with ws_connect(tg.port, "/stream", additional_headers={"X-User-ID": user, "X-Session-ID": session,
                                                            "X-Request-ID": rid}) as ws:
        assert "permessage-deflate" in ws.response.headers.get("Sec-WebSocket-Extensions", ""), \
            "compressed both ways: the trace must inflate what it reads"
        for text in said:
            ws.send(text)
            replies.append([ws.recv(timeout=5) for _ in range(4)])

    traces = by_turn(wait_for_traces(mlflow_client, mlflow_experiment, session_is(session), len(said)))
    assert len(wait_for_traces(mlflow_client, mlflow_experiment, user_is(user), len(said), settle=0)) == len(said)
    for number, (trace, text, reply) in enumerate(zip(traces, said, replies), start=1):
        root = root_span(trace)
        assert root.name == "WS /stream"
        assert trace.info.client_request_id == f"{rid}:{number}"
        assert trace.info.trace_metadata["mlflow.trace.user"] == user
        assert state(trace) == "OK", trace.info
        assert root.inputs == text
        assert root.outputs == reply, "every server message until the next client message, in order"
        assert root.attributes["tracegate.websocket.client_messages"] == 1
        assert root.attributes["tracegate.websocket.server_messages"] == 4
        assert root.attributes["tracegate.websocket.time_to_first_message_ms"] >= 0
    starts = [t.info.request_time for t in traces]
    assert starts == sorted(starts), "turns are timed in the order they were said"
    assert root_span(traces[-1]).attributes["tracegate.websocket.ended_by"] == "close frame 1000"


def test_an_answered_turn_is_traced_while_the_connection_stays_open(ws_backend, exporting_tracegate, mlflow_client,
                                                                    mlflow_experiment):
    """A chat page left open after the answer: the turn does not wait for the user's next message
    or the close; it is traced once no message passed for 10 s after the answer."""
    tg = exporting_tracegate(upstream=ws_backend.url)
    session = unique("ws-quiet-session")
    with ws_connect(tg.port, "/stream", additional_headers={"X-Session-ID": session}) as ws:
        ws.send("are you there?")
        replies = [ws.recv(timeout=5) for _ in range(4)]
        answered = time.monotonic()
        first = wait_for_traces(mlflow_client, mlflow_experiment, session_is(session), 1, timeout=40, settle=0)
        waited = time.monotonic() - answered
        root = root_span(first[0])
        assert root.inputs == "are you there?" and root.outputs == replies
        assert root.attributes["tracegate.websocket.ended_by"] == "quiet after the answer"
        assert state(first[0]) == "OK"
        assert 9.5 < waited < 25, f"traced {waited:.1f} s after the answer, with the connection still open"
        ws.send("still here")
        [ws.recv(timeout=5) for _ in range(4)]
    traces = by_turn(wait_for_traces(mlflow_client, mlflow_experiment, session_is(session), 2))
    assert [root_span(t).inputs for t in traces] == ["are you there?", "still here"]
    assert root_span(traces[1]).attributes["tracegate.websocket.ended_by"] == "close frame 1000"


def test_what_the_server_says_before_the_first_message_is_recorded_with_the_first_turn(ws_backend, exporting_tracegate,
                                                                                     mlflow_client, mlflow_experiment):
    """A chat that greets on connect: the greeting is what the user's first message answers. It is
    kept on the first turn's trace, whose inputs stay the user's message; it is no turn of its own."""
    tg = exporting_tracegate(upstream=ws_backend.url)
    session = unique("ws-greet-session")
    with ws_connect(tg.port, "/greet", additional_headers={"X-Session-ID": session}) as ws:
        greeting = [ws.recv(timeout=5), ws.recv(timeout=5)]
        for text in ("refund", "order 42"):
            ws.send(text)
            ws.recv(timeout=5)
    traces = by_turn(wait_for_traces(mlflow_client, mlflow_experiment, session_is(session), 2))
    assert len(traces) == 2, "one trace per client message"
    first, second = (root_span(t) for t in traces)
    assert (first.inputs, first.outputs) == ("refund", "about refund: noted")
    assert first.attributes["tracegate.websocket.greeting_messages"] == 2
    assert first.attributes["tracegate.websocket.greeting"] == [greeting[0], json.loads(greeting[1])]
    assert first.attributes["tracegate.websocket.server_messages"] == 1, "the greeting is no part of the answer"
    assert (second.inputs, second.outputs) == ("order 42", "about order 42: noted")
    assert "tracegate.websocket.greeting" not in second.attributes


def test_without_a_session_header_each_connection_is_its_own_session(ws_backend, exporting_tracegate, mlflow_client,
                                                                     mlflow_experiment):
    tg = exporting_tracegate(upstream=ws_backend.url)
    user = unique("ws-conn-user")
    for messages in (["a1", "a2"], ["b1", "b2", "b3"]):
        with ws_connect(tg.port, "/echo", additional_headers={"X-User-ID": user}, compression=None) as ws:
            for text in messages:
                ws.send(json.dumps({"text": text}))
                ws.recv(timeout=5)
    traces = wait_for_traces(mlflow_client, mlflow_experiment, user_is(user), 5)
    sessions = {}
    for trace in traces:
        sessions.setdefault(trace.info.trace_metadata.get("mlflow.trace.session"), []).append(root_span(trace).inputs["text"])
    assert sorted(map(sorted, sessions.values())) == [["a1", "a2"], ["b1", "b2", "b3"]], sessions
    assert all(s and s.startswith("ws-") for s in sessions), sessions
    assert len(wait_for_traces(mlflow_client, mlflow_experiment, session_is(next(iter(sessions))), len(next(iter(sessions.values()))),
                               settle=0)) > 0, "the connection's session finds its turns"


def test_openai_realtime_client_turns_read_like_chat_model_calls(ws_backend, exporting_tracegate, mlflow_client,
                                                                 mlflow_experiment):
    from openai import OpenAI

    tg = exporting_tracegate(upstream=ws_backend.url)
    user, session = unique("rt-user"), unique("rt-session")
    client = OpenAI(base_url=f"{tg.url}/v1", api_key="sk-realtime-secret-1234567890", max_retries=0)
    answers = []
    with client.realtime.connect(model="gpt-realtime-test",
                                 extra_headers={"X-User-ID": user, "X-Session-ID": session}) as connection:
        connection.session.update(session={"type": "realtime", "instructions": "Answer briefly.", "output_modalities": ["text"]})
        for question in ("What is MLflow?", "And tracegate?"):
            connection.conversation.item.create(item={"type": "message", "role": "user",
                                                      "content": [{"type": "input_text", "text": question}]})
            connection.response.create()
            text = ""
            for event in connection:
                if event.type == "response.output_text.delta":
                    text += event.delta
                if event.type == "response.done":
                    break
            answers.append(text)
    assert answers == ["You said: What is MLflow?.", "You said: And tracegate?."]

    traces = by_turn(wait_for_traces(mlflow_client, mlflow_experiment, session_is(session), 2))
    for trace, question, answer in zip(traces, ("What is MLflow?", "And tracegate?"), answers):
        root = root_span(trace)
        assert root.name == "WS /v1/realtime"
        assert root.span_type == "CHAT_MODEL"
        assert state(trace) == "OK"
        assert trace.info.trace_metadata["mlflow.trace.user"] == user
        assert trace.info.request_preview == question
        assert trace.info.response_preview == answer
        assert trace.info.token_usage == {"input_tokens": 12, "output_tokens": 5, "total_tokens": 17}
        llm = upstream_span(trace)
        assert llm.span_type == "LLM"
        assert llm.attributes["mlflow.llm.model"] == "gpt-realtime-test"
        assert llm.attributes["tracegate.time_to_first_token_ms"] >= 0
        assert root.outputs["status"] == "completed"
        messages = root.inputs["messages"]
        assert messages[0] == {"role": "system", "content": "Answer briefly."}
        assert messages[-1] == {"role": "user", "content": question}
        assert root.attributes["tracegate.websocket.ended_by"] == "response.done"
    assert "sk-realtime-secret" not in json.dumps([t.to_dict() for t in traces], default=str)


def test_a_realtime_connection_cut_mid_response_leaves_an_error_trace_with_the_partial_answer(
        ws_backend, exporting_tracegate, mlflow_client, mlflow_experiment):
    from openai import OpenAI

    tg = exporting_tracegate(upstream=ws_backend.url)
    session = unique("rt-cut")
    client = OpenAI(base_url=f"{tg.url}/v1", api_key="sk-test", max_retries=0)
    got = ""
    with client.realtime.connect(model="gpt-realtime-test", extra_headers={"X-Session-ID": session}, max_retries=0) as connection:
        connection.conversation.item.create(item={"type": "message", "role": "user",
                                                  "content": [{"type": "input_text", "text": "please cut"}]})
        connection.response.create()
        try:
            for event in connection:
                if event.type == "response.output_text.delta":
                    got += event.delta
        except Exception:
            pass
    assert got == "You said: "
    trace = wait_for_traces(mlflow_client, mlflow_experiment, session_is(session), 1)[0]
    assert state(trace) == "ERROR"
    assert root_span(trace).outputs["output_text"] == "You said: "
    assert trace.info.response_preview == "You said: "


def test_openai_responses_over_websocket_turns_are_responses_calls(ws_backend, exporting_tracegate, mlflow_client,
                                                                   mlflow_experiment):
    from openai import OpenAI

    tg = exporting_tracegate(upstream=ws_backend.url)
    session = unique("resp-ws")
    client = OpenAI(base_url=f"{tg.url}/v1", api_key="sk-test", max_retries=0)
    with client.responses.connect(extra_headers={"X-Session-ID": session}) as connection:
        for question in ("first question", "second question"):
            connection.response.create(model="gpt-ws-test", input=question)
            for event in connection:
                if event.type == "response.completed":
                    break
    traces = by_turn(wait_for_traces(mlflow_client, mlflow_experiment, session_is(session), 2))
    for trace, question in zip(traces, ("first question", "second question")):
        assert root_span(trace).name == "WS /v1/responses"
        assert root_span(trace).span_type == "CHAT_MODEL"
        assert trace.info.request_preview == question
        assert trace.info.response_preview == f"You said: {question}."
        assert trace.info.token_usage == {"input_tokens": 9, "output_tokens": 4, "total_tokens": 13}
        assert upstream_span(trace).attributes["mlflow.llm.model"] == "gpt-ws-test"


def test_broken_frames_degrade_only_their_connections_trace(ws_backend, exporting_tracegate, mlflow_client,
                                                            mlflow_experiment):
    """An unmasked client frame, a reserved opcode and a huge length pass through untouched to the
    backend (which closes the connection on the first two); the earlier turn is traced with a note,
    and another client's conversation at the same time is traced whole."""
    tg = exporting_tracegate(upstream=ws_backend.url)
    good_session = unique("ws-good")
    cases = {unique("ws-unmasked"): b"\x81\x05hello",  # an unmasked client frame
             unique("ws-opcode"): b"\x83\x80abcd",  # reserved opcode 3
             # a frame of 2^63-1 bytes, well-formed but never finished
             unique("ws-huge"): b"\x82\xff\x7f\xff\xff\xff\xff\xff\xff\xff" + b"abcd" + b"x" * 4096}
    for bad_session, broken in cases.items():
        with socket.create_connection(("127.0.0.1", tg.port), timeout=5) as raw, \
                ws_connect(tg.port, "/echo", additional_headers={"X-Session-ID": good_session}, compression=None) as good:
            raw.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                        b"X-Session-ID: " + bad_session.encode() + b"\r\n\r\n")
            head = b""
            while b"\r\n\r\n" not in head:
                head += raw.recv(4096)
            assert head.startswith(b"HTTP/1.1 101"), head
            mask = b"\x01\x02\x03\x04"
            raw.sendall(b"\x81\x82" + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(b"hi")))
            time.sleep(0.1)
            raw.sendall(broken)
            good.send("still fine")
            assert good.recv(timeout=5) == "still fine"
            raw.settimeout(5)
            try:
                while raw.recv(65536):
                    pass
            except OSError:
                pass
    good_traces = wait_for_traces(mlflow_client, mlflow_experiment, session_is(good_session), 3)
    assert all(root_span(t).inputs == "still fine" and root_span(t).outputs == "still fine" for t in good_traces)
    for bad_session in cases:
        trace = wait_for_traces(mlflow_client, mlflow_experiment, session_is(bad_session), 1)[0]
        root = root_span(trace)
        assert root.inputs == "hi"
        if "huge" in bad_session:
            # The frame never ends (so the answer never counts as quiet); the raw client gives up after 5 s.
            assert state(trace) == "ERROR", "cut off without a close handshake"
        else:
            assert "RFC 6455" in root.attributes.get("tracegate.websocket.notes", ""), root.attributes


def test_tunnels_hold_message_texts_within_capture_memory_limit_and_give_it_back(ws_backend, exporting_tracegate,
                                                                                mlflow_client, mlflow_experiment):
    """Messages larger than the shared capture budget: the turn is traced with sizes and a note, not
    its texts, and once it is traced the budget is whole again for the next turn."""
    tg = exporting_tracegate(upstream=ws_backend.url, capture_memory_limit="100KiB", capture_max_body_bytes="1MiB")
    session = unique("ws-budget")
    with ws_connect(tg.port, "/echo", additional_headers={"X-Session-ID": session}, compression=None, max_size=None) as ws:
        big = "x" * (400 << 10)
        ws.send(big)
        assert ws.recv(timeout=10) == big
        ws.send("small one")
        assert ws.recv(timeout=5) == "small one"
    traces = by_turn(wait_for_traces(mlflow_client, mlflow_experiment, session_is(session), 2))
    first, second = (root_span(t) for t in traces)
    assert "capture_memory_limit" in first.attributes.get("tracegate.websocket.notes", ""), first.attributes
    assert first.attributes["tracegate.response.truncated"] is True
    assert len(json.dumps(first.inputs or "")) < 100 << 10, "the big message's text was not kept"
    assert second.inputs == "small one" and second.outputs == "small one"


def test_a_chat_page_in_a_real_browser_is_traced_turn_by_turn(ws_backend, exporting_tracegate, mlflow_client,
                                                              mlflow_experiment):
    """Chromium's own WebSocket (permessage-deflate offered, as browsers do): a page cannot set
    headers on a WebSocket, so the user comes from the URL (`user_from = query:user`) and the
    connection is the session."""
    from helpers import StaticPage, browser_posts

    tg = exporting_tracegate(upstream=ws_backend.url, user_from="query:user")
    user = unique("browser-user")
    script = f"""
      const ws = new WebSocket("ws://127.0.0.1:{tg.port}/stream?user={user}");
      const got = [];
      ws.onopen = () => ws.send("hello from the browser");
      ws.onmessage = (event) => {{
        got.push(event.data);
        if (got.length === 4) ws.send("and a second question");
        if (got.length === 8) ws.close(1000);
      }};
      ws.onclose = (event) => {{
        fetch("/result", {{method: "POST", body: JSON.stringify({{code: event.code, got: got, ext: ws.extensions}})}});
      }};
    """
    page = StaticPage(f"<!doctype html><script>{script}</script>").start()
    try:
        shown = json.loads(browser_posts(page))
    finally:
        page.stop()
    assert shown["code"] == 1000 and len(shown["got"]) == 8, shown
    assert "permessage-deflate" in shown["ext"], shown
    traces = by_turn(wait_for_traces(mlflow_client, mlflow_experiment, user_is(user), 2))
    assert [root_span(t).inputs for t in traces] == ["hello from the browser", "and a second question"]
    assert [root_span(t).outputs for t in traces] == [shown["got"][:4], shown["got"][4:]]
    sessions = {t.info.trace_metadata.get("mlflow.trace.session") for t in traces}
    assert len(sessions) == 1 and next(iter(sessions)).startswith("ws-"), sessions
