"""What MLflow's trace list and trace view show for a tracegate trace, read back through the SDK from a
real MLflow server: the Source column, client retries, the span tree (root span for the exchange as the
client saw it, a child span for the upstream call) and trace names.

The official `openai` client drives the chat calls, retries included, as an instrumented app would."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from openai import OpenAI, InternalServerError

from backend import Backend
from mlflow_harness import (create_experiment, expected_usage, request_id, root_span, sdk_tracking_uri, search,
                            state, unique, user_is, wait_for_trace, wait_for_traces)

MESSAGES = [{"role": "user", "content": "name three colours"}]
TOKEN_INTERVAL_MS = 60


def client(tg, user: str, session: str, max_retries: int = 0) -> OpenAI:
    return OpenAI(base_url=f"{tg.url}/v1", api_key="sk-test", max_retries=max_retries, timeout=15,
                  default_headers={"X-User-ID": user, "X-Session-ID": session})


def children_of(trace, span) -> list:
    return [s for s in trace.data.spans if s.parent_id == span.span_id]


def recorded_usage(backend, completion_id: str) -> dict:
    found = [c for c in backend.snapshot()["chat_completions"] if c["id"] == completion_id]
    assert len(found) == 1, found
    return found[0]["usage"]


# ---- Source column ---------------------------------------------------------------------------------


def test_source_column_names_the_upstream_by_default_and_is_searchable(exporting_tracegate, backend, mlflow_client,
                                                                        mlflow_experiment):
    tg = exporting_tracegate()
    rid = request_id()
    client(tg, unique("src-user"), unique("src-session")).chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, extra_headers={"X-Request-ID": rid})
    trace = wait_for_trace(mlflow_client, mlflow_experiment, rid)
    authority = backend.url.split("://", 1)[1].rstrip("/")
    metadata = trace.info.trace_metadata
    assert (metadata.get("mlflow.source.name"), metadata.get("mlflow.source.type")) == (authority, "PROXY"), metadata
    assert "tracegate.route" not in trace.info.tags, "no route took it"
    found = search(mlflow_client, mlflow_experiment, f"metadata.`mlflow.source.name` = '{authority}'")
    assert rid in [t.info.client_request_id for t in found]


def test_source_column_says_which_route_or_the_configured_name(backend, start_tracegate, tmp_path, mlflow_server,
                                                                mlflow_client):
    chat_backend = Backend(name="chat-backend").start()
    try:
        experiment = create_experiment(mlflow_client, "source-routes")
        conf = tmp_path / "proxy.conf"
        conf.write_text(f"""
trace_source_name = support-bot
trace_source_type = SERVICE

[route chat]
path_prefix = /v1/chat
upstream = {chat_backend.url}

[route models]
path_prefix = /v1/models
upstream = {chat_backend.url}
trace_source_name = model-catalogue
""")
        tg = start_tracegate(backend.url, config=str(conf), mlflow_tracking_uri=mlflow_server.url,
                             mlflow_experiment_id=experiment, export_batch_delay="50ms")
        chat_id, models_id, other_id = request_id(), request_id(), request_id()
        client(tg, "u", "s").chat.completions.create(model="m", messages=MESSAGES,
                                                      extra_headers={"X-Request-ID": chat_id})
        import requests
        assert requests.get(f"{tg.url}/v1/models", headers={"X-Request-ID": models_id}, timeout=10).ok
        assert requests.get(f"{tg.url}/echo", headers={"X-Request-ID": other_id}, timeout=10).ok

        def source(rid):
            info = wait_for_trace(mlflow_client, experiment, rid).info
            return (info.trace_metadata.get("mlflow.source.name"), info.trace_metadata.get("mlflow.source.type"),
                    info.tags.get("tracegate.route"))

        assert source(chat_id) == ("support-bot", "SERVICE", "chat"), "the global name wins over the route's name"
        assert source(models_id) == ("model-catalogue", "SERVICE", "models"), "a route's own name wins"
        assert source(other_id) == ("support-bot", "SERVICE", None)
    finally:
        chat_backend.stop()


def test_a_source_name_with_a_slash_stops_start_up_with_file_line_and_key(start_tracegate, backend, tmp_path):
    conf = tmp_path / "proxy.conf"
    conf.write_text("# services\ntrace_source_name = team/chat\n")
    from harness import run_tracegate
    result = run_tracegate(["check-config", "--config", str(conf), "--upstream", backend.url])
    assert result.returncode != 0
    assert f"{conf}:2" in result.stderr and "trace_source_name" in result.stderr and "without /" in result.stderr, \
        result.stderr


# ---- retries ---------------------------------------------------------------------------------------


def readme_python_block_defining(name: str) -> str:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, re.S)
    [block] = [b for b in blocks if f"def {name}(" in b]
    return block


def test_the_openai_clients_retries_are_tagged_and_a_turn_counts_once(exporting_tracegate, mlflow_server, mlflow_client,
                                                                      mlflow_experiment, monkeypatch):
    tg = exporting_tracegate()
    user, session = unique("retry-user"), unique("retry-session")
    chat = client(tg, user, session, max_retries=2)
    good_ids = [request_id(), request_id()]
    chat.chat.completions.create(model="m", messages=MESSAGES, extra_headers={"X-Request-ID": good_ids[0]})
    failing_id = request_id()
    with pytest.raises(InternalServerError):
        chat.chat.completions.create(model="m", messages=MESSAGES,
                                     extra_headers={"X-Request-ID": failing_id, "X-Fake-Fail": "500"})
    chat.chat.completions.create(model="m", messages=MESSAGES, extra_headers={"X-Request-ID": good_ids[1]})

    traces = wait_for_traces(mlflow_client, mlflow_experiment, user_is(user), 5)
    failing = sorted((t for t in traces if t.info.client_request_id == failing_id),
                     key=lambda t: root_span(t).attributes.get("tracegate.client_retry_count"))
    assert len(failing) == 3, "the client tried three times"
    assert [root_span(t).attributes.get("tracegate.client_retry_count") for t in failing] == [0, 1, 2]
    assert [t.info.tags.get("tracegate.retry") for t in failing] == [None, "1", "2"]

    turns = search(mlflow_client, mlflow_experiment, f"{user_is(user)} AND tags.`tracegate.retry` IS NULL")
    assert sorted(t.info.client_request_id for t in turns) == sorted(good_ids + [failing_id]), \
        "one trace per turn once retries are filtered out"
    assert sorted(state(t) for t in turns) == ["ERROR", "OK", "OK"], "the error rate is one turn in three"

    # The README's recipe, run as printed there.
    monkeypatch.setenv("MLFLOW_EXPERIMENT_ID", mlflow_experiment)
    recipe = readme_python_block_defining("analyze_user_behavior")
    with sdk_tracking_uri(mlflow_server.url):
        namespace: dict = {}
        exec(recipe, namespace)
        by_user = namespace["analyze_user_behavior"](user)
        by_session = namespace["analyze_session_flow"](session)
    assert sorted(by_user["client_request_id"]) == sorted(good_ids + [failing_id])
    assert list(by_session["client_request_id"]) == [good_ids[0], failing_id, good_ids[1]], "in the order of the turns"


# ---- span tree -------------------------------------------------------------------------------------


def test_a_chat_call_has_an_llm_child_span_for_the_upstream_with_model_and_usage_counted_once(
        exporting_tracegate, backend, mlflow_client, mlflow_experiment):
    tg = exporting_tracegate()
    rid = request_id()
    completion = client(tg, unique("tree-user"), unique("tree-session")).chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, extra_headers={"X-Request-ID": rid, "X-Fake-Delay-Ms": "150"})
    trace = wait_for_trace(mlflow_client, mlflow_experiment, rid)
    root = root_span(trace)
    children = children_of(trace, root)
    assert [(s.name, s.span_type) for s in children] == [("POST /v1/chat/completions", "LLM")]
    llm = children[0]
    assert len(trace.data.spans) == 2
    assert root.start_time_ns <= llm.start_time_ns and llm.end_time_ns <= root.end_time_ns
    assert llm.end_time_ns - llm.start_time_ns >= 150_000_000, "the upstream's delay is inside the upstream span"
    assert llm.attributes.get("mlflow.llm.model") == "gpt-4o-mini"
    assert llm.attributes.get("http.response.status_code") == 200
    assert "mlflow.chat.tokenUsage" not in root.attributes and "gen_ai.usage.input_tokens" not in root.attributes
    assert root.span_type == "CHAT_MODEL" and root.attributes.get("mlflow.message.format") == "openai"
    assert trace.info.token_usage == expected_usage(recorded_usage(backend, completion.id)), \
        "usage is on the LLM span only and counted once"


def test_a_streamed_chat_calls_llm_span_marks_the_first_token_and_the_end_of_the_stream(
        exporting_tracegate, mlflow_client, mlflow_experiment):
    tg = exporting_tracegate()
    rid = request_id()
    started = time.time_ns()
    first_token_at = None
    with client(tg, unique("s-user"), unique("s-session")).chat.completions.with_streaming_response.create(
            model="gpt-4o-mini", messages=MESSAGES, stream=True,
            extra_headers={"X-Request-ID": rid, "X-Fake-Token-Interval-Ms": str(TOKEN_INTERVAL_MS)}) as response:
        for chunk in response.parse():
            if first_token_at is None and chunk.choices and chunk.choices[0].delta.content:
                first_token_at = time.time_ns()
    trace = wait_for_trace(mlflow_client, mlflow_experiment, rid)
    root = root_span(trace)
    [llm] = children_of(trace, root)
    events = {e.name: e.timestamp for e in llm.events}
    assert set(events) == {"first_token", "end_of_stream"}, llm.events
    # The backend sends an empty role chunk first, then a content chunk TOKEN_INTERVAL_MS later.
    assert events["first_token"] - root.start_time_ns >= 0.8 * TOKEN_INTERVAL_MS * 1e6, events
    assert abs(events["first_token"] - first_token_at) < 40e6, "within 40 ms of when the client saw it"
    assert events["first_token"] < events["end_of_stream"] <= root.end_time_ns
    assert started <= root.start_time_ns
    assert llm.attributes.get("tracegate.time_to_first_token_ms") >= 0.8 * TOKEN_INTERVAL_MS


def test_a_plain_http_request_has_an_upstream_child_span(exporting_tracegate, mlflow_client, mlflow_experiment):
    import requests
    tg = exporting_tracegate()
    rid = request_id()
    assert requests.get(f"{tg.url}/echo", headers={"X-Request-ID": rid}, timeout=10).ok
    trace = wait_for_trace(mlflow_client, mlflow_experiment, rid)
    root = root_span(trace)
    assert root.name == "GET /echo"
    assert [(s.name, s.span_type) for s in children_of(trace, root)] == [("GET /echo", "UNKNOWN")]


def test_a_request_that_never_reached_the_upstream_has_only_its_root_span(exporting_tracegate, mlflow_client,
                                                                          mlflow_experiment):
    import requests
    tg = exporting_tracegate(upstream="http://127.0.0.1:9")  # discard port: nothing listens
    rid = request_id()
    assert requests.get(f"{tg.url}/echo", headers={"X-Request-ID": rid}, timeout=10).status_code == 502
    trace = wait_for_trace(mlflow_client, mlflow_experiment, rid)
    assert [s.name for s in trace.data.spans] == ["GET /echo"]
    assert state(trace) == "ERROR"


# ---- trace names -----------------------------------------------------------------------------------


def test_chat_traces_are_named_after_operation_and_model(exporting_tracegate, mlflow_client, mlflow_experiment):
    import requests
    tg = exporting_tracegate()
    chat_id, responses_id, messages_id = request_id(), request_id(), request_id()
    client(tg, "u", "s").chat.completions.create(model="gpt-4o-mini", messages=MESSAGES,
                                                  extra_headers={"X-Request-ID": chat_id})
    assert requests.post(f"{tg.url}/v1/responses", headers={"X-Request-ID": responses_id}, timeout=10,
                         json={"model": "o3-mini", "input": "hello"}).ok
    assert requests.post(f"{tg.url}/v1/messages", headers={"X-Request-ID": messages_id}, timeout=10,
                         json={"model": "claude-sonnet-4", "max_tokens": 20,
                               "messages": [{"role": "user", "content": "hello"}]}).ok

    def names(rid):
        trace = wait_for_trace(mlflow_client, mlflow_experiment, rid)
        return trace.info.tags.get("mlflow.traceName"), root_span(trace).name

    assert names(chat_id) == ("chat.completions gpt-4o-mini",) * 2
    assert names(responses_id)[0].startswith("responses o3-mini")
    assert names(messages_id)[0].startswith("messages claude-sonnet-4")


def test_trace_names_can_be_the_request_again(exporting_tracegate, mlflow_client, mlflow_experiment):
    tg = exporting_tracegate(trace_names="request")
    rid = request_id()
    client(tg, "u", "s").chat.completions.create(model="gpt-4o-mini", messages=MESSAGES,
                                                  extra_headers={"X-Request-ID": rid})
    trace = wait_for_trace(mlflow_client, mlflow_experiment, rid)
    assert trace.info.tags.get("mlflow.traceName") == "POST /v1/chat/completions"
    assert root_span(trace).span_type == "CHAT_MODEL"
