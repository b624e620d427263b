"""Fixtures: a fake backend in-process, and tracegate as a subprocess on free loopback ports."""

from __future__ import annotations

import pytest

from backend import Backend
from harness import E2E_TRACEGATE_BIN, Tracegate, TracegateFactory


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


@pytest.fixture
def start_tracegate(request, tmp_path):
    """A factory: start_tracegate(backend.url, first_byte_timeout="1s", ...) -> Tracegate."""
    if not E2E_TRACEGATE_BIN.exists():
        pytest.fail(f"tracegate binary not found at {E2E_TRACEGATE_BIN} (build it, or set E2E_TRACEGATE_BIN)")
    factory = TracegateFactory(tmp_path)
    yield factory
    problems = factory.teardown()
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        for tg in factory.started:
            print(f"\n--- tracegate {tg.args}\n--- stderr ({tg.stderr_path}):\n{tg.stderr()[-4000:]}"
                  f"\n--- stdout tail:\n{tg.stdout()[-2000:]}")
    assert not problems, "\n".join(problems)


@pytest.fixture
def backend():
    b = Backend(name="backend").start()
    yield b
    b.stop()


@pytest.fixture
def proxy(backend, start_tracegate) -> Tracegate:
    """tracegate with default settings in front of `backend`."""
    return start_tracegate(backend.url)


@pytest.fixture(scope="module")
def shared_backend():
    b = Backend(name="shared").start()
    yield b
    b.stop()


@pytest.fixture(scope="module")
def shared_proxy(shared_backend, tmp_path_factory):
    """One tracegate for a whole module of read-only tests (fidelity, headers)."""
    if not E2E_TRACEGATE_BIN.exists():
        pytest.fail(f"tracegate binary not found at {E2E_TRACEGATE_BIN} (build it, or set E2E_TRACEGATE_BIN)")
    factory = TracegateFactory(tmp_path_factory.mktemp("tracegate"))
    tg = factory(shared_backend.url)
    yield tg
    problems = factory.teardown()
    assert not problems, "\n".join(problems)


# ---- MLflow export ---------------------------------------------------------------------------
# The server starts on first use, once per session: only the MLflow tests request it, so the rest
# of the suite neither imports the MLflow SDK nor waits for the server.


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A running `mlflow server` (SQLite, one worker); `.url` is its base URL."""
    from mlflow_harness import MlflowServer

    server = MlflowServer(tmp_path_factory.mktemp("mlflow-server")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def mlflow_client(mlflow_server):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=mlflow_server.url)


@pytest.fixture
def ws_backend():
    """Our WebSocket chat backend (`ws_backend.py`), for one test."""
    from ws_backend import WebSocketBackend

    backend = WebSocketBackend().start()
    yield backend
    backend.stop()


@pytest.fixture(scope="module")
def mlflow_experiment(request, mlflow_client) -> str:
    """A fresh experiment (unique name) for the test module; its id."""
    from mlflow_harness import create_experiment

    return create_experiment(mlflow_client, prefix=f"e2e-{request.module.__name__}")


@pytest.fixture
def exporting_tracegate(backend, start_tracegate, mlflow_server, mlflow_experiment):
    """A factory: tracegate in front of `backend` (or `upstream=`), exporting to the module's
    experiment with a 100ms batch delay; keyword flags are added or override those (None drops
    one, e.g. mlflow_experiment_id=None to name the experiment instead)."""
    from mlflow_harness import require_mlflow_export

    require_mlflow_export()

    def start(*extra: str, upstream: str | None = None, **flags):
        settings = {"mlflow_tracking_uri": mlflow_server.url, "mlflow_experiment_id": mlflow_experiment,
                    "export_batch_delay": "100ms", **flags}
        return start_tracegate(upstream or backend.url, *extra,
                               **{k: v for k, v in settings.items() if v is not None})

    return start
