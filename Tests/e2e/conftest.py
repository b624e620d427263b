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


