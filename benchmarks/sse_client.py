"""Raw-socket SSE client: time to first event and how the events arrive (stdlib only).

One measurement opens a new TCP connection, sends a GET, and timestamps every recv().
It decodes the HTTP framing (chunked, content-length or close-delimited) so it sees the
event stream exactly as a client would, whatever re-chunking a proxy does, and reports:

- ttfe_ms: from just before connect() to the recv() that brought the first `data:` bytes;
- events: complete events (`\\n\\n`-terminated) received;
- arrivals: distinct recv() calls that completed at least one event; max_per_read: the
  most events completed by one recv() (1 means no two events were coalesced);
- gaps_ms: time between consecutive event completions.

    python3 benchmarks/sse_client.py 127.0.0.1:PORT [/path?n=20&gap_ms=50]
"""

from __future__ import annotations

import json
import socket
import sys
import time


class _Decoder:
    """Incremental HTTP/1.1 response decoder that keeps only the body."""

    def __init__(self) -> None:
        self.raw = b""
        self.status = 0
        self.head_done = False
        self.mode = ""  # chunked | length | close
        self.remaining = 0  # bytes left in the current chunk (or in the body, for length)
        self.chunk_state = "size"  # size | data | crlf | trailer | done
        self.body = bytearray()
        self.done = False

    def feed(self, data: bytes) -> None:
        self.raw += data
        if not self.head_done:
            end = self.raw.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.raw[:end].decode("latin-1").split("\r\n")
            self.raw = self.raw[end + 4:]
            self.head_done = True
            self.status = int(head[0].split(" ")[1])
            hdrs = {}
            for line in head[1:]:
                if ":" in line:
                    k, v = line.split(":", 1)
                    hdrs[k.strip().lower()] = v.strip().lower()
            if "chunked" in hdrs.get("transfer-encoding", ""):
                self.mode = "chunked"
            elif "content-length" in hdrs:
                self.mode, self.remaining = "length", int(hdrs["content-length"])
                self.done = self.remaining == 0
            else:
                self.mode = "close"
        if self.mode == "close":
            self.body += self.raw
            self.raw = b""
        elif self.mode == "length":
            take = self.raw[: self.remaining]
            self.body += take
            self.remaining -= len(take)
            self.raw = self.raw[len(take):]
            self.done = self.remaining == 0
        else:
            self._chunked()

    def _chunked(self) -> None:
        while self.raw and not self.done:
            if self.chunk_state == "size":
                nl = self.raw.find(b"\r\n")
                if nl < 0:
                    return
                size = int(self.raw[:nl].split(b";")[0].strip(), 16)
                self.raw = self.raw[nl + 2:]
                self.remaining = size
                self.chunk_state = "data" if size else "trailer"
            elif self.chunk_state == "data":
                take = self.raw[: self.remaining]
                self.body += take
                self.remaining -= len(take)
                self.raw = self.raw[len(take):]
                if self.remaining == 0:
                    self.chunk_state = "crlf"
            elif self.chunk_state == "crlf":
                if len(self.raw) < 2:
                    return
                self.raw = self.raw[2:]
                self.chunk_state = "size"
            elif self.chunk_state == "trailer":
                nl = self.raw.find(b"\r\n")
                if nl < 0:
                    return
                line, self.raw = self.raw[:nl], self.raw[nl + 2:]
                if not line:
                    self.done = True


def measure(host: str, port: int, path: str, expect_events: int,
            timeout_s: float = 10.0, stop_after_first: bool = False) -> dict:
    """One SSE request on a new connection; see the module docstring for the fields."""
    req = (f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
           f"Accept: text/event-stream\r\nUser-Agent: tracegate-bench\r\n\r\n").encode()
    dec = _Decoder()
    deadline = time.monotonic() + timeout_s
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.settimeout(timeout_s)
    reads = 0
    ttfe = None
    event_times: list[float] = []
    per_read: list[int] = []
    error = None
    try:
        t0 = time.perf_counter()
        s.connect((host, port))
        s.sendall(req)
        while time.monotonic() < deadline:
            s.settimeout(max(0.001, deadline - time.monotonic()))
            data = s.recv(65536)
            now = time.perf_counter()
            if not data:
                break
            reads += 1
            dec.feed(data)
            if ttfe is None and b"data:" in dec.body:
                ttfe = now - t0
            complete = dec.body.count(b"\n\n")
            new = complete - len(event_times)
            if new > 0:
                per_read.append(new)
                event_times.extend([now - t0] * new)
            if stop_after_first and event_times:
                break
            if dec.done or len(event_times) >= expect_events:
                break
        else:
            error = "timeout"
    except OSError as e:
        error = f"{type(e).__name__}: {e}"
    finally:
        s.close()
    gaps = [(b - a) * 1000 for a, b in zip(event_times, event_times[1:])]
    return {
        "status": dec.status,
        "ttfe_ms": ttfe * 1000 if ttfe is not None else None,
        "events": len(event_times),
        "arrivals": len(per_read),
        "max_per_read": max(per_read) if per_read else 0,
        "reads": reads,
        "gaps_ms": [round(g, 3) for g in gaps],
        "error": error,
    }


if __name__ == "__main__":
    hp = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:8099"
    path = sys.argv[2] if len(sys.argv) > 2 else "/v1/chat/completions?stream=true&n=20&gap_ms=50"
    h, _, p = hp.rpartition(":")
    print(json.dumps(measure(h, int(p), path, 20), indent=1))
