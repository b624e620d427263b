"""A small Socket.IO chat backend (python-socketio on uvicorn), shaped like Chainlit's.

Events it answers:
  client_message {"content": text}   "stream_start", one "stream_token" per word, "stream_end"
                                      with the answer (the words reversed); the emit's ack gets
                                      {"ok": true}
  upload <bytes>                      "uploaded" {"size": n}: a binary event (a placeholder packet
                                      and a binary attachment frame)
  ask_me {"question": text}           the server asks back ("ask", with an ack); the client's ack
                                      is answered with "thanks" {"answer": …}
Every connection's handshake headers are recorded.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import socketio
import uvicorn


class SocketIOBackend:
    def __init__(self, ping_interval: float = 25) -> None:
        self.sio = socketio.AsyncServer(async_mode="asgi", cors_allowed_origins="*", ping_interval=ping_interval)
        self.app = socketio.ASGIApp(self.sio)
        self.handshakes: list[dict] = []
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning", ws="websockets-sansio",
                                lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="socketio-backend", daemon=True)
        self._register()

    def _register(self) -> None:
        sio = self.sio

        @sio.event
        async def connect(sid, environ, auth=None):
            self.handshakes.append({k: v for k, v in environ.items() if k.startswith("HTTP_")})

        @sio.event
        async def client_message(sid, data):
            words = data["content"].split()
            await sio.emit("stream_start", {"id": "m1"}, to=sid)
            for word in words:
                await sio.emit("stream_token", {"id": "m1", "token": word}, to=sid)
            await sio.emit("stream_end", {"id": "m1", "output": " ".join(reversed(words))}, to=sid)
            return {"ok": True}

        @sio.event
        async def upload(sid, data):
            await sio.emit("uploaded", {"size": len(data)}, to=sid)

        @sio.event
        async def ask_me(sid, data):
            answer = await sio.call("ask", {"question": data["question"]}, to=sid, timeout=5)
            await sio.emit("thanks", {"answer": answer}, to=sid)

    def start(self) -> "SocketIOBackend":
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the Socket.IO backend did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=5)


if __name__ == "__main__":
    backend = SocketIOBackend().start()
    print(backend.url, flush=True)
    asyncio.run(asyncio.sleep(3600))
