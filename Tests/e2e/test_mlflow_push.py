"""Without a tracking server, traces go to the trace file; `tracegate push FILE` sends them later."""

import json
import uuid

from harness import run_tracegate
from helpers import raw_request
from mlflow_harness import wait_for_traces


def test_traces_kept_in_the_file_arrive_in_mlflow_after_push(backend, start_tracegate, tmp_path, mlflow_server,
                                                             mlflow_client, mlflow_experiment):
    trace_file = tmp_path / "offline.jsonl"
    tg = start_tracegate(backend.url, trace_file=str(trace_file))
    user = f"offline-{uuid.uuid4().hex[:8]}"
    ids = [f"offline-{uuid.uuid4().hex[:12]}" for _ in range(3)]
    for rid in ids:
        r = raw_request(tg.port, "POST", "/v1/chat/completions",
                        [("X-User-ID", user), ("X-Request-ID", rid), ("Content-Type", "application/json")],
                        body=json.dumps({"model": "m", "messages": [{"role": "user", "content": rid}]}).encode())
        assert r.status == 200, r
    assert tg.stop() == 0
    lines = [json.loads(line) for line in trace_file.read_text().splitlines()]
    assert sorted(line["clientRequestID"] for line in lines) == sorted(ids), lines[0].keys()

    pushed = run_tracegate(["push", str(trace_file), "--mlflow-tracking-uri", mlflow_server.url,
                            "--mlflow-experiment-id", mlflow_experiment], timeout=60)
    assert pushed.returncode == 0, pushed.stderr
    assert "pushed 3 of 3" in pushed.stdout, pushed.stdout

    traces = wait_for_traces(mlflow_client, mlflow_experiment, f"metadata.`mlflow.trace.user` = '{user}'", 3)
    assert sorted(t.info.client_request_id for t in traces) == sorted(ids)
    assert all(t.info.response_preview == f"You said: {t.info.client_request_id}" for t in traces), \
        [t.info.response_preview for t in traces]


def test_push_without_a_tracking_server_is_refused(tmp_path):
    trace_file = tmp_path / "empty.jsonl"
    trace_file.write_text("")
    result = run_tracegate(["push", str(trace_file)])
    assert result.returncode == 2
    assert "MLFLOW_TRACKING_URI" in result.stderr, result.stderr


def _send_chats(port: int, user: str, count: int, pad: int) -> list[str]:
    """`count` chat requests on one keep-alive connection, each with a `pad`-byte message."""
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    ids = []
    for n in range(count):
        rid = f"rot-{uuid.uuid4().hex[:12]}"
        body = json.dumps({"model": "m", "messages": [{"role": "user", "content": rid + " " + "x" * pad}]})
        conn.request("POST", "/v1/chat/completions", body=body,
                     headers={"X-User-ID": user, "X-Request-ID": rid, "Content-Type": "application/json"})
        r = conn.getresponse()
        r.read()
        assert r.status == 200
        ids.append(rid)
    conn.close()
    return ids


def test_a_rotated_trace_file_keeps_whole_lines_within_its_bound_and_push_sends_every_part(
        backend, start_tracegate, tmp_path, mlflow_server, mlflow_client, mlflow_experiment):
    trace_file = tmp_path / "traces.jsonl"
    tg = start_tracegate(backend.url, trace_file=str(trace_file), trace_file_max_bytes="1MiB", trace_file_keep="3")
    user = f"rotated-{uuid.uuid4().hex[:8]}"
    ids = _send_chats(tg.port, user, 150, pad=8000)  # ~17 KB per line (input and echoed output): ~2.5 MiB
    assert tg.stop() == 0
    parts = [trace_file, *(tmp_path / f"traces.jsonl.{n}" for n in (1, 2, 3))]
    present = [p for p in parts if p.exists()]
    assert len(present) >= 3, f"expected rotation into traces.jsonl.1 and .2: {sorted(p.name for p in tmp_path.iterdir())}"
    assert not (tmp_path / "traces.jsonl.4").exists()
    seen = []
    for part in present:
        data = part.read_bytes()
        assert len(data) <= 1 << 20, f"{part.name} is {len(data)} bytes, over trace_file_max_bytes"
        assert data.endswith(b"\n"), f"{part.name} ends inside a line"
        seen += [json.loads(line)["clientRequestID"] for line in data.splitlines()]
    assert sorted(seen) == sorted(ids), "every trace in exactly one file, none split or lost"

    pushed = run_tracegate(["push", *map(str, present), "--mlflow-tracking-uri", mlflow_server.url,
                            "--mlflow-experiment-id", mlflow_experiment], timeout=180)
    assert pushed.returncode == 0, pushed.stderr
    assert pushed.stdout.count("pushed ") == len(present), pushed.stdout
    traces = wait_for_traces(mlflow_client, mlflow_experiment, f"metadata.`mlflow.trace.user` = '{user}'", 150,
                             timeout=120)
    assert sorted(t.info.client_request_id for t in traces) == sorted(ids)


def test_the_oldest_rotated_file_beyond_keep_is_deleted_and_said(backend, start_tracegate, tmp_path):
    trace_file = tmp_path / "traces.jsonl"
    tg = start_tracegate(backend.url, trace_file=str(trace_file), trace_file_max_bytes="1MiB", trace_file_keep="1")
    _send_chats(tg.port, "u", 150, pad=8000)
    assert tg.stop() == 0
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("traces.jsonl")) == \
        ["traces.jsonl", "traces.jsonl.1"]
    assert "trace file rotated: its oldest rotated file" in tg.stderr(), tg.stderr()[-2000:]


def test_every_trace_of_a_sequential_burst_is_in_the_file_when_sigterm_exits(backend, start_tracegate, tmp_path):
    """One request after the other: each trace is built on the event loop that forwarded it (nothing
    else is in flight), and the builder thread writes it. Stopped straight after the burst, the file
    still holds every one, in order."""
    import requests
    trace_file = tmp_path / "burst.jsonl"
    tg = start_tracegate(backend.url, trace_file=str(trace_file), access_log="off")
    ids = [f"seq-{n}-{uuid.uuid4().hex[:8]}" for n in range(100)]
    with requests.Session() as session:
        for rid in ids:
            assert session.get(f"{tg.url}/echo", headers={"X-Request-ID": rid}, timeout=5).status_code == 200
    assert tg.stop() == 0
    lines = [json.loads(line) for line in trace_file.read_text().splitlines()]
    assert [line["clientRequestID"] for line in lines] == ids, f"{len(lines)} of {len(ids)} traces, or out of order"
