"""OpenTelemetry export next to MLflow: OTLP/HTTP to a receiver on loopback configured with the
standard OTEL_* variables, GenAI semantic-convention attributes, and W3C traceparent honoured and
propagated upstream."""

from __future__ import annotations

import uuid

import pytest
import requests

from helpers import wait_until
from mlflow_harness import request_id, unique, wait_for_trace
from otlp_receiver import OtlpReceiver


@pytest.fixture
def receiver():
    r = OtlpReceiver().start()
    yield r
    r.stop()


def _otel_env(receiver: OtlpReceiver) -> dict:
    return {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_EXPORTER_OTLP_HEADERS": "x-otel-key=s%3Dcret",
            "OTEL_SERVICE_NAME": "chat-gateway", "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=e2e"}


def _span_of(receiver: OtlpReceiver, rid: str) -> dict:
    """The root (SERVER) span of the exchange with this request id."""
    def found():
        spans = [s for s in receiver.spans() if s["_attributes"].get("tracegate.request_id") == rid]
        return spans[0] if spans else None
    return wait_until(found, 20, interval=0.05, message=f"an OTLP span for {rid}")


def _upstream_span_of(receiver: OtlpReceiver, root: dict) -> dict:
    """The root span's one child: the CLIENT span of the call to the upstream."""
    children = [s for s in receiver.spans() if s["traceId"] == root["traceId"] and s.get("parentSpanId") == root["spanId"]]
    assert len(children) == 1, children
    assert children[0]["kind"] == 3, "SPAN_KIND_CLIENT"
    return children[0]


def test_the_same_trace_reaches_mlflow_and_the_otlp_receiver(backend, start_tracegate, receiver, mlflow_server,
                                                             mlflow_client, mlflow_experiment):
    tg = start_tracegate(backend.url, env=_otel_env(receiver), mlflow_tracking_uri=mlflow_server.url,
                         mlflow_experiment_id=mlflow_experiment, export_batch_delay="50ms")
    rid, user, session = request_id(), unique("otel-user"), unique("otel-session")
    r = requests.post(f"{tg.url}/v1/chat/completions", timeout=10,
                      headers={"X-Request-ID": rid, "X-User-ID": user, "X-Session-ID": session},
                      json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200
    span = _span_of(receiver, rid)
    attrs = span["_attributes"]
    assert span["kind"] == 2, "SPAN_KIND_SERVER"
    assert attrs["user.id"] == user and attrs["session.id"] == session
    assert attrs["http.response.status_code"] == 200
    model_call = _upstream_span_of(receiver, span)["_attributes"]
    assert model_call["gen_ai.operation.name"] == "chat" and model_call["gen_ai.request.model"] == "gpt-4o-mini"
    usage = r.json()["usage"]
    assert model_call["gen_ai.usage.input_tokens"] == usage["prompt_tokens"]
    assert model_call["gen_ai.usage.output_tokens"] == usage["completion_tokens"]
    assert "gen_ai.usage.input_tokens" not in attrs, "usage is counted once, on the model call"
    assert span["_resource"]["service.name"] == "chat-gateway"
    assert span["_resource"]["deployment.environment"] == "e2e"
    assert all(req["headers"].get("x-otel-key") == "s=cret" for req in receiver.requests)
    trace = wait_for_trace(mlflow_client, mlflow_experiment, rid)
    assert trace.info.trace_id == "tr-" + span["traceId"], "one trace id in both backends"
    assert r.headers["X-MLflow-Trace-Id"] == trace.info.trace_id


def test_incoming_traceparent_is_continued_and_propagated_upstream(backend, start_tracegate, receiver,
                                                                   mlflow_server, mlflow_client, mlflow_experiment):
    tg = start_tracegate(backend.url, env=_otel_env(receiver), mlflow_tracking_uri=mlflow_server.url,
                         mlflow_experiment_id=mlflow_experiment, export_batch_delay="50ms")
    caller_trace, caller_span = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    rid = request_id()
    r = requests.get(f"{tg.url}/echo", timeout=10,
                     headers={"X-Request-ID": rid, "traceparent": f"00-{caller_trace}-{caller_span}-01",
                              "tracestate": "vendor=1"})
    assert r.status_code == 200
    upstream = {name.lower(): value for name, value in r.json()["headers"]}
    span = _span_of(receiver, rid)
    assert span["traceId"] == caller_trace, "the trace continues the caller's"
    assert span["parentSpanId"] == caller_span
    call = _upstream_span_of(receiver, span)
    assert upstream["traceparent"] == f"00-{caller_trace}-{call['spanId']}-01", \
        "tracegate's span for the upstream call is the upstream's parent"
    assert upstream["tracestate"] == "vendor=1"
    assert r.headers["X-MLflow-Trace-Id"] == f"tr-{caller_trace}"
    trace = wait_for_trace(mlflow_client, mlflow_experiment, rid)
    root = [s for s in trace.data.spans if s.parent_id is None]
    assert len(root) == 1 and root[0].attributes.get("tracegate.parent_span_id") == caller_span, \
        "in MLflow tracegate's span stays the root and names the caller's span"


def test_without_traceparent_a_new_one_is_sent_upstream(backend, start_tracegate, receiver):
    tg = start_tracegate(backend.url, env=_otel_env(receiver))
    rid = request_id()
    r = requests.get(f"{tg.url}/echo", headers={"X-Request-ID": rid, "traceparent": "00-bogus"}, timeout=10)
    upstream = {name.lower(): value for name, value in r.json()["headers"]}
    span = _span_of(receiver, rid)
    call = _upstream_span_of(receiver, span)
    assert upstream["traceparent"] == f"00-{span['traceId']}-{call['spanId']}-01"
    assert "parentSpanId" not in span or not span["parentSpanId"], "an invalid traceparent is ignored"


def test_otlp_export_survives_a_receiver_outage(backend, start_tracegate, receiver):
    tg = start_tracegate(backend.url, env=_otel_env(receiver), export_batch_delay="50ms")
    receiver.down = True
    ids = [request_id() for _ in range(10)]
    for rid in ids:
        assert requests.get(f"{tg.url}/echo", headers={"X-Request-ID": rid}, timeout=10).status_code == 200
    wait_until(lambda: "tracegate_spool_traces 10" in requests.get(f"{tg.admin_url}/metrics", timeout=5).text, 15,
               message="the traces to wait in the OTLP spool")
    receiver.down = False
    wait_until(lambda: {s["_attributes"].get("tracegate.request_id") for s in receiver.spans()} >= set(ids), 30,
               message="every trace at the receiver once it is back")
    seen = [s["_attributes"]["tracegate.request_id"] for s in receiver.spans() if not s.get("parentSpanId")]
    assert sorted(seen) == sorted(ids), "each trace exactly once"
