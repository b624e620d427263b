"""Hostile WebSocket frames through nginx and tracegate, side by side: after the 101 both are
transparent tunnels, so whatever a client or a server sends — unmasked, reserved opcodes, control
frames too long or fragmented, lengths no one will send, invalid UTF-8, bytes that are no frames at
all — must reach the other end byte for byte, and the proxy must serve the next connection. A raw
origin of ours accepts the handshake and records every byte; tracegate traces the turns meanwhile."""

from __future__ import annotations

import base64
import hashlib
import socket
import threading

import pytest

from helpers import wait_until
from nginx_harness import NginxFactory

KEY = "dGhlIHNhbXBsZSBub25jZQ=="
MASK = b"\x01\x02\x03\x04"


def masked(opcode_byte: int, payload: bytes) -> bytes:
    assert len(payload) < 126
    return bytes([opcode_byte, 0x80 | len(payload)]) + MASK + bytes(b ^ MASK[i % 4] for i, b in enumerate(payload))


CLIENT_SENDS = (
    masked(0x81, b"hi")  # a proper text frame
    + b"\x81\x05hello"  # unmasked client frame
    + masked(0x83, b"op3")  # reserved opcode
    + masked(0x09, b"p" * 125)[:2] + b"\x00" * 4 + b"x" * 125  # a ping of 125 bytes, zero mask
    + bytes([0x89, 0x80 | 126, 0, 200]) + MASK + b"y" * 200  # control frame longer than 125
    + masked(0x09, b"frag")[:1].replace(b"\x89", b"\x09") + masked(0x09, b"frag")[1:]  # fragmented ping
    + masked(0x81, b"\xff\xfe bad utf-8")
    + masked(0xC1, b"rsv bits")  # RSV1 without an extension
    + b"GET / HTTP/1.1\r\nHost: smuggled\r\n\r\n"  # no frame at all
    + bytes([0x82, 0xFF]) + b"\x7f" + b"\xff" * 7 + MASK + b"z" * 3000  # 2^63-1 bytes announced
)
SERVER_SENDS = (
    b"\x81\x02ok"
    + masked(0x81, b"masked from server")
    + b"\x8f\x00"  # reserved control opcode
    + b"\x88\x01\x03"  # close with a 1-byte body
    + b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
)


class RawWebSocketOrigin:
    """Accepts one handshake per connection, answers 101, sends SERVER_SENDS, and records every byte
    it receives after the handshake until the client closes."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.received: list[bytes] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(10)
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                head += chunk
            head, _, rest = head.partition(b"\r\n\r\n")
            accept = base64.b64encode(hashlib.sha1((KEY + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest())
            conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                         b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n" + SERVER_SENDS)
            got = bytearray(rest)
            try:
                while chunk := conn.recv(65536):
                    got += chunk
            except OSError:
                pass
            with self.lock:
                self.received.append(bytes(got))

    def close(self) -> None:
        self.listener.close()


def exchange_hostile_frames(port: int) -> bytes:
    """Handshake, send CLIENT_SENDS, half-close; returns what came back after the 101."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.sendall(f"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  f"Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = c.recv(4096)
            assert chunk, data
            data += chunk
        head, _, back = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        c.sendall(CLIENT_SENDS)
        c.shutdown(socket.SHUT_WR)
        back = bytearray(back)
        try:
            while len(back) < len(SERVER_SENDS) and (chunk := c.recv(65536)):
                back += chunk
        except OSError:
            pass
        return bytes(back)


@pytest.mark.parametrize("kind", ["nginx", "tracegate"])
def test_hostile_frames_pass_byte_for_byte_both_ways_and_the_proxy_serves_on(kind, tmp_path, start_tracegate):
    origin = RawWebSocketOrigin()
    nginxes = NginxFactory(tmp_path)
    try:
        if kind == "nginx":
            port = nginxes(origin.port, websocket=True).port
        else:
            port = start_tracegate(f"http://127.0.0.1:{origin.port}").port
        back = exchange_hostile_frames(port)
        assert back == SERVER_SENDS, f"{kind}: the client got {back!r}"
        # The origin records what it got once the client's half-close reached it and the tunnel closed.
        wait_until(lambda: len(origin.received) == 1, 10, message=f"{kind}: the origin to see the end of the tunnel")
        assert origin.received[0] == CLIENT_SENDS, f"{kind}: the origin got {origin.received[0][:200]!r}…"
        assert exchange_hostile_frames(port) == SERVER_SENDS, f"{kind}: the next connection is served as well"
    finally:
        nginxes.teardown()
        origin.close()
