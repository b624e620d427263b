"""No trace lost, no request harmed: a real MLflow server stopped and restarted, failing, slow or
refusing; tracegate stopped with SIGTERM under load or killed with SIGKILL. Every test counts the
requests sent and succeeded, and the traces that reached MLflow, exactly once.

Each test that breaks the tracking server runs its own MLflow server (or a fault proxy in front of
the shared one), so the rest of the suite is not disturbed."""

from __future__ import annotations

import json
import signal
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from fault_proxy import FaultProxy
from helpers import wait_until
from mlflow_harness import MlflowServer, create_experiment, describe, search, user_is, wait_for_traces

# A restarted MLflow server imports its Python again: allow for a slow CI machine.
OUTAGE_TRACE_TIMEOUT = 120.0


def chat(tg, user: str, rid: str, stream: bool = False, extra_headers: dict | None = None,
         delay_ms: int = 0) -> requests.Response:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"hello {rid}"}], "stream": stream}
    headers = {"X-User-ID": user, "X-Session-ID": f"s-{user}", "X-Request-ID": rid, "Connection": "close",
               **(extra_headers or {})}
    if delay_ms:
        headers["X-Fake-Delay-Ms"] = str(delay_ms)
    return requests.post(f"{tg.url}/v1/chat/completions", json=body, headers=headers, timeout=30)


def metric(tg, name: str) -> float:
    text = requests.get(f"{tg.admin_url}/metrics", timeout=5).text
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def assert_exactly_once(client, experiment_id: str, user: str, request_ids: list[str], timeout: float) -> list:
    """Every request id has exactly one trace of `user`, with its client_request_id set (the trace info
    arrives after the spans), and there is no other trace of `user`."""
    deadline = time.monotonic() + timeout
    traces = wait_for_traces(client, experiment_id, user_is(user), len(request_ids), timeout=timeout, settle=1.0)
    while True:
        seen = [t.info.client_request_id for t in traces]
        if sorted(seen, key=str) == sorted(request_ids) or time.monotonic() >= deadline:
            break
        time.sleep(0.5)
        traces = search(client, experiment_id, user_is(user))
    missing = set(request_ids) - set(seen)
    duplicates = {rid for rid in seen if seen.count(rid) > 1}
    assert len(traces) == len(request_ids) and not missing and not duplicates, \
        f"{len(traces)} traces for {len(request_ids)} requests; missing {sorted(missing)[:5]}, " \
        f"duplicated {sorted(duplicates, key=str)[:5]}\n{describe(traces)}"
    return traces


@pytest.fixture
def own_mlflow(tmp_path):
    """An MLflow server of this test's own, free to stop and restart."""
    server = MlflowServer(tmp_path / "own-mlflow")
    server.workdir.mkdir()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def fault_proxy(mlflow_server):
    proxy = FaultProxy(mlflow_server.url).start()
    yield proxy
    proxy.stop()


def test_mlflow_outage_under_load_loses_no_trace_and_duplicates_none(backend, start_tracegate, own_mlflow, tmp_path):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=own_mlflow.url)
    experiment = create_experiment(client, "outage")
    tg = start_tracegate(backend.url, mlflow_tracking_uri=own_mlflow.url, mlflow_experiment_id=experiment,
                         export_batch_delay="100ms")
    user = f"outage-{uuid.uuid4().hex[:8]}"
    sent: list[str] = []
    statuses: list[int] = []

    def send(count: int, stream_every: int = 5) -> None:
        for _ in range(count):
            rid = f"out-{uuid.uuid4().hex[:12]}"
            sent.append(rid)
            statuses.append(chat(tg, user, rid, stream=len(sent) % stream_every == 0).status_code)

    send(40)
    own_mlflow.stop()  # the tracking server goes away mid-load
    send(80)
    wait_until(lambda: metric(tg, "tracegate_spool_traces") > 0, 10, message="traces to reach the spool")
    send(40)
    own_mlflow.restart()  # same port, same database
    send(40)
    assert statuses == [200] * len(sent), f"requests failed during the outage: {sorted(set(statuses))}"
    assert_exactly_once(client, experiment, user, sent, OUTAGE_TRACE_TIMEOUT)
    print(f"outage: requests sent {len(sent)}, succeeded {statuses.count(200)}, traces in MLflow {len(sent)}, "
          f"duplicates 0, spooled {metric(tg, 'tracegate_traces_spooled_total'):.0f}")
    assert metric(tg, "tracegate_traces_dropped_total") == 0
    wait_until(lambda: metric(tg, "tracegate_spool_traces") == 0, 30, message="the spool to empty")


def test_failing_tracking_server_harms_no_request_and_its_traces_arrive_once_it_recovers(
        backend, start_tracegate, fault_proxy, mlflow_client, mlflow_experiment):
    tg = start_tracegate(backend.url, mlflow_tracking_uri=fault_proxy.url, mlflow_experiment_id=mlflow_experiment,
                         export_batch_delay="50ms")
    user = f"failing-{uuid.uuid4().hex[:8]}"
    fault_proxy.mode = "fail"
    ids = [f"fail-{uuid.uuid4().hex[:12]}" for _ in range(30)]
    latencies = []
    for rid in ids:
        started = time.monotonic()
        r = chat(tg, user, rid)
        latencies.append(time.monotonic() - started)
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == f"You said: hello {rid}"
    wait_until(lambda: fault_proxy.count("fail /v1/traces") > 0, 10, message="an export attempt to fail")
    assert max(latencies) < 2.0, f"a request waited on the failing tracking server: {max(latencies):.3f}s"
    fault_proxy.mode = "pass"
    assert_exactly_once(mlflow_client, mlflow_experiment, user, ids, 60)


def test_slow_tracking_server_does_not_slow_requests(backend, start_tracegate, fault_proxy, mlflow_client,
                                                     mlflow_experiment):
    tg = start_tracegate(backend.url, mlflow_tracking_uri=fault_proxy.url, mlflow_experiment_id=mlflow_experiment,
                         export_batch_delay="50ms")
    fault_proxy.mode = "slow"
    fault_proxy.delay = 3.0
    user = f"slow-{uuid.uuid4().hex[:8]}"
    ids = [f"slow-{uuid.uuid4().hex[:12]}" for _ in range(20)]
    latencies = []
    for rid in ids:
        started = time.monotonic()
        assert chat(tg, user, rid).status_code == 200
        latencies.append(time.monotonic() - started)
    assert max(latencies) < 1.0, f"a request waited on the slow tracking server: {max(latencies):.3f}s"
    assert_exactly_once(mlflow_client, mlflow_experiment, user, ids, 90)


def test_a_trace_the_server_rejects_is_dead_lettered_and_the_others_delivered(
        backend, start_tracegate, fault_proxy, mlflow_client, mlflow_experiment, tmp_path):
    spool = tmp_path / "spool"
    tg = start_tracegate(backend.url, mlflow_tracking_uri=fault_proxy.url, mlflow_experiment_id=mlflow_experiment,
                         export_batch_delay="300ms", spool_dir=str(spool))
    marker = f"poison-{uuid.uuid4().hex[:8]}"
    fault_proxy.mode = "reject"
    fault_proxy.marker = marker.encode()
    user = f"reject-{uuid.uuid4().hex[:8]}"
    good = [f"ok-{uuid.uuid4().hex[:12]}" for _ in range(9)]
    for i, rid in enumerate(good):
        assert chat(tg, user, rid).status_code == 200
        if i == 4:
            assert chat(tg, user, marker).status_code == 200
    assert_exactly_once(mlflow_client, mlflow_experiment, user, good, 60)
    dead = spool / "mlflow" / "dead-letter.jsonl"
    wait_until(dead.exists, 10, message="the dead-letter file")
    entries = [json.loads(line) for line in dead.read_text().splitlines()]
    assert [e["record"]["clientRequestID"] for e in entries] == [marker]
    assert "INVALID_PARAMETER_VALUE" in entries[0]["reason"]
    assert metric(tg, "tracegate_traces_rejected_total") == 1


def _load(tg, user: str, seconds: float, threads: int = 8) -> tuple[list[str], list[str], list[str]]:
    """Requests from `threads` clients (each on a new connection, 150 ms backend delay) until
    `seconds` pass or the proxy stops accepting. Returns (succeeded ids, failed ids, refused ids)."""
    succeeded, failed, refused = [], [], []
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def client() -> None:
        while time.monotonic() < stop_at:
            rid = f"load-{uuid.uuid4().hex[:12]}"
            try:
                r = chat(tg, user, rid, delay_ms=150)
            except requests.ConnectionError as e:
                # Refused at connect: the proxy had stopped accepting; the request was never taken.
                with lock:
                    (refused if "refused" in str(e).lower() else failed).append(rid)
                if "refused" in str(e).lower():
                    return
                continue
            with lock:
                (succeeded if r.status_code == 200 else failed).append(rid)

    with ThreadPoolExecutor(threads) as pool:
        for _ in range(threads):
            pool.submit(client)
    return succeeded, failed, refused


def test_sigterm_under_load_fails_no_request_and_every_trace_is_exported_or_spooled(
        backend, start_tracegate, fault_proxy, mlflow_client, mlflow_experiment, tmp_path):
    spool = tmp_path / "spool"
    flags = dict(mlflow_tracking_uri=fault_proxy.url, mlflow_experiment_id=mlflow_experiment,
                 export_batch_delay="100ms", spool_dir=str(spool), export_drain_timeout="2s")
    tg = start_tracegate(backend.url, **flags)
    user = f"sigterm-{uuid.uuid4().hex[:8]}"
    fault_proxy.mode = "fail"  # what is in memory at the signal cannot be delivered: it must be spooled
    result: dict = {}
    loader = threading.Thread(target=lambda: result.update(zip(("ok", "failed", "refused"), _load(tg, user, 20))))
    loader.start()
    wait_until(lambda: metric(tg, "tracegate_requests_in_flight") >= 4, 10, message="requests in flight")
    time.sleep(1.0)  # a second of load: some traces spooled, some in memory, several requests in flight
    tg.signal(signal.SIGTERM)
    assert tg.wait_exit(20) == 0, tg.stderr()[-3000:]
    loader.join(30)
    ok, failed = result["ok"], result["failed"]
    assert ok and not failed, f"{len(failed)} requests failed at SIGTERM: {failed[:5]}"

    fault_proxy.mode = "pass"
    restarted = start_tracegate(backend.url, **flags)
    assert_exactly_once(mlflow_client, mlflow_experiment, user, ok, 90)
    print(f"SIGTERM under load: requests sent {len(ok) + len(failed)}, succeeded {len(ok)}, failed {len(failed)}, "
          f"traces in MLflow {len(ok)}, duplicates 0")
    assert "replaying" in restarted.stderr()


def test_sigkill_keeps_every_trace_already_spooled(backend, start_tracegate, fault_proxy, mlflow_client,
                                                   mlflow_experiment, tmp_path):
    spool = tmp_path / "spool"
    flags = dict(mlflow_tracking_uri=fault_proxy.url, mlflow_experiment_id=mlflow_experiment,
                 export_batch_delay="50ms", spool_dir=str(spool))
    tg = start_tracegate(backend.url, **flags)
    user = f"sigkill-{uuid.uuid4().hex[:8]}"
    fault_proxy.mode = "fail"
    ids = [f"kill-{uuid.uuid4().hex[:12]}" for _ in range(25)]
    for rid in ids:
        assert chat(tg, user, rid, stream=rid.endswith(("0", "5"))).status_code == 200
    wait_until(lambda: metric(tg, "tracegate_spool_traces") == len(ids), 15, message="all traces in the spool")
    tg.kill()  # SIGKILL: no chance to flush anything
    fault_proxy.mode = "pass"
    start_tracegate(backend.url, **flags)
    assert_exactly_once(mlflow_client, mlflow_experiment, user, ids, 60)


def test_memory_stays_bounded_while_the_tracking_server_is_down_under_load(
        backend, start_tracegate, fault_proxy, mlflow_experiment, tmp_path):
    tg = start_tracegate(backend.url, mlflow_tracking_uri=fault_proxy.url, mlflow_experiment_id=mlflow_experiment,
                         export_batch_delay="50ms", spool_dir=str(tmp_path / "spool"), access_log="off")
    fault_proxy.mode = "fail"
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "x" * 4000}]})
    samples = []

    def burst(n: int) -> None:
        with requests.Session() as s:
            for _ in range(n):
                assert s.post(f"{tg.url}/v1/chat/completions", data=body,
                              headers={"Content-Type": "application/json"}, timeout=10).status_code == 200

    def settled(sent: int) -> bool:
        # Every exchange sent is spooled or counted as untraced, and none waits in memory: RSS is
        # then read at comparable points, not while captures queue for a lagging builder (bounded
        # by capture_memory_limit, up to 16 MiB, more than this test's margin).
        return (metric(tg, "tracegate_export_queue_traces") == 0
                and metric(tg, "tracegate_spool_traces") + metric(tg, "tracegate_traces_dropped_total") >= sent)

    for round_ in range(4):
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(burst, [250] * 4))
        wait_until(lambda: settled(1000 * (round_ + 1)), 30, message="every trace spooled or counted")
        samples.append(tg.rss_kib())
    spooled = metric(tg, "tracegate_spool_traces")
    print(f"RSS while MLflow is down (KiB after each 1,000 requests): {samples}; spooled {spooled:.0f}")
    assert spooled >= 3000, "the traces went to disk, not memory"
    # Growth after the first round is what an unbounded queue would show: 1,000 traces of ~10 KB each.
    assert samples[-1] - samples[0] < 8 * 1024, f"RSS grew from {samples[0]} to {samples[-1]} KiB"


@pytest.fixture
def tiny_disk(tmp_path):
    """A 256 KiB tmpfs: a spool disk that fills up (the tests run as root, as CI does)."""
    import subprocess

    mount = tmp_path / "tiny-disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], check=True)
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_spool_disk_harms_no_request_and_the_lost_traces_are_counted(
        backend, start_tracegate, fault_proxy, mlflow_client, mlflow_experiment, tiny_disk):
    tg = start_tracegate(backend.url, mlflow_tracking_uri=fault_proxy.url, mlflow_experiment_id=mlflow_experiment,
                         export_batch_delay="50ms", spool_dir=str(tiny_disk / "spool"), spool_max_bytes="1MiB")
    fault_proxy.mode = "fail"
    user = f"full-{uuid.uuid4().hex[:8]}"
    body = "x" * 3000  # ~7 KB a trace: the disk holds a few dozen
    ids, latencies = [], []
    for i in range(120):
        rid = f"full-{i}-{uuid.uuid4().hex[:8]}"
        ids.append(rid)
        started = time.monotonic()
        r = requests.post(f"{tg.url}/raw", data=body, timeout=10,
                          headers={"X-User-ID": user, "X-Request-ID": rid, "Content-Type": "text/plain"})
        latencies.append(time.monotonic() - started)
        assert r.status_code == 200 and r.text == body
    wait_until(lambda: metric(tg, "tracegate_traces_dropped_total") > 0, 15, message="lost traces to be counted")
    assert max(latencies) < 1.0, f"a request waited on the full disk: {max(latencies):.3f}s"
    assert "cannot write to the spool" in tg.stderr() and "No space left on device" in tg.stderr()
    assert tg.stderr().count("cannot write to the spool") == 1, "a full disk is logged once, not once a trace"
    spooled = metric(tg, "tracegate_spool_traces")
    fault_proxy.mode = "pass"

    def accounted() -> bool:
        delivered = len(search(mlflow_client, mlflow_experiment, user_is(user)))
        return delivered > 0 and delivered + metric(tg, "tracegate_traces_dropped_total") >= len(ids)

    wait_until(accounted, 60, message="every trace either delivered or counted as lost")
    delivered = len(search(mlflow_client, mlflow_experiment, user_is(user)))
    dropped = metric(tg, "tracegate_traces_dropped_total")
    print(f"full spool disk: requests {len(ids)}, all 200; spooled {spooled:.0f} when the disk was full, "
          f"lost (counted) {dropped:.0f}, delivered {delivered}")
    assert delivered + dropped == len(ids), (delivered, dropped)
