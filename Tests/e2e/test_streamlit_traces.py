"""A Streamlit chat app (WebSocket only, protobuf messages) through tracegate, used from a real
browser: each run the page asks for is a turn, and its trace carries the texts the binary messages
hold — the question typed in the chat input, the answer streamed back.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from helpers import BrowserTab, free_port, stop_process_group, wait_until
from mlflow_harness import root_span, search, state

HERE = Path(__file__).parent
STREAM = "WS /_stcore/stream"


@pytest.fixture
def streamlit_app(tmp_path):
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(HERE / "streamlit_chat.py"), "--server.port", str(port),
         "--server.address", "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false",
         "--server.fileWatcherType", "none"],
        cwd=tmp_path, stdout=(tmp_path / "streamlit.log").open("wb"), stderr=subprocess.STDOUT, start_new_session=True)

    def healthy() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as response:
                return response.status == 200
        except OSError:
            assert proc.poll() is None, (tmp_path / "streamlit.log").read_text()
            return False

    wait_until(healthy, 60, interval=0.2, message="streamlit to start")
    yield f"http://127.0.0.1:{port}"
    stop_process_group(proc, 15, 10, "streamlit", then=9)


def texts(described) -> list[str]:
    """Every text of a turn's inputs or outputs: binary messages are noted as {"binary", "size", "texts"}."""
    items = described if isinstance(described, list) else [described]
    return [text for item in items if isinstance(item, dict) for text in item.get("texts", [])]


def test_a_streamlit_chat_used_from_a_browser_is_traced_turn_by_turn(streamlit_app, exporting_tracegate, mlflow_client,
                                                                    mlflow_experiment):
    tg = exporting_tracegate(upstream=streamlit_app)
    questions = ["the blue kettle", "my order 42"]
    tab = BrowserTab()
    try:
        tab.call("Page.navigate", url=f"http://127.0.0.1:{tg.port}/")
        chat_input = "document.querySelector('textarea[data-testid=stChatInputTextArea]')"
        tab.wait_for(f"!!{chat_input}", timeout=60)
        for question in questions:
            tab.evaluate(f"{chat_input}.focus()")
            tab.type_and_enter(question)
            tab.wait_for(f"document.body.innerText.includes({json.dumps(f'About {question}: refunds take 5 days.')})")
        tab.close_page()  # the user closes the tab: the browser closes the WebSocket (1001)

        def turns():
            found = [t for t in search(mlflow_client, mlflow_experiment) if root_span(t).name == STREAM]
            asked = [q for q in questions if any(q in texts(root_span(t).inputs) for t in found)]
            return found if asked == questions and len(found) >= 3 else None

        traces = sorted(wait_until(turns, 60, interval=0.5, message="the chat's turns in MLflow"),
                        key=lambda t: int(root_span(t).attributes["tracegate.websocket.turn"]))
    finally:
        tab.close()
    roots = [root_span(t) for t in traces]
    endings = [(root.attributes["tracegate.websocket.ended_by"], state(t), root.attributes.get("tracegate.websocket.notes"))
               for root, t in zip(roots, traces)]
    assert all(ok == "OK" for _, ok, _ in endings), endings
    assert roots[-1].attributes["tracegate.websocket.ended_by"] == "close frame 1001"
    assert len({t.info.trace_metadata["mlflow.trace.session"] for t in traces}) == 1, "one connection, one session"
    assert "Refund desk" in texts(roots[0].outputs), "the first run renders the page"
    for question in questions:
        [turn] = [root for root in roots if question in texts(root.inputs)]
        assert f"About {question}: refunds take 5 days." in texts(turn.outputs), turn.outputs
        assert turn.inputs["binary"] is True and turn.inputs["size"] > len(question)
    asked = [next(i for i, root in enumerate(roots) if q in texts(root.inputs)) for q in questions]
    assert asked == sorted(asked), "turns in the order the questions were asked"
