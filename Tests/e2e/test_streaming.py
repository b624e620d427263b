"""Bodies are streamed both ways, as they arrive, with backpressure."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import statistics
import subprocess
import time

import requests

from backend import data_sha256
from helpers import RawHTTP, new_tag, wait_until

EVENTS = 20
INTERVAL_MS = 50


def read_sse_events(port: int, target: str, timeout: float = 10) -> tuple[list[dict], list[float], float]:
    """GET an SSE stream on a raw socket. Returns (events, arrival time of each complete event
    relative to the request being sent, time the response head arrived)."""
    with RawHTTP("127.0.0.1", port, timeout=timeout) as c:
        t0 = time.monotonic()
        c.request("GET", target, [("Accept", "text/event-stream")])
        resp = c.read_head()
        t_head = time.monotonic() - t0
        assert resp.status == 200, resp
        assert "text/event-stream" in (resp.header("Content-Type") or "")
        events, times, pending = [], [], b""
        for part in c.iter_body(resp):
            now = time.monotonic() - t0
            pending += part
            while b"\n\n" in pending:
                raw, pending = pending.split(b"\n\n", 1)
                data = [line[6:] for line in raw.split(b"\n") if line.startswith(b"data: ")]
                events.append(json.loads(data[0]))
                times.append(now)
        assert pending == b"", f"trailing partial event {pending!r}"
        return events, times, t_head


def assert_paced(times: list[float], interval: float, label: str) -> None:
    gaps = [b - a for a, b in zip(times, times[1:])]
    spread = times[-1] - times[0]
    described = f"{label}: gaps(ms)={[round(g * 1000) for g in gaps]}"
    # Delivered one by one, not buffered up and flushed together.
    assert spread >= 0.7 * interval * (len(times) - 1), described
    assert sum(1 for g in gaps if g < 0.3 * interval) <= 2, described
    assert 0.7 * interval <= statistics.median(gaps) <= 1.6 * interval, described


def test_sse_events_arrive_one_by_one_through_raw_socket(backend, proxy):
    target = f"/sse?events={EVENTS}&interval_ms={INTERVAL_MS}"
    _, direct_times, _ = read_sse_events(backend.port, target)
    events, times, _ = read_sse_events(proxy.port, target)
    assert [e["i"] for e in events] == list(range(EVENTS))
    assert_paced(times, INTERVAL_MS / 1000, "through proxy")
    # Time to the first event is about the same as talking to the backend directly.
    assert times[0] - direct_times[0] < 0.1, (times[0], direct_times[0])


def test_sse_events_arrive_one_by_one_through_requests(proxy):
    t0 = time.monotonic()
    times, buf = [], b""
    with requests.get(f"{proxy.url}/sse?events={EVENTS}&interval_ms={INTERVAL_MS}", stream=True, timeout=10) as r:
        assert r.status_code == 200
        for part in r.iter_content(chunk_size=None):
            buf += part
            while b"\n\n" in buf:
                _, buf = buf.split(b"\n\n", 1)
                times.append(time.monotonic() - t0)
    assert len(times) == EVENTS
    assert_paced(times, INTERVAL_MS / 1000, "requests iter_content")


def test_sse_events_arrive_one_by_one_through_curl(proxy):
    t0 = time.monotonic()
    proc = subprocess.Popen(["curl", "-sS", "-N", "--http1.1", f"{proxy.url}/sse?events={EVENTS}&interval_ms={INTERVAL_MS}"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    times = []
    try:
        for line in proc.stdout:
            if line.startswith(b"data: "):
                times.append(time.monotonic() - t0)
    finally:
        proc.wait(10)
    assert proc.returncode == 0, proc.stderr.read()
    assert len(times) == EVENTS
    assert_paced(times, INTERVAL_MS / 1000, "curl -N")


def test_chunked_upload_is_forwarded_as_it_arrives(backend, proxy):
    """The backend receives the first chunk while the client still holds back the rest."""
    tag = new_tag()
    with RawHTTP("127.0.0.1", proxy.port) as c:
        c.request("POST", f"/upload?tag={tag}", [("Transfer-Encoding", "chunked"),
                                                  ("Content-Type", "application/octet-stream")])
        first = b"first chunk of a long upload"
        c.send(b"%x\r\n%s\r\n" % (len(first), first))
        try:
            wait_until(lambda: backend.snapshot()["chunk_events"].get(tag), timeout=5,
                       message="the backend to receive the first chunk before the client sent the rest")
        finally:
            rest = [b"second", b"third" * 1000]
            for part in rest:
                c.send(b"%x\r\n%s\r\n" % (len(part), part))
            c.send(b"0\r\n\r\n")
        r = c.read_response()
    assert r.status == 200, r
    body = first + b"".join(rest)
    assert r.json()["body_length"] == len(body)
    assert r.json()["body_sha256"] == hashlib.sha256(body).hexdigest()


def test_content_length_upload_is_forwarded_as_it_arrives(backend, proxy):
    tag = new_tag()
    total = 3 * 1024 * 1024
    first = b"x" * (256 * 1024)
    with RawHTTP("127.0.0.1", proxy.port) as c:
        c.request("POST", f"/upload?tag={tag}", [("Content-Length", str(total))])
        c.send(first)
        try:
            wait_until(lambda: sum(backend.snapshot()["chunk_events"].get(tag, [])) > 0, timeout=5,
                       message="the backend to receive body bytes before the client sent them all")
        finally:
            c.send(b"y" * (total - len(first)))
        r = c.read_response()
    assert r.status == 200, r
    assert r.json()["body_length"] == total


def test_slow_reader_of_large_response_does_not_grow_proxy_memory(backend, proxy):
    n = 96 * 1024 * 1024
    # Warm up the proxy's buffers and pools with a fast transfer first.
    warm = requests.get(f"{proxy.url}/bytes?n={8 * 1024 * 1024}", timeout=30)
    assert len(warm.content) == 8 * 1024 * 1024
    baseline = proxy.rss_kib()

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", proxy.port))
    sock.sendall(f"GET /bytes?n={n}&seed=3 HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    h = hashlib.sha256()
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(4096)
    head, _, body_start = head.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    assert f"content-length: {n}".encode() in head.lower(), head
    received = len(body_start)
    h.update(body_start)

    # Read slowly (~400 KiB/s) for 3 seconds while watching the proxy's memory.
    peak = baseline
    end = time.monotonic() + 3
    while time.monotonic() < end:
        data = sock.recv(8 * 1024)
        h.update(data)
        received += len(data)
        peak = max(peak, proxy.rss_kib())
        time.sleep(0.02)
    growth_mib = (peak - baseline) / 1024
    assert growth_mib < 8, (f"proxy RSS grew by {growth_mib:.1f} MiB while a client read slowly "
                            f"({received} of {n} bytes read): no backpressure")

    # Then read the rest at full speed: nothing was lost.
    while received < n:
        data = sock.recv(1 << 20)
        assert data, f"connection closed after {received} of {n} bytes"
        h.update(data)
        received += len(data)
    sock.close()
    assert received == n
    assert h.hexdigest() == data_sha256(n, seed=3)


def test_upload_to_a_slow_backend_does_not_grow_proxy_memory(backend, start_tracegate):
    """Backpressure the other way: the backend does not read for 3 s while the client
    pushes a large body; the proxy must not buffer it. (max_body_bytes 0: no limit.)"""
    import threading

    proxy = start_tracegate(backend.url, max_body_bytes="0")
    n = 96 * 1024 * 1024
    tag = new_tag()
    warm = requests.post(f"{proxy.url}/upload?tag=warm", data=b"w" * (8 * 1024 * 1024), timeout=30)
    assert warm.status_code == 200
    baseline = proxy.rss_kib()
    sent = [0]
    c = RawHTTP("127.0.0.1", proxy.port, timeout=30)
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
    c.request("POST", f"/upload?tag={tag}&read_delay_ms=3000", [("Content-Length", str(n))])
    piece = b"u" * (256 * 1024)

    def push():
        try:
            while sent[0] < n:
                c.sock.sendall(piece[: n - sent[0]])
                sent[0] += min(len(piece), n - sent[0])
        except OSError:
            pass

    pusher = threading.Thread(target=push, daemon=True)
    pusher.start()
    peak = baseline
    end = time.monotonic() + 2.5
    while time.monotonic() < end:
        peak = max(peak, proxy.rss_kib())
        time.sleep(0.02)
    growth_mib = (peak - baseline) / 1024
    try:
        assert growth_mib < 8, (f"proxy RSS grew by {growth_mib:.1f} MiB while the backend was not reading "
                                f"({sent[0]} of {n} bytes pushed): no backpressure on uploads")
        pusher.join(30)
        r = c.read_response()
        assert r.status == 200, r
        assert r.json()["body_length"] == n
    finally:
        c.close()


def writable_heaps_mib(pid: int) -> list[tuple[float, float]]:
    """(writable size, resident size) in MiB of each glibc thread heap: a mapping that starts on a
    64 MiB boundary, writable, anonymous and unnamed."""
    heaps, current = [], None
    with open(f"/proc/{pid}/smaps") as smaps:
        for line in smaps:
            fields = line.split()
            if "-" in fields[0] and len(fields) >= 5 and not fields[0].endswith(":"):
                start, end = (int(x, 16) for x in fields[0].split("-"))
                current = None
                if start % (64 << 20) == 0 and fields[1].startswith("rw") and len(fields) == 5:
                    current = [(end - start) / (1 << 20), 0.0]
                    heaps.append(current)
            elif current is not None and fields[0] == "Rss:":
                current[1] = int(fields[1]) / 1024
    return [(size, rss) for size, rss in heaps]


def test_each_event_loop_heap_is_writable_ahead_for_a_crowd_and_holds_no_memory_for_it(backend, start_tracegate):
    # glibc grows a thread's heap one mprotect call per page or so: a fresh process taking a crowd of
    # streams made 4 such calls per stream. Each event loop's heap is made writable at start instead,
    # except under strict overcommit (glibc then gives a trimmed heap's pages up, writability too)
    # or with MALLOC_ARENA_MAX set (loops may share an arena).
    with open("/proc/sys/vm/overcommit_memory") as mode:
        left_to_glibc = mode.read().strip() == "2" or "MALLOC_ARENA_MAX" in os.environ
    tg = start_tracegate(backend.url, threads="2")
    assert requests.get(f"{tg.url}/echo", timeout=5).status_code == 200
    heaps = writable_heaps_mib(tg.pid)
    reserved = [h for h in heaps if h[0] >= 48]
    if left_to_glibc:
        assert reserved == [], f"heaps (writable MiB, resident MiB): {heaps}"
        return
    assert len(reserved) >= 2, f"heaps (writable MiB, resident MiB): {heaps}"
    # Untrimmed, the 64 KiB blocks' headers alone would keep 3 MiB resident per heap.
    assert all(rss < 1.5 for _, rss in reserved), f"the reservation stayed resident: {heaps}"
    assert tg.rss_kib() < 64 * 1024, f"RSS {tg.rss_kib()} KiB"
