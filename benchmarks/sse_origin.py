"""SSE origin for the streaming measurements: a small HTTP/1.1 asyncio server (stdlib only).

Every GET answers `200 text/event-stream` with chunked framing and sends N `data:` events
(chat-completion chunks), each in its own chunk and its own socket write, GAP ms apart,
timed from the start of the response (no drift). The response head and the first event go
out in one write, so the time to first event is the origin's minimum. Keep-alive is
supported, so proxies can pool their upstream connections.

Query parameters: n (events, default 20), gap_ms (default 50). GET /healthz answers 200.

    python3 benchmarks/sse_origin.py --listen 127.0.0.1:PORT
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import urllib.parse

MAX_HEAD = 64 * 1024


def event_bytes(i: int) -> bytes:
    payload = {
        "id": "chatcmpl-9xKq2bT7cQ4mZ1vN8pLwR3sYdE6f",
        "object": "chat.completion.chunk",
        "created": 1718000000,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [{"index": 0, "delta": {"content": f" token{i}"}, "finish_reason": None}],
    }
    data = b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(data), data)


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    loop = asyncio.get_running_loop()
    try:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                return
            lines = head.decode("latin-1").split("\r\n")
            try:
                method, target, version = lines[0].split(" ", 2)
            except ValueError:
                return
            headers = {}
            for line in lines[1:]:
                if ":" in line:
                    k, v = line.split(":", 1)
                    headers[k.strip().lower()] = v.strip()
            # Discard a request body if one was sent (GET normally has none).
            if "content-length" in headers:
                await reader.readexactly(int(headers["content-length"]))
            elif "chunked" in headers.get("transfer-encoding", "").lower():
                while True:
                    size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
                    await reader.readexactly(size + 2) if size else await reader.readline()
                    if size == 0:
                        break
            close = (headers.get("connection", "").lower() == "close"
                     or version.upper() == "HTTP/1.0")
            url = urllib.parse.urlsplit(target)
            if url.path == "/healthz":
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n"
                             b"Content-Type: text/plain\r\n\r\nok")
                await writer.drain()
            else:
                q = urllib.parse.parse_qs(url.query)
                n = max(0, min(10_000, int(q.get("n", ["20"])[0])))
                gap = max(0.0, min(10_000.0, float(q.get("gap_ms", ["50"])[0]))) / 1000.0
                head_out = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                            b"Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n")
                head_out += b"Connection: close\r\n\r\n" if close else b"\r\n"
                t0 = loop.time()
                pending = head_out
                for i in range(n):
                    if i:
                        delay = t0 + i * gap - loop.time()
                        if delay > 0:
                            await asyncio.sleep(delay)
                    chunk = pending + event_bytes(i)
                    pending = b""
                    if i == n - 1:
                        chunk += b"0\r\n\r\n"
                    writer.write(chunk)
                    await writer.drain()
                if n == 0:
                    writer.write(pending + b"0\r\n\r\n")
                    await writer.drain()
            if close:
                return
    except (ConnectionError, asyncio.IncompleteReadError, ValueError):
        return
    finally:
        writer.close()


async def main(host: str, port: int) -> None:
    server = await asyncio.start_server(handle, host, port, backlog=1024, limit=MAX_HEAD)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"sse origin listening on {host}:{port}", flush=True)
    async with server:
        await stop.wait()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--listen", default="127.0.0.1:8099")
    args = ap.parse_args()
    h, _, p = args.listen.rpartition(":")
    try:
        asyncio.run(main(h or "127.0.0.1", int(p)))
    except KeyboardInterrupt:
        sys.exit(0)
