"""Every proxied exchange becomes an MLflow trace: found by user, session and request id, timed,
with the right state, tags, and no credentials in it.

Each test starts tracegate exporting to a real `mlflow server` (fixture `mlflow_server`) in one
experiment per module, and reads the traces back with the MLflow SDK. Users, sessions and request
ids are unique per test, so the tests of a module do not see each other's traces.
"""

from __future__ import annotations

import json
import uuid

import pytest
import requests

from helpers import RawHTTP, free_port, wait_until
from mlflow_harness import (create_experiment, get_trace_when, request_id, root_span, sdk_tracking_uri, search,
                            session_is, state, trace_id_of, trace_json, trace_json_via_rest, unique, user_is,
                            wait_for_trace, wait_for_traces)

CHAT = {"model": "fake-model", "messages": [{"role": "user", "content": "hello proxy world"}]}


# ---- users, sessions, request ids --------------------------------------------------------------


def test_user_and_session_filters_find_exactly_the_matching_traces(exporting_tracegate, mlflow_server,
                                                                   mlflow_client, mlflow_experiment):
    tg = exporting_tracegate()
    u1, u2 = unique("u1"), unique("u2")
    s1, s2, s3 = unique("s1"), unique("s2"), unique("s3")
    sent = []  # (request id, user, session, trace id), in send order
    for user, session in [(u1, s1), (u1, s1), (u1, s1), (u1, s2), (u2, s3), (u2, s3)]:
        rid = request_id()
        r = requests.get(f"{tg.url}/echo", headers={"X-User-ID": user, "X-Session-ID": session, "X-Request-ID": rid},
                         timeout=10)
        assert r.status_code == 200, r.text
        sent.append((rid, user, session, trace_id_of(r)))

    exp = mlflow_experiment
    wait_for_traces(mlflow_client, exp, user_is(u1), 4)
    wait_for_traces(mlflow_client, exp, session_is(s1), 3)
    wait_for_traces(mlflow_client, exp, f"{user_is(u1)} AND {session_is(s1)}", 3)
    wait_for_traces(mlflow_client, exp, session_is(s2), 1)
    wait_for_traces(mlflow_client, exp, user_is(u2), 2)
    wait_for_traces(mlflow_client, exp, session_is(s3), 2)
    wait_for_traces(mlflow_client, exp, f"{user_is(u2)} AND {session_is(s1)}", 0, settle=0.3)

    for rid, user, session, trace_id in sent:
        trace = wait_for_trace(mlflow_client, exp, rid, settle=0.3)
        assert trace.info.trace_id == trace_id
        assert trace.info.trace_metadata.get("mlflow.trace.user") == user
        assert trace.info.trace_metadata.get("mlflow.trace.session") == session

    # Per-user interactions and distinct sessions, computed from search_traces results as in
    # MLflow's "Track Users & Sessions" guide. (The guide's column names, "metadata.mlflow.trace.session"
    # and "info.execution_time_ms", do not exist in 3.17.2's DataFrame: metadata is the
    # `trace_metadata` dict column and the state is `state`.)
    import mlflow

    summary = {}
    with sdk_tracking_uri(mlflow_server.url):
        for user in (u1, u2):
            df = mlflow.search_traces(locations=[exp], filter_string=user_is(user))
            total_interactions = len(df)
            unique_sessions = df["trace_metadata"].map(lambda md: md.get("mlflow.trace.session")).nunique()
            success_rate = (df["state"] == "OK").sum() / total_interactions
            summary[user] = (total_interactions, unique_sessions, success_rate)
    assert summary == {u1: (4, 2, 1.0), u2: (2, 1, 1.0)}


def test_generated_request_id_is_the_traces_client_request_id(exporting_tracegate, mlflow_client,
                                                              mlflow_experiment):
    tg = exporting_tracegate()
    r = requests.get(f"{tg.url}/echo", headers={"X-User-ID": unique("gen-id")}, timeout=10)
    assert r.status_code == 200
    echoed = r.headers.get("X-Request-ID")
    assert echoed, f"no X-Request-ID echoed: {dict(r.headers)}"
    trace_id = trace_id_of(r)
    trace = wait_for_trace(mlflow_client, mlflow_experiment, echoed)
    assert trace.info.client_request_id == echoed
    assert trace.info.trace_id == trace_id


def test_received_request_id_is_the_traces_client_request_id(exporting_tracegate, mlflow_client, mlflow_experiment):
    tg = exporting_tracegate()
    rid = request_id()
    r = requests.get(f"{tg.url}/echo", headers={"X-Request-ID": rid}, timeout=10)
    assert r.status_code == 200
    assert r.headers.get("X-Request-ID") == rid
    trace = wait_for_trace(mlflow_client, mlflow_experiment, rid)
    assert trace.info.trace_id == trace_id_of(r)


def test_each_request_gets_its_own_trace_id(exporting_tracegate):
    tg = exporting_tracegate()
    ids = [trace_id_of(requests.get(f"{tg.url}/echo", timeout=10)) for _ in range(5)]
    assert len(set(ids)) == 5, ids


def test_absent_user_and_session_headers_give_no_user_or_session_metadata(exporting_tracegate, mlflow_client,
                                                                         mlflow_experiment):
    tg = exporting_tracegate()
    rid = request_id()
    assert requests.get(f"{tg.url}/echo", headers={"X-Request-ID": rid}, timeout=10).status_code == 200
    metadata = wait_for_trace(mlflow_client, mlflow_experiment, rid).info.trace_metadata
    assert "mlflow.trace.user" not in metadata, metadata
    assert "mlflow.trace.session" not in metadata, metadata


def test_user_and_session_header_names_are_configurable(exporting_tracegate, mlflow_client, mlflow_experiment):
    tg = exporting_tracegate(user_header="X-End-User", session_header="X-Conversation")
    user, session, rid = unique("custom-user"), unique("custom-session"), request_id()
    r = requests.get(f"{tg.url}/echo", headers={"X-End-User": user, "X-Conversation": session, "X-Request-ID": rid},
                     timeout=10)
    assert r.status_code == 200
    metadata = wait_for_trace(mlflow_client, mlflow_experiment, rid).info.trace_metadata
    assert metadata.get("mlflow.trace.user") == user, metadata
    assert metadata.get("mlflow.trace.session") == session, metadata


def test_non_chat_request_is_a_generic_http_trace_named_after_the_request(exporting_tracegate, mlflow_client,
                                                                          mlflow_experiment):
    tg = exporting_tracegate()
    rid = request_id()
    r = requests.get(f"{tg.url}/echo", headers={"X-Request-ID": rid}, timeout=10)
    assert r.status_code == 200
    trace = wait_for_trace(mlflow_client, mlflow_experiment, rid)
    root = root_span(trace)
    assert root.name == "GET /echo"
    assert root.span_type != "CHAT_MODEL"
    assert trace.info.token_usage is None, trace.info.token_usage


# ---- timing and order ------------------------------------------------------------------------


def test_trace_execution_time_covers_the_backend_delay(exporting_tracegate, mlflow_client, mlflow_experiment):
    tg = exporting_tracegate()
    rid = request_id()
    r = requests.post(f"{tg.url}/v1/chat/completions", json=CHAT,
                      headers={"X-Fake-Delay-Ms": "400", "X-Request-ID": rid}, timeout=10)
    assert r.status_code == 200
    trace = wait_for_trace(mlflow_client, mlflow_experiment, rid)
    assert trace.info.execution_duration >= 400, trace.info
    # MLflow's own duration filter agrees.
    wait_for_traces(mlflow_client, mlflow_experiment,
                    f"trace.client_request_id = '{rid}' AND trace.execution_time_ms >= 400", 1, settle=0.2)


def test_session_traces_ordered_by_timestamp_follow_send_order(exporting_tracegate, mlflow_client,
                                                               mlflow_experiment):
    tg = exporting_tracegate()
    session = unique("ordered")
    sent = []
    for i in range(5):
        # Each request takes a few ms at the backend, so sequential requests start in distinct ms.
        r = requests.get(f"{tg.url}/echo?delay_ms=5&turn={i}", headers={"X-Session-ID": session}, timeout=10)
        assert r.status_code == 200
        sent.append(trace_id_of(r))
    traces = wait_for_traces(mlflow_client, mlflow_experiment, session_is(session), 5,
                             order_by=["timestamp_ms ASC"])
    assert [t.info.trace_id for t in traces] == sent
    times = [t.info.request_time for t in traces]
    assert times == sorted(times) and len(set(times)) == 5, times


# ---- states ----------------------------------------------------------------------------------


@pytest.mark.parametrize("method,path,status,expected_state", [
    ("GET", "/echo", 200, "OK"),
    ("GET", "/status/500", 500, "ERROR"),
    ("POST", "/v1/chat/completions?fail=500", 500, "ERROR"),
    ("GET", "/status/503", 503, "ERROR"),
    ("GET", "/status/404", 404, "OK"),
    ("POST", "/v1/chat/completions?fail=429", 429, "OK"),
], ids=["200-ok", "500-error", "chat-500-error", "503-error", "404-ok-by-default", "chat-429-ok-by-default"])
def test_trace_state_follows_the_response_status(exporting_tracegate, mlflow_client, mlflow_experiment,
                                                 method, path, status, expected_state):
    tg = exporting_tracegate()
    rid = request_id()
    r = requests.request(method, f"{tg.url}{path}", json=CHAT if method == "POST" else None,
                         headers={"X-Request-ID": rid}, timeout=10)
    assert r.status_code == status
    trace = wait_for_trace(mlflow_client, mlflow_experiment, rid)
    assert trace.info.trace_id == trace_id_of(r)
    assert state(trace) == expected_state, trace.info


def test_4xx_is_an_error_trace_when_configured(exporting_tracegate, mlflow_client, mlflow_experiment):
    tg = exporting_tracegate(trace_error_on_4xx="true")
    not_found, ok = request_id(), request_id()
    assert requests.get(f"{tg.url}/status/404", headers={"X-Request-ID": not_found}, timeout=10).status_code == 404
    assert requests.get(f"{tg.url}/echo", headers={"X-Request-ID": ok}, timeout=10).status_code == 200
    assert state(wait_for_trace(mlflow_client, mlflow_experiment, not_found)) == "ERROR"
    assert state(wait_for_trace(mlflow_client, mlflow_experiment, ok)) == "OK"


def test_upstream_down_is_a_502_with_an_error_trace(exporting_tracegate, mlflow_client, mlflow_experiment):
    tg = exporting_tracegate(upstream=f"http://127.0.0.1:{free_port()}")  # nothing listens there
    rid = request_id()
    r = requests.get(f"{tg.url}/echo", headers={"X-Request-ID": rid}, timeout=10)
    assert r.status_code == 502
    trace = wait_for_trace(mlflow_client, mlflow_experiment, rid)
    assert trace.info.trace_id == trace_id_of(r)
    assert state(trace) == "ERROR", trace.info


def test_upstream_timeout_is_a_504_with_an_error_trace(exporting_tracegate, mlflow_client, mlflow_experiment):
    tg = exporting_tracegate(first_byte_timeout="300ms")
    rid = request_id()
    r = requests.get(f"{tg.url}/echo?delay_ms=3000", headers={"X-Request-ID": rid}, timeout=10)
    assert r.status_code == 504
    trace = wait_for_trace(mlflow_client, mlflow_experiment, rid)
    assert trace.info.trace_id == trace_id_of(r)
    assert state(trace) == "ERROR", trace.info


def test_client_abort_mid_stream_is_an_error_trace(exporting_tracegate, backend, mlflow_client):
    tg = exporting_tracegate()
    with RawHTTP("127.0.0.1", tg.port) as c:
        c.request("GET", "/sse?events=200&interval_ms=50")
        head = c.read_head()
        assert head.status == 200
        trace_id = trace_id_of(head)
        body = c.iter_body(head)
        next(body)  # the first event arrived; now the client goes away
    wait_until(lambda: backend.snapshot()["aborted_streams"] == 1, timeout=10, message="backend sees the abort")
    trace = get_trace_when(mlflow_client, trace_id, lambda t: state(t) != "IN_PROGRESS")
    assert state(trace) == "ERROR", trace.info


def test_upstream_reset_mid_stream_is_an_error_trace(exporting_tracegate, mlflow_client, mlflow_experiment):
    """Inferred from "upstream failures are ERROR": the backend cuts a streamed completion after
    two chunks, after a 200 head."""
    tg = exporting_tracegate()
    rid = request_id()
    with requests.post(f"{tg.url}/v1/chat/completions", json={**CHAT, "stream": True}, stream=True, timeout=10,
                       headers={"X-Fake-Fail-After": "2", "X-Request-ID": rid}) as r:
        assert r.status_code == 200
        try:  # the cut reaches the client as a broken body (test_failures checks that part)
            for _ in r.iter_content(chunk_size=None):
                pass
        except requests.exceptions.RequestException:
            pass
    trace = wait_for_trace(mlflow_client, mlflow_experiment, rid)
    assert state(trace) == "ERROR", trace.info


# ---- tags ------------------------------------------------------------------------------------


def test_static_and_header_copied_tags_are_on_the_trace(exporting_tracegate, mlflow_client, mlflow_experiment):
    tg = exporting_tracegate(trace_tags="environment=test,app.version=1.2.3", tag_headers="X-Tenant=tenant")
    tenant, with_tenant, without_tenant = unique("acme"), request_id(), request_id()
    r = requests.get(f"{tg.url}/echo", headers={"X-Tenant": tenant, "X-Request-ID": with_tenant}, timeout=10)
    assert r.status_code == 200
    r = requests.get(f"{tg.url}/echo", headers={"X-Request-ID": without_tenant}, timeout=10)
    assert r.status_code == 200

    tags = wait_for_trace(mlflow_client, mlflow_experiment, with_tenant).info.tags
    assert tags.get("environment") == "test", tags
    assert tags.get("app.version") == "1.2.3", tags
    assert tags.get("tenant") == tenant, tags
    found = wait_for_traces(mlflow_client, mlflow_experiment, f"tags.tenant = '{tenant}'", 1, settle=0.2)
    assert found[0].info.client_request_id == with_tenant

    tags = wait_for_trace(mlflow_client, mlflow_experiment, without_tenant).info.tags
    assert tags.get("environment") == "test" and tags.get("app.version") == "1.2.3", tags
    assert "tenant" not in tags, f"absent X-Tenant should give no tenant tag: {tags}"


# ---- secrets ---------------------------------------------------------------------------------


def test_credentials_appear_nowhere_in_the_exported_trace(exporting_tracegate, mlflow_server, mlflow_client,
                                                          mlflow_experiment):
    tg = exporting_tracegate()
    secrets = {"authorization": "sk-secret-" + uuid.uuid4().hex, "cookie": "cookie-secret-" + uuid.uuid4().hex,
               "api-key": "apikey-secret-" + uuid.uuid4().hex}
    rid, user = request_id(), unique("secret-user")
    # /status/200 answers a fixed body: /echo would copy the request headers into its response.
    r = requests.post(f"{tg.url}/status/200?body=fine", data=json.dumps({"q": "nothing secret here"}), headers={
        "Content-Type": "application/json", "X-Request-ID": rid, "X-User-ID": user,
        "Authorization": f"Bearer {secrets['authorization']}",
        "Cookie": f"session={secrets['cookie']}; theme=dark",
        "X-Api-Key": secrets["api-key"],
    }, timeout=10)
    assert r.status_code == 200 and r.text == "fine"
    trace = wait_for_trace(mlflow_client, mlflow_experiment, rid)
    assert trace.info.trace_metadata.get("mlflow.trace.user") == user  # the trace is the complete one
    assert trace.data.spans, "the trace has no spans, so the search below would prove little"
    exported = trace_json(trace) + trace_json_via_rest(mlflow_server.url, trace.info.trace_id)
    leaked = {name: value for name, value in secrets.items() if value in exported}
    assert not leaked, f"credentials found in the exported trace: {leaked}\n{exported[:3000]}"


# ---- awkward identifiers -----------------------------------------------------------------------


def test_odd_user_id_and_overlong_session_id_do_not_lose_the_batch(exporting_tracegate, mlflow_client,
                                                                   mlflow_experiment):
    # A longer batch delay so that all these requests go to MLflow in one batch: one invalid trace
    # must not get the whole batch rejected (MLflow refuses a batch with a session id > 250 chars).
    tg = exporting_tracegate(export_batch_delay="1s")
    batchmate = unique("batchmate")
    odd_user = 'o"Brien\' ü 用户 \\ %'
    long_session = unique("s" * 290)  # 301 characters
    odd_rid, long_rids = request_id(), [request_id(), request_id()]

    def normal():
        r = requests.get(f"{tg.url}/echo", headers={"X-User-ID": batchmate}, timeout=10)
        assert r.status_code == 200

    normal()
    normal()
    with RawHTTP("127.0.0.1", tg.port) as c:
        # Header bytes on the wire are the UTF-8 encoding of the user id.
        c.request("GET", "/echo", [("X-User-ID", odd_user.encode().decode("latin-1")), ("X-Request-ID", odd_rid)])
        resp = c.read_response()
    assert resp.status == 200, resp
    for rid in long_rids:
        r = requests.get(f"{tg.url}/echo", headers={"X-User-ID": batchmate + "-long", "X-Session-ID": long_session,
                                                     "X-Request-ID": rid}, timeout=10)
        assert r.status_code == 200
    normal()
    normal()

    wait_for_traces(mlflow_client, mlflow_experiment, user_is(batchmate), 4)
    odd = wait_for_trace(mlflow_client, mlflow_experiment, odd_rid)
    assert odd.info.trace_metadata.get("mlflow.trace.user") == odd_user, odd.info.trace_metadata
    # The overlong session is kept within MLflow's 250 characters, the same way for every trace of
    # the session, so the session still groups its traces.
    kept = []
    for rid in long_rids:
        metadata = wait_for_trace(mlflow_client, mlflow_experiment, rid).info.trace_metadata
        assert metadata.get("mlflow.trace.user") == batchmate + "-long"
        kept.append(metadata.get("mlflow.trace.session"))
    assert kept[0] is not None and 0 < len(kept[0]) <= 250, f"session metadata {kept[0]!r}"
    assert kept[0] == kept[1], kept
    wait_for_traces(mlflow_client, mlflow_experiment, session_is(kept[0]), 2, settle=0.2)


# ---- configuration ---------------------------------------------------------------------------


def test_experiment_named_by_flag_is_created_when_missing(exporting_tracegate, mlflow_client):
    name = unique("e2e-created-by-tracegate")
    assert mlflow_client.get_experiment_by_name(name) is None
    tg = exporting_tracegate(mlflow_experiment_id=None, mlflow_experiment_name=name)
    rid = request_id()
    assert requests.get(f"{tg.url}/echo", headers={"X-Request-ID": rid}, timeout=10).status_code == 200
    experiment = wait_until(lambda: mlflow_client.get_experiment_by_name(name), timeout=30,
                            message=f"experiment {name!r} to be created")
    assert experiment.lifecycle_stage == "active"
    wait_for_trace(mlflow_client, experiment.experiment_id, rid)


def test_export_is_configured_by_mlflow_environment_variables(exporting_tracegate, mlflow_server, mlflow_client):
    experiment_id = create_experiment(mlflow_client, "e2e-env")
    tg = exporting_tracegate(mlflow_tracking_uri=None, mlflow_experiment_id=None,
                             env={"MLFLOW_TRACKING_URI": mlflow_server.url, "MLFLOW_EXPERIMENT_ID": experiment_id})
    rid = request_id()
    assert requests.get(f"{tg.url}/echo", headers={"X-Request-ID": rid}, timeout=10).status_code == 200
    wait_for_trace(mlflow_client, experiment_id, rid)
    assert len(search(mlflow_client, experiment_id)) == 1


def test_experiment_name_from_environment_is_created_when_missing(exporting_tracegate, mlflow_server,
                                                                  mlflow_client):
    name = unique("e2e-env-name")
    tg = exporting_tracegate(mlflow_tracking_uri=None, mlflow_experiment_id=None,
                             env={"MLFLOW_TRACKING_URI": mlflow_server.url, "MLFLOW_EXPERIMENT_NAME": name})
    rid = request_id()
    assert requests.get(f"{tg.url}/echo", headers={"X-Request-ID": rid}, timeout=10).status_code == 200
    experiment = wait_until(lambda: mlflow_client.get_experiment_by_name(name), timeout=30,
                            message=f"experiment {name!r} to be created")
    wait_for_trace(mlflow_client, experiment.experiment_id, rid)
