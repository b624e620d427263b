"""When trace building or delivery falls behind, exchanges are forwarded without being captured,
and counted.

`capture_queue_size = 1` makes the queue between event loops and the trace builder (drained every
5 ms) full after one finished exchange, so a burst of concurrent requests overloads it at once.
A slow OTLP receiver with a small `export_backlog_limit` makes delivery fall behind. Building and
delivery themselves run on threads scheduled only on idle CPU.
"""

import json
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from helpers import raw_request, wait_until
from otlp_receiver import OtlpReceiver


def metric(tg, name: str) -> float:
    for line in requests.get(f"{tg.admin_url}/metrics", timeout=5).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def test_a_full_capture_queue_forwards_untraced_and_counts_every_exchange(backend, start_tracegate, tmp_path):
    trace_file = tmp_path / "traces.jsonl"
    tg = start_tracegate(backend.url, trace_file=str(trace_file), capture_queue_size="1")
    ids = [f"burst-{uuid.uuid4().hex[:12]}" for _ in range(400)]

    def send(rid: str):
        return rid, raw_request(tg.port, "GET", f"/echo?n={rid}", [("X-Request-ID", rid)])

    with ThreadPoolExecutor(max_workers=16) as pool:
        responses = dict(pool.map(send, ids))

    # Forwarding is untouched: every request got the backend's answer.
    assert all(r.status == 200 and rid.encode() in r.body for rid, r in responses.items())
    untraced = {rid for rid, r in responses.items() if r.header("X-MLflow-Trace-Id") is None}
    assert untraced, "400 requests from 16 clients never filled a queue of one"
    assert len(untraced) < len(ids), "not even the first exchange was traced"

    assert tg.stop() == 0
    traced = [json.loads(line)["clientRequestID"] for line in trace_file.read_text().splitlines()]
    assert len(traced) == len(set(traced))
    # No trace for an exchange whose response carried no trace id, and every exchange is either in the
    # file or counted as dropped (a captured one can still find the queue full when it ends).
    assert not set(traced) & untraced
    dropped = int(tg.stderr().split("dropped_before_export=")[-1].split()[0].strip('",'))
    assert len(traced) + dropped == len(ids), (len(traced), dropped)
    assert "trace building or delivery cannot keep up" in tg.stderr()


def test_the_dropped_counter_tells_operators(backend, start_tracegate, tmp_path):
    tg = start_tracegate(backend.url, trace_file=str(tmp_path / "traces.jsonl"), capture_queue_size="1")
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(lambda i: raw_request(tg.port, "GET", f"/echo?i={i}"), range(300)))
    wait_until(lambda: metric(tg, "tracegate_traces_dropped_total") > 0, 5,
               message="exchanges left untraced to show in tracegate_traces_dropped_total")


def test_capture_pauses_while_a_working_tracking_server_is_too_far_behind(backend, start_tracegate, tmp_path):
    """The receiver answers, but takes 0.5 s per batch of 5: with export_backlog_limit = 20, capture
    stops once 20 traces wait, and what was captured is all delivered."""
    receiver = OtlpReceiver().start()
    receiver.delay = 0.5
    try:
        tg = start_tracegate(backend.url, env={"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint},
                             export_backlog_limit="20", export_batch_size="5", export_batch_delay="10ms",
                             spool_dir=str(tmp_path / "spool"))
        ids = [f"behind-{uuid.uuid4().hex[:12]}" for _ in range(300)]
        traced = []
        for rid in ids:  # one at a time: the capture queue itself is never full
            r = raw_request(tg.port, "GET", "/echo", [("X-Request-ID", rid)])
            assert r.status == 200
            if r.header("X-MLflow-Trace-Id") is not None:
                traced.append(rid)
        assert 20 <= len(traced) < 150, len(traced)
        wait_until(lambda: metric(tg, "tracegate_traces_dropped_total") == len(ids) - len(traced), 10,
                   message="every untraced exchange to be counted")
        assert "traces behind: new exchanges are forwarded untraced" in tg.stderr()

        def delivered():
            return {s["_attributes"].get("tracegate.request_id") for s in receiver.spans()}
        wait_until(lambda: set(traced) <= delivered(), 60, interval=0.2, message="every captured trace delivered")
        assert not (set(ids) - set(traced)) & delivered()
    finally:
        receiver.stop()


def thread_policies(pid: int) -> dict[str, set[int]]:
    """Scheduling policy of each of `pid`'s threads, by thread name (0: normal, 5: SCHED_IDLE)."""
    policies: dict[str, set[int]] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        stat = (task / "stat").read_text()
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        policy = int(stat[stat.rindex(")") + 2:].split()[38])  # field 41 of proc_pid_stat(5)
        policies.setdefault(name, set()).add(policy)
    return policies


def test_building_and_delivery_run_at_idle_priority_and_forwarding_does_not(backend, start_tracegate, tmp_path):
    receiver = OtlpReceiver().start()
    try:
        tg = start_tracegate(backend.url, env={"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint},
                             export_batch_delay="10ms", spool_dir=str(tmp_path / "spool"))
        rid = f"idle-{uuid.uuid4().hex[:12]}"
        assert raw_request(tg.port, "GET", "/echo", [("X-Request-ID", rid)]).status == 200
        wait_until(lambda: any(s["_attributes"].get("tracegate.request_id") == rid for s in receiver.spans()), 10,
                   message="the trace delivered")
        policies = thread_policies(tg.pid)
        assert policies.get("tg-builder") == {5}, policies
        assert policies.get("tg-export") == {5}, policies
        event_loops = {name: p for name, p in policies.items() if name.startswith("NIO-ELT")}
        assert event_loops and all(p == {0} for p in event_loops.values()), policies
    finally:
        receiver.stop()
