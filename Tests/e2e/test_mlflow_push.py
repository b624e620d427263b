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
