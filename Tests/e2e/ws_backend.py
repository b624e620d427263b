"""A small WebSocket chat backend (the `websockets` library's threaded server) for the tunnel tests.

Paths:
  /echo             each message is sent back as it came (text or binary)
  /stream           each message is answered with three parts, then "[done]"
  /greet            a welcome text and a JSON menu on connect; then each message gets one answer
  /push?n=&ms=      n messages sent unasked, ms apart; then echoes
  /close?code=      after the first message, closes with that code and reason "bye"
  /flood?bytes=     sends that many bytes in 64 KiB binary messages without reading, then echoes
  /drop             after the first message, drops the TCP connection without a close frame
  /v1/realtime      a fake OpenAI Realtime API: session.created, then session.update,
                    conversation.item.create and response.create answered as the API does (text
                    deltas, response.done with usage); "cut" in the user's text drops the connection
                    after the first delta
  /v1/responses     a fake OpenAI Responses API over WebSocket: each response.create streams
                    response.created, output_text deltas and response.completed with usage
Every handshake's request headers and every close code a client sent are recorded.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import threading
import time
from urllib.parse import parse_qs, urlsplit

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect
from websockets.sync.server import ServerConnection, serve


UPGRADE_REQUEST = (b"GET /raw HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                   b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
SWITCHING_PROTOCOLS = (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                       b"Sec-WebSocket-Accept: x\r\n\r\n")


def read_head(sock) -> tuple[bytes, bytes]:
    """Reads `sock` to the end of an HTTP head: the head, and the bytes that came after it."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        assert chunk, f"closed before the end of a head: {data!r}"
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    return head, rest


def raw_tunnel(port: int, timeout: float = 5) -> tuple[socket.socket, bytes]:
    """A raw client through 127.0.0.1:`port`: the upgrade sent, the 101 read. The socket, and the
    tunnel bytes that came with the 101."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.sendall(UPGRADE_REQUEST)
    head, rest = read_head(sock)
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock, rest


def check_half_close_passes_through(start_tracegate, tls: ssl.SSLContext | None = None, **flags) -> None:
    """A raw upstream (over TLS with `tls`) answers the handshake with 101, reads the tunnel until the
    client's half-close reaches it as the end of its stream, and only then replies and closes: the
    reply must still reach the client, which finished sending long before."""
    listener = socket.create_server(("127.0.0.1", 0))
    seen: dict[str, bytes] = {}

    def upstream():
        raw, _ = listener.accept()
        with (tls.wrap_socket(raw, server_side=True) if tls else raw) as conn:
            _, received = read_head(conn)
            conn.sendall(SWITCHING_PROTOCOLS)
            while chunk := conn.recv(4096):  # until the client's half-close arrives
                received += chunk
            seen["upstream"] = received
            conn.sendall(b"reply after EOF:" + received)

    thread = threading.Thread(target=upstream, daemon=True)
    thread.start()
    port = listener.getsockname()[1]
    tg = start_tracegate(f"https://localhost:{port}" if tls else f"http://127.0.0.1:{port}", **flags)
    sock, answer = raw_tunnel(tg.port)
    sent = b"\x81\x84" + os.urandom(8)  # any bytes: the proxy does not read frames to forward them
    sock.sendall(sent)
    sock.shutdown(socket.SHUT_WR)
    while chunk := sock.recv(4096):
        answer += chunk
    sock.close()
    thread.join(5)
    listener.close()
    assert seen.get("upstream") == sent, "the upstream got the bytes, then the end of the stream"
    assert answer == b"reply after EOF:" + sent


def ws_connect(port: int, path: str, **options) -> ClientConnection:
    """A `websockets` client connection to 127.0.0.1:`port`, for a `with` block."""
    options = {"proxy": None, "open_timeout": 5, "close_timeout": 2, "max_size": None, "ping_interval": None, **options}
    return connect(f"ws://127.0.0.1:{port}{path}", **options)


class WebSocketBackend:
    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        """`tls`: serve wss (the proxy's upstream is then `https://localhost:PORT`)."""
        self.lock = threading.Lock()
        self.handshakes: list[dict[str, str]] = []
        self.client_close_codes: list[int | None] = []
        self.tls = tls
        self.server = serve(self._handle, "127.0.0.1", 0, max_size=None, ping_interval=None, ssl=tls)
        self.port = self.server.socket.getsockname()[1]
        self.thread = threading.Thread(target=self.server.serve_forever, name="ws-backend", daemon=True)

    @property
    def url(self) -> str:
        return f"https://localhost:{self.port}" if self.tls else f"http://127.0.0.1:{self.port}"

    def start(self) -> "WebSocketBackend":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.thread.join(timeout=5)

    def _handle(self, ws: ServerConnection) -> None:
        request = ws.request
        with self.lock:
            self.handshakes.append({name.lower(): value for name, value in request.headers.raw_items()})
        target = urlsplit(request.path)
        query = {key: values[0] for key, values in parse_qs(target.query).items()}
        try:
            if target.path == "/stream":
                for message in ws:
                    for part in range(3):
                        ws.send(f"part {part} of {message}")
                    ws.send("[done]")
            elif target.path == "/greet":
                ws.send("Welcome! I am the refunds bot.")
                ws.send(json.dumps({"type": "menu", "options": ["refund", "exchange"]}))
                for message in ws:
                    ws.send(f"about {message}: noted")
            elif target.path == "/push":
                for n in range(int(query.get("n", "5"))):
                    ws.send(f"push {n}")
                    time.sleep(int(query.get("ms", "50")) / 1000)
                for message in ws:
                    ws.send(message)
            elif target.path == "/v1/realtime":
                self._realtime(ws, query.get("model", "gpt-realtime"))
            elif target.path == "/v1/responses":
                self._responses(ws)
            elif target.path == "/close":
                ws.recv()
                ws.close(int(query.get("code", "4001")), "bye")
            elif target.path == "/drop":
                ws.recv()
                ws.socket.shutdown(socket.SHUT_RDWR)
                ws.socket.close()
            elif target.path == "/flood":
                left = int(query.get("bytes", str(8 << 20)))
                while left > 0:
                    ws.send(b"x" * min(left, 64 << 10))
                    left -= 64 << 10
                for message in ws:
                    ws.send(message)
            else:
                for message in ws:
                    ws.send(message)
        except (ConnectionClosed, OSError):
            pass
        finally:
            with self.lock:
                close = ws.protocol.close_rcvd
                self.client_close_codes.append(close.code if close else None)

    # ---- fake OpenAI protocols ------------------------------------------------------------------

    @staticmethod
    def reply_to(text: str) -> list[str]:
        """The answer's deltas: what the fake model says to `text`."""
        return ["You said: ", text, "."]

    def _realtime(self, ws: ServerConnection, model: str) -> None:
        events = iter(range(1, 1 << 30))

        def send(event: dict) -> None:
            ws.send(json.dumps({"event_id": f"event_{next(events)}", **event}))

        session = {"id": "sess_1", "object": "realtime.session", "type": "realtime", "model": model, "instructions": ""}
        send({"type": "session.created", "session": session})
        user_text = ""
        responses = 0
        for message in ws:
            event = json.loads(message)
            kind = event.get("type")
            if kind == "session.update":
                session.update(event.get("session", {}))
                send({"type": "session.updated", "session": session})
            elif kind == "conversation.item.create":
                item = {"id": f"item_{next(events)}", "status": "completed", **event["item"]}
                user_text = "".join(part.get("text", "") for part in item.get("content", []))
                send({"type": "conversation.item.created", "item": item})
            elif kind == "response.create":
                responses += 1
                rid, item_id = f"resp_{responses}", f"item_out_{responses}"
                send({"type": "response.created", "response": {"id": rid, "object": "realtime.response", "status": "in_progress",
                                                               "output": []}})
                deltas = self.reply_to(user_text)
                for delta in deltas:
                    send({"type": "response.output_text.delta", "response_id": rid, "item_id": item_id, "output_index": 0,
                          "content_index": 0, "delta": delta})
                    if "cut" in user_text:
                        ws.socket.shutdown(socket.SHUT_RDWR)
                        ws.socket.close()
                        return
                text = "".join(deltas)
                send({"type": "response.output_text.done", "response_id": rid, "item_id": item_id, "output_index": 0,
                      "content_index": 0, "text": text})
                send({"type": "response.done", "response": {
                    "id": rid, "object": "realtime.response", "status": "completed",
                    "output": [{"id": item_id, "type": "message", "role": "assistant", "status": "completed",
                                "content": [{"type": "output_text", "text": text}]}],
                    "usage": {"total_tokens": 17, "input_tokens": 12, "output_tokens": 5,
                              "input_token_details": {"cached_tokens": 0, "text_tokens": 12, "audio_tokens": 0},
                              "output_token_details": {"text_tokens": 5, "audio_tokens": 0}}}})

    def _responses(self, ws: ServerConnection) -> None:
        count = 0
        for message in ws:
            event = json.loads(message)
            if event.get("type") != "response.create":
                continue
            count += 1
            user_input = event.get("input")
            text_in = user_input if isinstance(user_input, str) else "".join(
                part.get("text", "") if isinstance(part, dict) else "" for item in user_input or []
                for part in (item.get("content") if isinstance(item.get("content"), list) else [{"text": item.get("content", "")}]))
            rid = f"resp_ws_{count}"
            base = {"id": rid, "object": "response", "created_at": 1700000000, "model": event.get("model", "gpt-test"),
                    "status": "in_progress", "output": []}
            sequence = iter(range(1 << 30))
            ws.send(json.dumps({"type": "response.created", "sequence_number": next(sequence), "response": base}))
            deltas = self.reply_to(text_in)
            for delta in deltas:
                ws.send(json.dumps({"type": "response.output_text.delta", "sequence_number": next(sequence), "item_id": "msg_1",
                                    "output_index": 0, "content_index": 0, "delta": delta}))
            text = "".join(deltas)
            done = {**base, "status": "completed",
                    "output": [{"id": "msg_1", "type": "message", "role": "assistant", "status": "completed",
                                "content": [{"type": "output_text", "text": text, "annotations": []}]}],
                    "usage": {"input_tokens": 9, "output_tokens": 4, "total_tokens": 13}}
            ws.send(json.dumps({"type": "response.completed", "sequence_number": next(sequence), "response": done}))
