"""Admin endpoints, and graceful shutdown on SIGTERM/SIGINT."""

from __future__ import annotations

import signal
import socket
import threading
import time

import requests

from helpers import RawHTTP, new_tag, wait_until


def test_admin_healthz_and_readyz_answer_200(proxy):
    assert requests.get(f"{proxy.admin_url}/healthz", timeout=2).status_code == 200
    assert requests.get(f"{proxy.admin_url}/readyz", timeout=2).status_code == 200


def test_public_port_forwards_healthz_and_readyz_to_the_backend(backend, proxy):
    for path in ("/healthz", "/readyz"):
        r = requests.get(f"{proxy.url}{path}", timeout=2)
        assert r.status_code == 200
        assert r.headers.get("X-Backend") == backend.name, f"{path} on the public port was not forwarded"
        assert r.json()["path"] == path
    assert backend.snapshot()["requests"] == 2


def test_admin_port_does_not_forward_to_the_backend(backend, proxy):
    r = requests.get(f"{proxy.admin_url}/echo", timeout=2)
    assert r.status_code == 404
    assert "X-Backend" not in r.headers
    assert backend.snapshot()["requests"] == 0


class SSEReader(threading.Thread):
    """Reads one SSE stream on its own connection and records how it ended."""

    def __init__(self, port: int, events: int, interval_ms: int):
        super().__init__(daemon=True)
        self.port, self.events, self.interval_ms = port, events, interval_ms
        self.received = 0
        self.first = threading.Event()
        self.complete = False  # the terminating chunk arrived
        self.error: Exception | None = None

    def run(self) -> None:
        try:
            with RawHTTP("127.0.0.1", self.port, timeout=15) as c:
                c.request("GET", f"/sse?events={self.events}&interval_ms={self.interval_ms}")
                resp = c.read_head()
                assert resp.status == 200, resp
                pending = b""
                for part in c.iter_body(resp):
                    pending += part
                    while b"\n\n" in pending:
                        _, pending = pending.split(b"\n\n", 1)
                        self.received += 1
                        self.first.set()
                self.complete = True
        except Exception as e:
            self.error = e
        finally:
            self.first.set()


def connection_refused(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return False
    except ConnectionRefusedError:
        return True


def readyz_status(tg) -> int | None:
    try:
        return requests.get(f"{tg.admin_url}/readyz", timeout=0.5).status_code
    except requests.RequestException:
        return None


def test_sigterm_drains_in_flight_streams_then_exits_zero(backend, start_tracegate):
    tg = start_tracegate(backend.url, grace="10s")
    readers = [SSEReader(tg.port, events=20, interval_ms=100) for _ in range(4)]
    for r in readers:
        r.start()
    for r in readers:
        assert r.first.wait(5) and r.error is None, r.error

    t_term = time.monotonic()
    tg.signal(signal.SIGTERM)

    # While draining: /readyz says 503, and new connections are refused.
    statuses = []
    wait_until(lambda: statuses.append(readyz_status(tg)) or statuses[-1] == 503, timeout=1.5,
               message="/readyz to answer 503 during the drain")
    wait_until(lambda: connection_refused(tg.port), timeout=1.5,
               message="new connections to be refused after SIGTERM")
    assert tg.running(), "tracegate exited before its in-flight streams finished"

    for r in readers:
        r.join(10)
    results = [(r.received, r.complete, repr(r.error)) for r in readers]
    assert all(r.received == 20 and r.complete for r in readers), f"streams cut by shutdown: {results}"
    t_streams_done = time.monotonic()

    code = tg.wait_exit(5)
    assert code == 0, f"exit code {code}"
    t_exit = time.monotonic()
    assert t_exit - t_term < 10, "exit took longer than the grace period"
    assert t_exit - t_streams_done < 2, f"exited {t_exit - t_streams_done:.1f}s after the last stream ended"


def test_sigterm_cuts_streams_still_running_when_the_grace_period_ends(backend, start_tracegate):
    tg = start_tracegate(backend.url, grace="1s")
    reader = SSEReader(tg.port, events=100, interval_ms=100)  # 10 s: longer than the grace period
    reader.start()
    assert reader.first.wait(5)
    t_term = time.monotonic()
    tg.signal(signal.SIGTERM)
    code = tg.wait_exit(5)
    elapsed = time.monotonic() - t_term
    assert code is not None, "tracegate did not exit 5s after SIGTERM with a 1s grace period"
    assert 0.8 <= elapsed <= 3, f"exited {elapsed:.2f}s after SIGTERM with a 1s grace period (code {code})"
    reader.join(5)
    assert not reader.complete and reader.received < 100


def test_idle_keepalive_connections_do_not_delay_shutdown(backend, start_tracegate):
    tg = start_tracegate(backend.url, grace="10s")
    conns = []
    for _ in range(3):
        c = RawHTTP("127.0.0.1", tg.port)
        c.request("GET", "/echo")
        assert c.read_response().status == 200
        conns.append(c)  # left open and idle
    t0 = time.monotonic()
    tg.signal(signal.SIGTERM)
    code = tg.wait_exit(5)
    elapsed = time.monotonic() - t0
    try:
        assert code == 0, f"exit code {code} (None: still running 5s after SIGTERM)"
        assert elapsed < 2, f"idle keep-alive connections held shutdown for {elapsed:.1f}s"
        for c in conns:
            assert c.is_closed_by_peer(timeout=1)
    finally:
        for c in conns:
            c.close()


def test_sigint_shuts_down_gracefully(backend, start_tracegate):
    tg = start_tracegate(backend.url)
    assert requests.get(f"{tg.url}/echo", timeout=2).status_code == 200
    tg.signal(signal.SIGINT)
    assert tg.wait_exit(3) == 0


def test_requests_accepted_before_sigterm_all_complete(backend, start_tracegate):
    """A small load of plain requests across SIGTERM: every request the proxy took in (so the
    backend saw it) gets its full 200 answer; the others are refused, never half-served."""
    tg = start_tracegate(backend.url, grace="10s")
    outcomes: dict[str, str] = {}
    lock = threading.Lock()
    stop = threading.Event()

    def client() -> None:
        refusals = 0
        while not stop.is_set() and refusals < 3:
            tag = new_tag()
            try:
                c = RawHTTP("127.0.0.1", tg.port, timeout=5)
            except ConnectionRefusedError:
                refusals += 1
                time.sleep(0.02)
                continue
            try:
                c.request("GET", f"/echo?delay_ms=150&tag={tag}")
                r = c.read_response()
                outcome = "ok" if r.status == 200 and r.json()["query"].endswith(tag) else f"status {r.status}"
            except Exception as e:
                outcome = f"error {e!r}"
            finally:
                c.close()
            with lock:
                outcomes[tag] = outcome

    threads = [threading.Thread(target=client, daemon=True) for _ in range(6)]
    for t in threads:
        t.start()
    wait_until(lambda: len(backend.snapshot()["completed_tags"]) >= 12, timeout=5)
    tg.signal(signal.SIGTERM)
    for t in threads:
        t.join(8)
    stop.set()
    code = tg.wait_exit(5)

    seen = set(backend.snapshot()["seen_tags"])
    failed_after_acceptance = {t: o for t, o in outcomes.items() if t in seen and o != "ok"}
    assert not failed_after_acceptance, f"requests the backend saw but the client did not get: " \
                                        f"{failed_after_acceptance}"
    ok = sum(1 for o in outcomes.values() if o == "ok")
    assert ok >= 12
    # Requests never taken in must fail cleanly at the connection (reset/refused), not with a 5xx.
    not_seen = {t: o for t, o in outcomes.items() if t not in seen}
    assert not any(o.startswith("status") for o in not_seen.values()), not_seen
    assert code == 0, f"exit code {code}"
