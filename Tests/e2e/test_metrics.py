"""`GET /metrics` on the admin listener: Prometheus text, parsed with the reference parser, whose
counters match the requests sent, with gauges for what is in flight and token usage by model."""

from __future__ import annotations

import threading
import time

import requests
from openai import OpenAI
from prometheus_client.parser import text_string_to_metric_families

from mlflow_harness import request_id, wait_for_trace


def scrape(tg) -> dict[tuple[str, tuple], float]:
    """Every sample as {(name, sorted labels): value}."""
    response = requests.get(f"{tg.admin_url}/metrics", timeout=5)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def requests_total(samples, method: str, status_class: str) -> float:
    return samples.get(("tracegate_requests_total", (("method", method), ("status_class", status_class))), 0)


def wait_until(predicate, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    assert predicate()


def test_metrics_count_requests_by_method_and_status_class(proxy):
    session = requests.Session()
    for _ in range(5):
        assert session.get(f"{proxy.url}/echo").status_code == 200
    for _ in range(3):
        assert session.post(f"{proxy.url}/status/404", data=b"abcd").status_code == 404
    assert session.delete(f"{proxy.url}/status/503").status_code == 503
    assert session.request("PROPFIND", f"{proxy.url}/echo").status_code == 200
    # A request refused from its head alone is counted too, and is never "in flight".
    assert requests.get(f"{proxy.url}/echo", headers={"Content-Length": "x"}).status_code == 400

    samples = scrape(proxy)
    assert requests_total(samples, "GET", "2xx") == 5
    assert requests_total(samples, "POST", "4xx") == 3
    assert requests_total(samples, "DELETE", "5xx") == 1
    assert requests_total(samples, "other", "2xx") == 1, "uncommon methods share one label value"
    assert requests_total(samples, "GET", "4xx") == 1
    total = sum(v for (name, _), v in samples.items() if name == "tracegate_requests_total")
    assert total == 11
    assert samples[("tracegate_request_duration_seconds_count", ())] == 11
    assert samples[("tracegate_upstream_time_to_first_byte_seconds_count", ())] == 10
    assert samples[("tracegate_request_body_bytes_total", ())] == 12
    assert samples[("tracegate_response_body_bytes_total", ())] > 0
    assert samples[("tracegate_requests_in_flight", ())] == 0
    assert samples[("tracegate_streams_open", ())] == 0
    for (name, labels), _ in samples.items():
        assert not any(key in ("user", "session", "request_id", "path") for key, _ in labels), (name, labels)


def test_metrics_show_exchanges_and_streams_in_flight(proxy):
    done = threading.Event()

    def stream():
        with requests.get(f"{proxy.url}/sse?events=30&interval_ms=50", stream=True, timeout=10) as r:
            for _ in r.iter_content(None):
                pass
        done.set()

    thread = threading.Thread(target=stream)
    thread.start()
    wait_until(lambda: scrape(proxy)[("tracegate_streams_open", ())] == 1)
    assert scrape(proxy)[("tracegate_requests_in_flight", ())] == 1
    thread.join(10)
    assert done.is_set()
    wait_until(lambda: scrape(proxy)[("tracegate_streams_open", ())] == 0)
    assert scrape(proxy)[("tracegate_requests_in_flight", ())] == 0


def test_metrics_count_tokens_by_model_and_exported_traces(exporting_tracegate, backend, mlflow_client,
                                                           mlflow_experiment):
    tg = exporting_tracegate()
    client = OpenAI(base_url=f"{tg.url}/v1", api_key="sk-test", max_retries=0, timeout=15)
    expected = {"model-a": [0, 0], "model-b": [0, 0]}
    last_rid = None
    for model in ["model-a", "model-b", "model-a"]:
        last_rid = request_id()
        completion = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "count my tokens please"}],
            extra_headers={"X-Request-ID": last_rid})
        expected[model][0] += completion.usage.prompt_tokens
        expected[model][1] += completion.usage.completion_tokens
    wait_for_trace(mlflow_client, mlflow_experiment, last_rid)

    def tokens(samples, model, kind):
        return samples.get(("tracegate_tokens_total", (("kind", kind), ("model", model))), 0)

    wait_until(lambda: scrape(tg).get(("tracegate_traces_exported_total", ()), 0) == 3, timeout=10)
    samples = scrape(tg)
    for model, (prompt, completion) in expected.items():
        assert tokens(samples, model, "input") == prompt, samples
        assert tokens(samples, model, "output") == completion, samples
    assert samples[("tracegate_export_queue_traces", ())] == 0
    assert samples[("tracegate_traces_dropped_total", ())] == 0
