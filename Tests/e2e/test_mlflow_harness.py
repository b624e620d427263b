"""The MLflow test harness itself (no tracegate involved): the server answers, traces logged by
the MLflow SDK are found, and wait_for_traces means "exactly N"."""

from __future__ import annotations

import pytest
import requests

from mlflow_harness import create_experiment, sdk_tracking_uri, search, unique, wait_for_traces


def log_sdk_traces(experiment_id: str, user: str, sessions: list[str]) -> None:
    import mlflow

    for i, session in enumerate(sessions):
        span = mlflow.start_span_no_context(
            "harness-probe", inputs={"messages": [{"role": "user", "content": f"question {i}"}]},
            experiment_id=experiment_id, metadata={"mlflow.trace.user": user, "mlflow.trace.session": session})
        span.set_outputs({"choices": [{"message": {"role": "assistant", "content": f"answer {i}"}}]})
        span.end()
    mlflow.flush_trace_async_logging()


def test_mlflow_server_is_healthy_and_a_new_experiment_is_empty(mlflow_server, mlflow_client):
    assert requests.get(f"{mlflow_server.url}/health", timeout=5).status_code == 200
    experiment_id = create_experiment(mlflow_client, "harness-empty")
    assert mlflow_client.get_experiment(experiment_id).lifecycle_stage == "active"
    assert search(mlflow_client, experiment_id) == []


def test_traces_logged_by_the_mlflow_sdk_are_found_by_user_and_session(mlflow_server, mlflow_client,
                                                                        mlflow_experiment):
    user, s1, s2 = unique("sdk-user"), unique("sdk-s1"), unique("sdk-s2")
    with sdk_tracking_uri(mlflow_server.url):
        log_sdk_traces(mlflow_experiment, user, [s1, s1, s2])
    traces = wait_for_traces(mlflow_client, mlflow_experiment, f"metadata.`mlflow.trace.user` = '{user}'", 3)
    assert sorted(t.info.trace_metadata["mlflow.trace.session"] for t in traces) == sorted([s1, s1, s2])
    assert sorted(t.info.request_preview for t in traces) == ["question 0", "question 1", "question 2"]
    assert sorted(t.info.response_preview for t in traces) == ["answer 0", "answer 1", "answer 2"]
    wait_for_traces(mlflow_client, mlflow_experiment, f"metadata.`mlflow.trace.session` = '{s1}'", 2)


def test_wait_for_traces_fails_on_too_many_and_on_too_few(mlflow_server, mlflow_client, mlflow_experiment):
    user = unique("sdk-user")
    with sdk_tracking_uri(mlflow_server.url):
        log_sdk_traces(mlflow_experiment, user, ["a", "b"])
    flt = f"metadata.`mlflow.trace.user` = '{user}'"
    wait_for_traces(mlflow_client, mlflow_experiment, flt, 2)
    with pytest.raises(AssertionError, match="2 traces match, expected exactly 1"):
        wait_for_traces(mlflow_client, mlflow_experiment, flt, 1)
    with pytest.raises(AssertionError, match="only 2 of 3 traces match"):
        wait_for_traces(mlflow_client, mlflow_experiment, flt, 3, timeout=1)
