"""Socket.IO chats (Chainlit, Rasa and Botpress web chats speak it) through tracegate, with the
real python-socketio client and server: each event the client emits is a turn, the server's events
until the next one are its answer; Engine.IO pings, the upgrade probe, a client's acks and binary
attachments open no turn of their own.
"""

from __future__ import annotations

import threading
import time

import pytest
import socketio

from mlflow_harness import root_span, session_is, state, unique, user_is, wait_for_traces


@pytest.fixture
def socketio_backend():
    from socketio_backend import SocketIOBackend

    backend = SocketIOBackend(ping_interval=0.2).start()
    yield backend
    backend.stop()


def by_turn(traces) -> list:
    return sorted(traces, key=lambda t: int(root_span(t).attributes["tracegate.websocket.turn"]))


class ChatClient:
    """The python-socketio client, collecting what the server emits."""

    def __init__(self) -> None:
        self.client = socketio.Client(reconnection=False)
        self.got: list = []
        self.lock = threading.Condition()
        self.client.on("*", self._on_event)
        self.client.on("ask", lambda data: "forty-two")

    def _on_event(self, event, data) -> None:
        with self.lock:
            self.got.append([event, data])
            self.lock.notify_all()

    def wait_for(self, event: str, timeout: float = 5) -> list:
        with self.lock:
            assert self.lock.wait_for(lambda: any(e == event for e, _ in self.got), timeout), self.got
            events, self.got = self.got, []
            return events


def test_each_emitted_event_is_a_turn_and_acks_attachments_and_pings_stay_inside(socketio_backend, exporting_tracegate,
                                                                                mlflow_client, mlflow_experiment):
    tg = exporting_tracegate(upstream=socketio_backend.url)
    user, session = unique("sio-user"), unique("sio-session")
    chat = ChatClient()
    chat.client.connect(f"http://127.0.0.1:{tg.port}", transports=["websocket"],
                        headers={"X-User-ID": user, "X-Session-ID": session})
    try:
        answered = chat.client.call("client_message", {"content": "hello there world"}, timeout=5)
        streamed = chat.wait_for("stream_end")
        time.sleep(0.5)  # Engine.IO pings pass between turns
        chat.client.emit("upload", bytes(range(30)))
        uploaded = chat.wait_for("uploaded")
        chat.client.emit("ask_me", {"question": "the answer?"})
        thanked = chat.wait_for("thanks")
    finally:
        chat.client.disconnect()
    assert answered == {"ok": True}
    assert streamed[-1] == ["stream_end", {"id": "m1", "output": "world there hello"}]
    assert uploaded == [["uploaded", {"size": 30}]]
    assert thanked == [["thanks", {"answer": "forty-two"}]], "the client's ack reached the server"
    handshake = socketio_backend.handshakes[-1]
    assert handshake.get("HTTP_X_USER_ID") == user and handshake.get("HTTP_X_REQUEST_ID"), handshake

    traces = by_turn(wait_for_traces(mlflow_client, mlflow_experiment, session_is(session), 3))
    assert len(traces) == 3, [root_span(t).inputs for t in traces]
    assert len(wait_for_traces(mlflow_client, mlflow_experiment, user_is(user), 3, settle=0)) == 3
    chat_turn, upload_turn, ask_turn = (root_span(t) for t in traces)
    assert all(root.name == "WS /socket.io/" for root in (chat_turn, upload_turn, ask_turn))
    assert all(state(t) == "OK" for t in traces), [t.info for t in traces]

    assert chat_turn.inputs == ["client_message", {"content": "hello there world"}]
    assert chat_turn.outputs == streamed + [[{"ok": True}]], "every event until the next emit, then the emit's ack"

    assert upload_turn.inputs == [["upload", {"_placeholder": True, "num": 0}], {"binary": True, "size": 30}], \
        "the attachment belongs to its event"
    assert upload_turn.outputs == ["uploaded", {"size": 30}]

    assert ask_turn.inputs == [["ask_me", {"question": "the answer?"}], ["forty-two"]], "the client's ack answers inside the turn"
    assert ask_turn.outputs == [["ask", {"question": "the answer?"}], ["thanks", {"answer": "forty-two"}]]
    assert ask_turn.attributes["tracegate.websocket.client_messages"] == 2


def test_a_client_that_starts_on_long_polling_is_traced_once_upgraded(socketio_backend, exporting_tracegate, mlflow_client,
                                                                      mlflow_experiment):
    """python-socketio's default: Engine.IO long-polling first (HTTP exchanges through the proxy),
    then the WebSocket upgrade (`2probe`, `3probe`, `5`): the probe is no turn, and with no session
    header the upgraded connection is the conversation's session."""
    tg = exporting_tracegate(upstream=socketio_backend.url)
    user = unique("sio-polling-user")
    chat = ChatClient()
    chat.client.connect(f"http://127.0.0.1:{tg.port}", headers={"X-User-ID": user})
    try:
        deadline = time.monotonic() + 10
        while chat.client.transport() != "websocket":
            assert time.monotonic() < deadline, "the client never upgraded through the proxy"
            time.sleep(0.05)
        for text in ("first question", "second question"):
            chat.client.emit("client_message", {"content": text})
            chat.wait_for("stream_end")
    finally:
        chat.client.disconnect()
    websocket_turns = f"{user_is(user)} AND tags.`mlflow.traceName` = 'WS /socket.io/'"
    turns = by_turn(wait_for_traces(mlflow_client, mlflow_experiment, websocket_turns, 2))
    assert [root_span(t).inputs for t in turns] == [["client_message", {"content": "first question"}],
                                                    ["client_message", {"content": "second question"}]]
    sessions = {t.info.trace_metadata.get("mlflow.trace.session") for t in turns}
    assert len(sessions) == 1 and next(iter(sessions)).startswith("ws-"), sessions
    assert root_span(turns[-1]).outputs[-1] == ["stream_end", {"id": "m1", "output": "question second"}]
