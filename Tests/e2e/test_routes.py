"""Several backends behind one tracegate: `[route NAME]` sections in proxy.conf send requests by path
prefix (and host) to their own upstream, and their traces to their own experiment with their own tags."""

from __future__ import annotations

import requests
import pytest

from backend import Backend
from helpers import wait_until
from mlflow_harness import create_experiment, request_id, unique, user_is, wait_for_trace, wait_for_traces


@pytest.fixture
def chat_backend():
    b = Backend(name="chat-backend").start()
    yield b
    b.stop()


def test_two_routes_reach_two_backends_and_land_in_two_experiments(backend, chat_backend, start_tracegate, tmp_path,
                                                                   mlflow_server, mlflow_client):
    default_experiment = create_experiment(mlflow_client, "routes-default")
    chat_experiment_name = unique("routes-chat")
    conf = tmp_path / "proxy.conf"
    conf.write_text(f"""
trace_tags = environment=e2e

[route chat]
path_prefix = /v1/chat
upstream = {chat_backend.url}
mlflow_experiment_name = {chat_experiment_name}
trace_tags = team=chat

[route admin-only]
path_prefix = /v1/models
host = admin.internal
upstream = {chat_backend.url}
""")
    tg = start_tracegate(backend.url, config=str(conf), mlflow_tracking_uri=mlflow_server.url,
                         mlflow_experiment_id=default_experiment, export_batch_delay="50ms")
    user = unique("routes")
    chat_id, other_id, host_id, plain_host_id = request_id(), request_id(), request_id(), request_id()

    chat = requests.post(f"{tg.url}/v1/chat/completions", timeout=10,
                         headers={"X-User-ID": user, "X-Request-ID": chat_id},
                         json={"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    assert chat.status_code == 200 and chat.headers["X-Backend"] == "chat-backend"
    other = requests.get(f"{tg.url}/echo", headers={"X-User-ID": user, "X-Request-ID": other_id}, timeout=10)
    assert other.headers["X-Backend"] == "backend"
    by_host = requests.get(f"{tg.url}/v1/models", timeout=10,
                           headers={"X-User-ID": user, "X-Request-ID": host_id, "Host": "admin.internal:8080"})
    assert by_host.headers["X-Backend"] == "chat-backend", "the host rule matches"
    plain = requests.get(f"{tg.url}/v1/models", headers={"X-User-ID": user, "X-Request-ID": plain_host_id}, timeout=10)
    assert plain.headers["X-Backend"] == "backend", "another host falls through to the default upstream"

    # The exporter creates the route's experiment in the background once it starts; the requests above
    # can finish before the tracking server has answered.
    chat_experiment = wait_until(lambda: mlflow_client.get_experiment_by_name(chat_experiment_name), timeout=30,
                                 message="the route's experiment is created by name")
    chat_trace = wait_for_trace(mlflow_client, chat_experiment.experiment_id, chat_id)
    assert chat_trace.info.tags.get("team") == "chat" and chat_trace.info.tags.get("environment") == "e2e"
    root = [s for s in chat_trace.data.spans if s.parent_id is None][0]
    assert root.attributes.get("tracegate.upstream") == chat_backend.url
    wait_for_traces(mlflow_client, chat_experiment.experiment_id, user_is(user), 1)

    traces = wait_for_traces(mlflow_client, default_experiment, user_is(user), 3)
    assert sorted(t.info.client_request_id for t in traces) == sorted([other_id, host_id, plain_host_id])
    assert all("team" not in t.info.tags for t in traces)


def test_a_bad_route_section_stops_start_up_with_the_line(backend, tmp_path):
    from harness import run_tracegate

    conf = tmp_path / "proxy.conf"
    conf.write_text("[route chat]\npath_prefix = v1/chat\nupstream = http://127.0.0.1:1\n")
    result = run_tracegate(["check-config", "--config", str(conf), "--upstream", backend.url])
    assert result.returncode == 2
    assert f"{conf}:2: invalid value 'v1/chat' for path_prefix in [route chat]" in result.stderr, result.stderr
