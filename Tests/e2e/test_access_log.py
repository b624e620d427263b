"""The access log: one line per request on stdout, as text or JSON."""

from __future__ import annotations

import json
import re

import requests

from helpers import free_port, raw_request, wait_until


def wait_lines(tg, n: int) -> list[str]:
    return wait_until(lambda: len(tg.stdout_lines()) >= n and tg.stdout_lines(), timeout=3,
                      message=f"{n} access log lines")


def duration_seconds(value) -> float:
    """Accept a number of seconds or milliseconds, or a string with a unit."""
    if isinstance(value, str):
        m = re.fullmatch(r"\s*([0-9.]+)\s*(ms|s|us|µs)?\s*", value)
        assert m, f"unparseable duration {value!r}"
        number, unit = float(m.group(1)), m.group(2) or "s"
        return number / {"s": 1, "ms": 1e3, "us": 1e6, "µs": 1e6}[unit]
    assert isinstance(value, (int, float)), value
    return float(value)


def test_json_access_log_has_one_parseable_line_per_request(backend, start_tracegate):
    tg = start_tracegate(backend.url, access_log="json")
    raw_request(tg.port, "GET", "/bytes?n=1234", [("X-Request-ID", "log-get")])
    raw_request(tg.port, "POST", "/status/404?body=missing", [("X-Request-ID", "log-post")], body=b"abc")
    raw_request(tg.port, "DELETE", "/echo?delay_ms=300", [("X-Request-ID", "log-slow")])
    lines = wait_lines(tg, 3)
    assert len(lines) == 3, lines
    entries = [json.loads(line) for line in lines]
    required = {"method", "path", "status", "bytes_in", "bytes_out", "duration_ms", "request_id"}
    missing = [sorted(required - set(e)) for e in entries]
    assert not any(missing), f"JSON access log entries lack keys {missing[0]}: {entries[0]}"
    by_id = {e["request_id"]: e for e in entries}
    assert set(by_id) == {"log-get", "log-post", "log-slow"}, entries

    get, post, slow = by_id["log-get"], by_id["log-post"], by_id["log-slow"]
    assert (get["method"], int(get["status"]), int(get["bytes_out"])) == ("GET", 200, 1234), get
    assert get["path"].startswith("/bytes")
    assert (post["method"], int(post["status"]), int(post["bytes_out"])) == ("POST", 404, len(b"missing")), post
    assert int(post["bytes_in"]) == 3, post
    assert post["path"].startswith("/status/404")
    assert slow["method"] == "DELETE" and int(slow["status"]) == 200
    # The slow request took at least its 300 ms delay.
    assert 300 <= slow["duration_ms"] < 5000, slow
    assert slow["duration_ms"] > get["duration_ms"], (slow, get)


def test_json_access_log_records_proxy_generated_errors(start_tracegate):
    tg = start_tracegate(f"http://127.0.0.1:{free_port()}", access_log="json")
    r = raw_request(tg.port, "GET", "/down")
    assert r.status == 502
    entry = json.loads(wait_lines(tg, 1)[0])
    assert int(entry["status"]) == 502
    assert entry["request_id"] == r.header("X-Request-ID")


def test_text_access_log_has_one_line_per_request_with_the_fields(backend, proxy):
    ids = []
    for i, path in enumerate(["/echo?first", "/bytes?n=4321", "/status/503?body=down"]):
        rid = f"text-log-{i}"
        ids.append(rid)
        raw_request(proxy.port, "GET", path, [("X-Request-ID", rid)])
    lines = wait_lines(proxy, 3)
    assert len(lines) == 3, lines
    for line, rid in zip(lines, ids):
        assert rid in line, line
    assert "GET" in lines[0] and "/echo" in lines[0] and " 200" in lines[0], lines[0]
    assert "GET" in lines[1] and "/bytes" in lines[1] and " 200" in lines[1], lines[1]
    assert re.search(r"\b4321\b", lines[1]), f"response size 4321 missing: {lines[1]}"
    assert "GET" in lines[2] and "/status/503" in lines[2] and " 503" in lines[2], lines[2]
    assert re.search(r"\b\d+(\.\d+)?\s*(ms|s|µs|us)?\b", lines[0])


def test_access_log_off_writes_nothing_to_stdout(backend, start_tracegate):
    tg = start_tracegate(backend.url, access_log="off")
    for _ in range(3):
        assert requests.get(f"{tg.url}/echo", timeout=2).status_code == 200
    tg.stop()
    assert tg.stdout_lines() == []


def test_access_log_goes_to_stdout_not_stderr(backend, start_tracegate):
    tg = start_tracegate(backend.url, access_log="json")
    raw_request(tg.port, "GET", "/echo", [("X-Request-ID", "where-does-it-go")])
    wait_lines(tg, 1)
    tg.stop()
    assert [line for line in tg.stdout_lines() if "where-does-it-go" in line] != []


def test_every_line_of_a_burst_is_written_by_the_time_sigterm_exits(backend, start_tracegate):
    """The log is buffered and flushed on a timer; SIGTERM must flush what is still buffered."""
    import http.client
    tg = start_tracegate(backend.url)  # the default: text access log
    conn = http.client.HTTPConnection("127.0.0.1", tg.port, timeout=5)
    for n in range(1500):
        conn.request("GET", f"/bytes?n=10&burst={n}", headers={"X-Request-ID": f"burst-{n}"})
        r = conn.getresponse()
        r.read()
        assert r.status == 200
    conn.close()
    assert tg.stop() == 0  # straight after the burst: lines are still in the buffer
    ids = [line.rsplit("id=", 1)[1].split()[0] for line in tg.stdout_lines() if "id=burst-" in line]
    assert ids == [f"burst-{n}" for n in range(1500)], f"{len(ids)} of 1500 lines, or out of order"
