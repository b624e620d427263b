"""Who is talking, and in which conversation, taken from what unmodified clients already send: a JWT,
the OpenAI `user` field, a cookie, W3C baggage, a query parameter, a Responses API
`previous_response_id` chain; optionally pseudonymised. Read back from a real MLflow server."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import subprocess

import requests
from openai import OpenAI

from mlflow_harness import request_id, root_span, search, session_is, trace_json, unique, user_is, wait_for_trace

MESSAGES = [{"role": "user", "content": "who am i"}]


def jwt(claims: dict) -> str:
    def part(value: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()
    return f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part(claims)}.c2lnbmF0dXJlLW5vdC1jaGVja2Vk"


def client(tg, api_key: str = "sk-test", **headers) -> OpenAI:
    return OpenAI(base_url=f"{tg.url}/v1", api_key=api_key, max_retries=0, timeout=15, default_headers=headers)


def user_and_sources(trace) -> tuple:
    root = root_span(trace)
    return (trace.info.trace_metadata.get("mlflow.trace.user"), root.attributes.get("tracegate.user.source"),
            trace.info.trace_metadata.get("mlflow.trace.session"), root.attributes.get("tracegate.session.source"))


def test_the_user_comes_from_the_bearer_jwt_the_openai_client_sends(exporting_tracegate, mlflow_client, mlflow_experiment):
    tg = exporting_tracegate(user_from="header:X-User-ID, jwt:sub")
    user, rid = unique("jwt-user"), request_id()
    token = jwt({"sub": user, "email": "someone@example.com"})
    client(tg, api_key=token).chat.completions.create(model="m", messages=MESSAGES, extra_headers={"X-Request-ID": rid})
    trace = wait_for_trace(mlflow_client, mlflow_experiment, rid)
    assert user_and_sources(trace)[:2] == (user, "jwt:sub")
    assert token not in trace_json(trace) and token.split(".")[1] not in trace_json(trace), "the token is never exported"
    # The filter an analysis script uses finds it.
    assert [t.info.client_request_id for t in search(mlflow_client, mlflow_experiment, user_is(user))] == [rid]


def test_the_user_comes_from_the_openai_user_field_and_a_header_still_wins(exporting_tracegate, mlflow_client,
                                                                           mlflow_experiment):
    tg = exporting_tracegate(user_from="header:X-User-ID, body:user")
    from_body, from_header, rid1, rid2 = unique("body-user"), unique("header-user"), request_id(), request_id()
    chat = client(tg)
    chat.chat.completions.create(model="m", messages=MESSAGES, user=from_body, extra_headers={"X-Request-ID": rid1})
    chat.chat.completions.create(model="m", messages=MESSAGES, user=from_body,
                                 extra_headers={"X-Request-ID": rid2, "X-User-ID": from_header})
    assert user_and_sources(wait_for_trace(mlflow_client, mlflow_experiment, rid1))[:2] == (from_body, "body:user")
    assert user_and_sources(wait_for_trace(mlflow_client, mlflow_experiment, rid2))[:2] == \
        (from_header, "header:X-User-ID")


def test_user_and_session_from_a_cookie_sent_by_curl(exporting_tracegate, mlflow_client, mlflow_experiment):
    tg = exporting_tracegate(user_from="cookie:uid", session_from="cookie:chat_session")
    user, session, rid = unique("cookie-user"), unique("cookie-session"), request_id()
    result = subprocess.run(
        ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-b", f"theme=dark; uid={user}; chat_session={session}",
         "-H", f"X-Request-ID: {rid}", "-H", "Content-Type: application/json",
         "--data", json.dumps({"model": "m", "messages": MESSAGES}), f"{tg.url}/v1/chat/completions"],
        capture_output=True, text=True, timeout=20)
    assert result.stdout == "200", result
    assert user_and_sources(wait_for_trace(mlflow_client, mlflow_experiment, rid)) == \
        (user, "cookie:uid", session, "cookie:chat_session")


def test_baggage_and_query_parameters_are_sources_too(exporting_tracegate, mlflow_client, mlflow_experiment):
    tg = exporting_tracegate(user_from="baggage:user.id", session_from="query:conversation")
    user, session, rid = unique("baggage-user"), unique("query-session"), request_id()
    r = requests.get(f"{tg.url}/echo", params={"conversation": session}, timeout=10,
                     headers={"X-Request-ID": rid, "baggage": f"tenant=t1,user.id={user};ttl=5"})
    assert r.status_code == 200
    assert user_and_sources(wait_for_trace(mlflow_client, mlflow_experiment, rid)) == \
        (user, "baggage:user.id", session, "query:conversation")


def test_a_responses_api_conversation_chained_by_previous_response_id_is_one_session(
        exporting_tracegate, mlflow_client, mlflow_experiment):
    tg = exporting_tracegate(user_from="body:user", session_from="header:X-Session-ID, chain:previous_response_id")
    user = unique("chain-user")
    chat = client(tg)
    ids, previous = [], None
    for turn in ["hello", "and then?", "thanks"]:
        rid = request_id()
        response = chat.responses.create(model="m", input=turn, user=user, previous_response_id=previous,
                                         extra_headers={"X-Request-ID": rid})
        ids.append((rid, response.id))
        previous = response.id
    other_rid = request_id()
    chat.responses.create(model="m", input="a new conversation", user=user, extra_headers={"X-Request-ID": other_rid})

    first_response = ids[0][1]
    for rid, _ in ids:
        trace = wait_for_trace(mlflow_client, mlflow_experiment, rid)
        assert user_and_sources(trace)[2:] == (first_response, "chain:previous_response_id")
    other = wait_for_trace(mlflow_client, mlflow_experiment, other_rid)
    assert user_and_sources(other)[2] != first_response
    turns = search(mlflow_client, mlflow_experiment, session_is(first_response))
    assert sorted(t.info.client_request_id for t in turns) == sorted(rid for rid, _ in ids), \
        "the Sessions view shows the three turns together"


def test_pseudonymised_users_group_and_never_appear_in_clear(exporting_tracegate, mlflow_client, mlflow_experiment,
                                                              tmp_path):
    key = "k3y-0f-at-least-16-characters"
    key_file = tmp_path / "identity.key"
    key_file.write_text(key + "\n")
    tg = exporting_tracegate(user_from="jwt:email", identity_hash="hmac-sha256", identity_hash_key_file=str(key_file))
    alice, bob = f"{unique('alice')}@example.com", f"{unique('bob')}@example.com"
    rids = {}
    for who in [alice, bob, alice]:
        rid = request_id()
        client(tg, api_key=jwt({"sub": "x", "email": who})).chat.completions.create(
            model="m", messages=MESSAGES, extra_headers={"X-Request-ID": rid})
        rids.setdefault(who, []).append(rid)

    def pseudonym(value: str) -> str:
        return hmac.new(key.encode(), value.encode(), hashlib.sha256).hexdigest()

    for who, expected in rids.items():
        traces = [wait_for_trace(mlflow_client, mlflow_experiment, rid) for rid in expected]
        for trace in traces:
            assert trace.info.trace_metadata.get("mlflow.trace.user") == pseudonym(who)
            assert who not in trace_json(trace)
        found = search(mlflow_client, mlflow_experiment, user_is(pseudonym(who)))
        assert sorted(t.info.client_request_id for t in found) == sorted(expected), "one user's traces group"


def test_an_untraced_turn_in_the_middle_does_not_break_the_chain(exporting_tracegate, mlflow_client, mlflow_experiment):
    tg = exporting_tracegate(session_from="chain:previous_response_id", sample_ratio="0")
    chat = client(tg)
    traced, previous, first = [], None, None
    for n, forced in enumerate([True, False, True]):
        rid = request_id()
        headers = {"X-Request-ID": rid, **({"X-Tracegate-Force-Trace": "1"} if forced else {})}
        response = chat.responses.create(model="m", input=f"turn {n}", previous_response_id=previous, extra_headers=headers)
        first = first or response.id
        previous = response.id
        if forced:
            traced.append(rid)
    sessions = [user_and_sources(wait_for_trace(mlflow_client, mlflow_experiment, rid))[2] for rid in traced]
    assert sessions == [first, first], "the third turn joins the first turn's session through the untraced second"
