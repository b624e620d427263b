"""User feedback through tracegate (`feedback_path`): posted by request id or trace id, it becomes an
MLflow assessment on the exchange's trace — exactly once, even when posted before the trace is
exported or while the tracking server is down. Read back with MlflowClient.get_trace(...).info.assessments."""

from __future__ import annotations

import json
import time
import uuid

import pytest
import requests
from openai import OpenAI

from fault_proxy import FaultProxy
from helpers import StaticPage, browser_result, wait_until
from mlflow_harness import get_trace_when, request_id, unique, wait_for_trace

FEEDBACK = "/_tracegate/feedback"
MESSAGES = [{"role": "user", "content": "rate me"}]


@pytest.fixture
def fault_proxy(mlflow_server):
    proxy = FaultProxy(mlflow_server.url).start()
    yield proxy
    proxy.stop()


def chat(tg, rid: str, user: str | None = None) -> str:
    """One chat turn through the official client; returns the trace id tracegate announced."""
    headers = {"X-Request-ID": rid}
    if user:
        headers["X-User-ID"] = user
    raw = OpenAI(base_url=f"{tg.url}/v1", api_key="sk-test", max_retries=0, timeout=15).chat.completions.with_raw_response.create(
        model="m", messages=MESSAGES, extra_headers=headers)
    return raw.headers["X-MLflow-Trace-Id"]


def post(tg, body, headers: dict | None = None, raw: bytes | None = None) -> requests.Response:
    return requests.post(f"{tg.url}{FEEDBACK}", data=raw if raw is not None else json.dumps(body), timeout=15,
                         headers={"Content-Type": "application/json", **(headers or {})})


def feedbacks(trace) -> list[tuple]:
    return [(a.name, a.value, a.source.source_type, a.source.source_id, a.rationale)
            for a in trace.info.assessments if a.metadata and "tracegate.feedback_id" in a.metadata]


def test_feedback_by_request_id_becomes_a_human_assessment_from_the_same_user(exporting_tracegate, mlflow_client,
                                                                            mlflow_experiment):
    tg = exporting_tracegate(feedback_path=FEEDBACK)
    rid, user = request_id(), unique("fb-user")
    trace_id = chat(tg, rid, user)
    r = post(tg, {"request_id": rid, "name": "thumbs_up", "value": True, "rationale": "clear answer",
                  "metadata": {"page": "chat"}}, headers={"X-User-ID": user})
    assert r.status_code == 202, r.text
    assert r.json()["trace_id"] == trace_id
    trace = get_trace_when(mlflow_client, trace_id, lambda t: feedbacks(t))
    assert feedbacks(trace) == [("thumbs_up", True, "HUMAN", user, "clear answer")]
    [assessment] = [a for a in trace.info.assessments if a.name == "thumbs_up"]
    assert assessment.metadata["page"] == "chat"
    wait_until(lambda: "tracegate_feedback_delivered_total 1\n" in requests.get(f"{tg.admin_url}/metrics", timeout=5).text, 10,
               message="the delivery counted")
    metrics = requests.get(f"{tg.admin_url}/metrics", timeout=5).text
    assert "tracegate_feedback_accepted_total 1\n" in metrics and "tracegate_feedback_pending 0.0\n" in metrics, metrics


def test_feedback_posted_before_its_trace_is_exported_arrives_once(exporting_tracegate, backend, mlflow_client,
                                                                  mlflow_experiment):
    tg = exporting_tracegate(feedback_path=FEEDBACK, export_batch_delay="3s")
    rid = request_id()
    trace_id = chat(tg, rid)
    before = backend.snapshot()["requests"]
    r = post(tg, {"trace_id": trace_id, "name": "score", "value": {"stars": 4}})
    assert r.status_code == 202, r.text
    r = post(tg, {"request_id": rid, "name": "thumbs_up", "value": False})
    assert r.status_code == 202, r.text
    assert backend.snapshot()["requests"] == before, "feedback never reaches the upstream"
    trace = get_trace_when(mlflow_client, trace_id, lambda t: len(feedbacks(t)) == 2, timeout=30)
    assert sorted(f[:2] for f in feedbacks(trace)) == [("score", {"stars": 4}), ("thumbs_up", False)]


def test_feedback_during_a_tracking_server_outage_arrives_exactly_once(start_tracegate, backend, fault_proxy,
                                                                      mlflow_client, mlflow_experiment):
    tg = start_tracegate(backend.url, mlflow_tracking_uri=fault_proxy.url, mlflow_experiment_id=mlflow_experiment,
                         export_batch_delay="50ms", feedback_path=FEEDBACK)
    fault_proxy.mode = "fail"
    rid = request_id()
    trace_id = chat(tg, rid)
    r = post(tg, {"request_id": rid, "name": "thumbs_up", "value": True})
    assert r.status_code == 202, r.text
    wait_until(lambda: fault_proxy.count("fail /v1/traces") > 0, 10, message="an export attempt to fail")
    fault_proxy.mode = "pass"
    trace = get_trace_when(mlflow_client, trace_id, lambda t: feedbacks(t), timeout=60)
    time.sleep(2)  # give a duplicate every chance to show up
    assert len(feedbacks(mlflow_client.get_trace(trace_id))) == 1, feedbacks(mlflow_client.get_trace(trace_id))


def test_a_request_id_from_before_a_restart_is_found_in_mlflow(exporting_tracegate, mlflow_client, mlflow_experiment):
    first = exporting_tracegate(feedback_path=FEEDBACK)
    rid = request_id()
    trace_id = chat(first, rid)
    wait_for_trace(mlflow_client, mlflow_experiment, rid)
    first.stop()
    second = exporting_tracegate(feedback_path=FEEDBACK)
    r = post(second, {"request_id": rid, "name": "thumbs_up", "value": True})
    assert r.status_code == 202, r.text
    assert r.json()["trace_id"] == trace_id
    assert feedbacks(get_trace_when(mlflow_client, trace_id, lambda t: feedbacks(t)))[0][:2] == ("thumbs_up", True)


def test_bad_feedback_gets_a_clear_error_and_the_proxy_keeps_serving(exporting_tracegate, backend):
    tg = exporting_tracegate(feedback_path=FEEDBACK)
    cases = [
        (post(tg, None, raw=b"{not json"), 400, "JSON object"),
        (post(tg, {"name": "n", "value": 1}), 400, "request_id"),
        (post(tg, {"request_id": "r", "name": "n"}), 400, "value is required"),
        (post(tg, {"trace_id": "tr-zz", "name": "n", "value": 1}), 400, "32 hex digits"),
        (post(tg, {"request_id": f"never-{uuid.uuid4().hex}", "name": "n", "value": 1}), 404, "no traced exchange"),
        (post(tg, {"trace_id": "tr-" + uuid.uuid4().hex, "name": "n", "value": 1}), 404, "no trace"),
        (post(tg, None, raw=json.dumps({"request_id": "r", "name": "n", "value": "x" * 70_000}).encode()), 413, "64"),
        (requests.get(f"{tg.url}{FEEDBACK}", timeout=10), 405, "POST"),
    ]
    for response, status, words in cases:
        assert response.status_code == status and words in response.json()["error"], (status, response.text)
    assert requests.get(f"{tg.url}/echo", timeout=10).status_code == 200


def test_a_browser_page_from_a_listed_origin_may_post_and_others_may_not(exporting_tracegate, mlflow_client):
    tg = exporting_tracegate(feedback_path=FEEDBACK, feedback_cors_origins="https://chat.example.com")
    preflight = requests.options(f"{tg.url}{FEEDBACK}", timeout=10, headers={
        "Origin": "https://chat.example.com", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type"})
    assert preflight.status_code == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == "https://chat.example.com"
    assert preflight.headers["Access-Control-Allow-Credentials"] == "true"
    assert "content-type" in preflight.headers["Access-Control-Allow-Headers"]
    refused = requests.options(f"{tg.url}{FEEDBACK}", timeout=10, headers={
        "Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
    assert refused.status_code == 403 and "Access-Control-Allow-Origin" not in refused.headers

    rid = request_id()
    trace_id = chat(tg, rid)
    foreign = post(tg, {"request_id": rid, "name": "n", "value": 1}, headers={"Origin": "https://evil.example"})
    assert foreign.status_code == 403, "a page elsewhere cannot post in its visitor's name"
    listed = post(tg, {"request_id": rid, "name": "n", "value": 1}, headers={"Origin": "https://chat.example.com"})
    assert listed.status_code == 202 and listed.headers["Access-Control-Allow-Origin"] == "https://chat.example.com"
    get_trace_when(mlflow_client, trace_id, lambda t: feedbacks(t))


def test_feedback_needs_an_mlflow_tracking_server(backend, tmp_path):
    from harness import run_tracegate

    result = run_tracegate(["--upstream", backend.url, "--feedback-path", FEEDBACK, "--listen", "127.0.0.1:0",
                            "--admin-listen", "127.0.0.1:0"], timeout=20)
    assert result.returncode == 2 and "feedback_path" in result.stderr and "MLFLOW_TRACKING_URI" in result.stderr, result


class ChatPage(StaticPage):
    """A chat page on its own origin: it sets a cookie for the host, then posts feedback to tracegate
    with fetch (JSON, so the browser sends a CORS preflight first) and shows what came back."""

    def __init__(self):
        self.feedback_url = ""
        self.request_id = ""
        super().__init__()

    def html(self) -> str:
        return f"""<!doctype html><html><body><pre id="result">pending</pre><script>
document.cookie = "uid=browser-user; path=/";
fetch({json.dumps(self.feedback_url)}, {{method: "POST", credentials: "include",
  headers: {{"Content-Type": "application/json"}},
  body: JSON.stringify({{request_id: {json.dumps(self.request_id)}, name: "thumbs_up", value: true}})}})
  .then(r => r.text().then(t => document.getElementById("result").textContent = r.status + " " + t))
  .catch(e => document.getElementById("result").textContent = "blocked " + e);
</script></body></html>"""


def test_a_chat_page_in_a_real_browser_posts_feedback_with_its_cookie_and_a_foreign_page_cannot(
        exporting_tracegate, mlflow_client):
    page, foreign = ChatPage().start(), ChatPage().start()
    try:
        tg = exporting_tracegate(feedback_path=FEEDBACK, user_from="cookie:uid", feedback_cors_origins=page.url)
        rid = request_id()
        trace_id = chat(tg, rid)
        for p in (page, foreign):
            p.feedback_url, p.request_id = f"{tg.url}{FEEDBACK}", rid
        shown = browser_result(page.url)
        assert shown.startswith("202 "), shown
        assert json.loads(shown[4:])["trace_id"] == trace_id
        trace = get_trace_when(mlflow_client, trace_id, lambda t: feedbacks(t))
        assert feedbacks(trace) == [("thumbs_up", True, "HUMAN", "browser-user", None)], "the cookie went along"
        assert browser_result(foreign.url).startswith("blocked"), "an origin not listed is refused"
    finally:
        page.stop()
        foreign.stop()


def test_a_trace_of_another_experiment_cannot_be_given_feedback(exporting_tracegate, mlflow_server, mlflow_client,
                                                               monkeypatch):
    """The endpoint is open to clients; tracegate's credentials may reach experiments it does not export to."""
    import mlflow

    from mlflow_harness import create_experiment, sdk_tracking_uri

    monkeypatch.setenv("MLFLOW_EXPERIMENT_ID", create_experiment(mlflow_client, "not-tracegates"))
    with sdk_tracking_uri(mlflow_server.url):
        with mlflow.start_span("someone else's app") as span:
            pass
        mlflow.flush_trace_async_logging()
    get_trace_when(mlflow_client, span.trace_id)
    tg = exporting_tracegate(feedback_path=FEEDBACK)
    r = post(tg, {"trace_id": span.trace_id, "name": "n", "value": 1})
    assert r.status_code == 404, r.text
