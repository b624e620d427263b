"""tracegate run by an ordinary user, as a service account or a container's user runs it: nothing
it does on a connection (socket options included) may need root.

When the suite runs as root, the process drops to uid/gid 65534 (nobody) before exec."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest
import requests

from harness import E2E_TRACEGATE_BIN, TracegateFactory
from helpers import wait_until

UNPRIVILEGED = 65534


def _drop_to_nobody() -> None:
    os.setgroups([])
    os.setgid(UNPRIVILEGED)
    os.setuid(UNPRIVILEGED)


@pytest.fixture
def unprivileged_tracegate():
    """A factory like start_tracegate whose processes run without root, in a directory they own
    (the binary is copied there: the build directory may not be reachable by another user)."""
    workdir = Path(tempfile.mkdtemp(prefix="tracegate-unprivileged-"))
    binary = workdir / "tracegate"
    shutil.copy2(E2E_TRACEGATE_BIN, binary)
    os.chmod(binary, 0o755)
    drop = None
    if os.geteuid() == 0:
        os.chown(workdir, UNPRIVILEGED, UNPRIVILEGED)
        drop = _drop_to_nobody
    factory = TracegateFactory(workdir, binary=binary)
    yield lambda *args, **kwargs: factory(*args, preexec_fn=drop, **kwargs)
    problems = factory.teardown()
    shutil.rmtree(workdir, ignore_errors=True)
    assert not problems, "\n".join(problems)


def test_an_unprivileged_process_forwards_logs_and_traces(backend, unprivileged_tracegate):
    trace_file = "traces.jsonl"
    tg = unprivileged_tracegate(backend.url, trace_file=trace_file)
    status = Path(f"/proc/{tg.pid}/status").read_text()
    uid = next(line.split()[1] for line in status.splitlines() if line.startswith("Uid:"))
    assert uid != "0", "the process under test runs as root"

    # Both sides of the proxy: the accepted client connection and the upstream connection it opens
    # (a socket option only root may set fails either one).
    first = requests.get(f"{tg.url}/echo?n=1", headers={"X-Request-ID": "unprivileged-1"}, timeout=5)
    assert first.status_code == 200, (first.status_code, first.text, tg.stderr()[-2000:])
    assert first.headers["X-Backend"] == backend.name
    second = requests.post(f"{tg.url}/v1/chat/completions", timeout=5, headers={"X-Request-ID": "unprivileged-2"},
                           json={"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    assert second.status_code == 200, (second.status_code, second.text)

    metrics = requests.get(f"{tg.admin_url}/metrics", timeout=5)
    assert metrics.status_code == 200 and "tracegate_requests_total" in metrics.text

    traces = Path(tg.stdout_path).parent / trace_file
    lines = wait_until(lambda: traces.exists() and len(traces.read_text().splitlines()) >= 2 and
                       traces.read_text().splitlines(), timeout=10,
                       message="two traces in the file written by the unprivileged process")
    ids = sorted(json.loads(line)["clientRequestID"] for line in lines)
    assert ids == ["unprivileged-1", "unprivileged-2"], lines
    # The access log is flushed on a timer.
    wait_until(lambda: any('"GET /echo?n=1"' in line for line in tg.stdout_lines()), timeout=10,
               message="the access log line of the first request")
