"""A small WebSocket chat backend (the `websockets` library's threaded server) for the tunnel tests.

Paths:
  /echo             each message is sent back as it came (text or binary)
  /stream           each message is answered with three parts, then "[done]"
  /push?n=&ms=      n messages sent unasked, ms apart; then echoes
  /close?code=      after the first message, closes with that code and reason "bye"
  /flood?bytes=     sends that many bytes in 64 KiB binary messages without reading, then echoes
  /drop             after the first message, drops the TCP connection without a close frame
Every handshake's request headers and every close code a client sent are recorded.
"""

from __future__ import annotations

import socket
import threading
import time
from urllib.parse import parse_qs, urlsplit

from websockets.exceptions import ConnectionClosed
from websockets.sync.server import ServerConnection, serve


class WebSocketBackend:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.handshakes: list[dict[str, str]] = []
        self.client_close_codes: list[int | None] = []
        self.server = serve(self._handle, "127.0.0.1", 0, max_size=None, ping_interval=None)
        self.port = self.server.socket.getsockname()[1]
        self.thread = threading.Thread(target=self.server.serve_forever, name="ws-backend", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

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
            elif target.path == "/push":
                for n in range(int(query.get("n", "5"))):
                    ws.send(f"push {n}")
                    time.sleep(int(query.get("ms", "50")) / 1000)
                for message in ws:
                    ws.send(message)
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
        except ConnectionClosed:
            pass
        finally:
            with self.lock:
                close = ws.protocol.close_rcvd
                self.client_close_codes.append(close.code if close else None)
