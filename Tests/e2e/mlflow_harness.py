"""An MLflow tracking server for the export tests, and reading tracegate's traces back from it.

Only the MLflow tests import this module (through fixtures), so the rest of the suite pays
neither for importing the MLflow SDK nor for starting the server.

The server: `mlflow server` (the one next to this Python, i.e. `.venv/bin/mlflow`) on SQLite in a
temporary directory, one uvicorn worker, in its own process group so that stopping it also stops
the uvicorn child. The server's job runner (huey consumers, used for scheduled server jobs the
tests do not need) is switched off with MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false: it would add
seven processes and about ten seconds to the start-up, and plain SIGTERM leaves them behind.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import requests

from harness import E2E_TRACEGATE_BIN
from helpers import free_port, stop_process_group, wait_until

SERVER_START_TIMEOUT = 120.0  # a cold start imports a lot of Python; about 15s on the dev VM
SERVER_STOP_TIMEOUT = 15.0

# How long a trace may take from the response to being searchable: the export batch delay
# (tests use 100ms), the OTLP post and the StartTraceV3 upsert, on a loaded CI machine.
TRACE_TIMEOUT = 30.0
# After the expected count is reached, how long it must stay exactly that ("exactly N" is honest).
SETTLE = 1.0

TRACE_ID_RE = re.compile(r"^tr-[0-9a-f]{32}$")


def mlflow_executable() -> str:
    """The `mlflow` console script of the Python running the tests (.venv/bin/mlflow)."""
    beside = Path(sys.executable).parent / "mlflow"
    if beside.exists():
        return str(beside)
    found = shutil.which("mlflow")
    if not found:
        raise AssertionError(f"no `mlflow` executable next to {sys.executable} or on PATH "
                             f"(pip install -r Tests/e2e/requirements.txt)")
    return found


class MlflowServer:
    """`mlflow server` on a free loopback port with a SQLite store under `workdir` (or the backend
    store `store_uri`, with `workers` uvicorn workers)."""

    def __init__(self, workdir: Path, store_uri: str | None = None, workers: int = 1):
        self.workdir = workdir
        self.store_uri = store_uri or f"sqlite:///{workdir / 'mlflow.db'}"
        self.workers = workers
        self.port = 0
        self.proc: subprocess.Popen | None = None
        self.log_path = workdir / "mlflow-server.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def start(self) -> "MlflowServer":
        last_error: AssertionError | None = None
        for _attempt in range(3):  # only a port race is worth a retry
            try:
                self._start_once()
                return self
            except AssertionError as e:
                last_error = e
                self.stop()
                if "address already in use" not in self.log().lower():
                    raise
        raise last_error  # type: ignore[misc]

    def restart(self) -> "MlflowServer":
        """Start again on the same port and database (after `stop`), as an operator would."""
        self._start_once(keep_port=True)
        return self

    def _start_once(self, keep_port: bool = False) -> None:
        if not keep_port:
            self.port = free_port()
        args = [mlflow_executable(), "server",
                "--backend-store-uri", self.store_uri,
                "--default-artifact-root", str(self.workdir / "artifacts"),
                "--host", "127.0.0.1", "--port", str(self.port), "--workers", str(self.workers)]
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
        env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
        with open(self.log_path, "ab") as log:
            log.write(f"\n--- {' '.join(args)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(args, cwd=self.workdir, env=env, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)

        def healthy() -> bool:
            if self.proc.poll() is not None:
                raise _Exited()
            return requests.get(f"{self.url}/health", timeout=2).status_code == 200

        try:
            wait_until(healthy, SERVER_START_TIMEOUT, interval=0.2, message=f"mlflow server {self.url}/health")
        except _Exited:
            raise AssertionError(f"mlflow server exited with {self.proc.returncode} during start-up; "
                                 f"log:\n{self.log()[-4000:]}") from None
        except AssertionError as e:
            raise AssertionError(f"{e}\nlog:\n{self.log()[-4000:]}") from None

    def stop(self) -> None:
        """SIGTERM to the server's process group (it leads one), then SIGKILL whatever is left."""
        if self.proc is None:
            return
        stop_process_group(self.proc, signal.SIGTERM, SERVER_STOP_TIMEOUT, "mlflow server and its children")
        self.proc = None


class _Exited(Exception):
    pass


# ---- tracegate ---------------------------------------------------------------------------

_HAS_EXPORT: bool | None = None


def require_mlflow_export() -> None:
    """Fail (not skip) when the tracegate binary has no MLflow export flags at all, with a clear
    message instead of a start-up error per test."""
    global _HAS_EXPORT
    if _HAS_EXPORT is None:
        out = subprocess.run([str(E2E_TRACEGATE_BIN), "--help"], capture_output=True, text=True, timeout=10,
                             stdin=subprocess.DEVNULL)
        _HAS_EXPORT = "mlflow-tracking-uri" in (out.stdout + out.stderr)
    if not _HAS_EXPORT:
        raise AssertionError(f"{E2E_TRACEGATE_BIN} --help does not list --mlflow-tracking-uri: "
                             f"this binary has no MLflow export")


# ---- experiments and traces --------------------------------------------------------------


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def request_id() -> str:
    return "e2e-" + uuid.uuid4().hex[:16]


def user_is(user: str) -> str:
    return f"metadata.`mlflow.trace.user` = '{user}'"


def session_is(session: str) -> str:
    return f"metadata.`mlflow.trace.session` = '{session}'"


def trace_id_of(response) -> str:
    """The X-MLflow-Trace-Id response header, checked for its shape."""
    headers = response.headers
    value = headers.get("X-MLflow-Trace-Id") if hasattr(headers, "get") else response.header("X-MLflow-Trace-Id")
    assert value is not None and TRACE_ID_RE.match(value), \
        f"X-MLflow-Trace-Id is {value!r}, expected tr-<32 lower-case hex>; headers: {dict(headers)}"
    return value


def create_experiment(client, prefix: str = "tracegate-e2e") -> str:
    """A new experiment with a unique name; returns its id."""
    return client.create_experiment(unique(prefix))


def search(client, experiment_id: str, filter_string: str | None = None, order_by: list[str] | None = None,
           include_spans: bool = True) -> list:
    """Every trace of the experiment matching `filter_string` (all pages)."""
    out: list = []
    token = None
    while True:
        page = client.search_traces(locations=[experiment_id], filter_string=filter_string or None,
                                    max_results=500, order_by=order_by, page_token=token,
                                    include_spans=include_spans)
        out.extend(page)
        token = page.token
        if not token:
            return out


def describe(traces: list) -> str:
    """One line per trace, for assertion messages."""
    lines = []
    for t in traces:
        i = t.info
        md = i.trace_metadata or {}
        lines.append(f"  {i.trace_id} client_request_id={i.client_request_id!r} state={_state(i)} "
                     f"time={i.request_time} dur={i.execution_duration}ms user={md.get('mlflow.trace.user')!r} "
                     f"session={md.get('mlflow.trace.session')!r} name={(i.tags or {}).get('mlflow.traceName')!r}")
    return "\n".join(lines) or "  (none)"


def wait_for_traces(client, experiment_id: str, filter_string: str | None, expected_count: int,
                    timeout: float = TRACE_TIMEOUT, settle: float = SETTLE,
                    order_by: list[str] | None = None) -> list:
    """Poll search_traces until exactly `expected_count` traces match, then check that it stays
    exactly that for `settle` seconds (late duplicates or strays would show up here). More than
    `expected_count` at any time fails at once. Returns the traces of the last search."""
    where = f"experiment {experiment_id}, filter {filter_string!r}"
    deadline = time.monotonic() + timeout
    while True:
        traces = search(client, experiment_id, filter_string, order_by)
        if len(traces) > expected_count:
            raise AssertionError(f"{len(traces)} traces match, expected exactly {expected_count} ({where}):\n"
                                 f"{describe(traces)}")
        if len(traces) == expected_count:
            break
        if time.monotonic() >= deadline:
            raise AssertionError(f"after {timeout}s only {len(traces)} of {expected_count} traces match "
                                 f"({where}):\n{describe(traces)}\nall traces in the experiment:\n"
                                 f"{describe(search(client, experiment_id))}")
        time.sleep(0.1)
    settle_until = time.monotonic() + settle
    while time.monotonic() < settle_until:
        time.sleep(0.1)
        traces = search(client, experiment_id, filter_string, order_by)
        if len(traces) != expected_count:
            raise AssertionError(f"{expected_count} traces matched, then {len(traces)} ({where}):\n"
                                 f"{describe(traces)}")
    return traces


def wait_for_trace(client, experiment_id: str, client_request_id: str, timeout: float = TRACE_TIMEOUT,
                   settle: float = SETTLE):
    """The one trace whose client_request_id is `client_request_id` (exactly one, see wait_for_traces)."""
    return wait_for_traces(client, experiment_id, f"trace.client_request_id = '{client_request_id}'", 1,
                           timeout=timeout, settle=settle)[0]


def get_trace_when(client, trace_id: str, condition: Callable[[object], bool] = lambda t: True,
                   timeout: float = TRACE_TIMEOUT, message: str = ""):
    """Poll get_trace(trace_id) until it exists and `condition(trace)` holds."""
    last: list = [None]

    def ready():
        t = client.get_trace(trace_id)
        last[0] = t
        return t if t is not None and condition(t) else None

    try:
        return wait_until(ready, timeout, interval=0.1, message=message or f"trace {trace_id}")
    except AssertionError as e:
        seen = describe([last[0]]) if last[0] is not None else "  (never found)"
        raise AssertionError(f"{e}\nlast seen:\n{seen}") from None


def _state(info) -> str:
    state = info.state
    return getattr(state, "value", str(state))


def state(trace) -> str:
    """"OK", "ERROR", "IN_PROGRESS" or "STATE_UNSPECIFIED"."""
    return _state(trace.info)


def root_span(trace):
    roots = [s for s in trace.data.spans if s.parent_id is None]
    assert len(roots) == 1, f"expected one root span, got {[(s.name, s.span_id) for s in roots]} " \
                            f"of {[(s.name, s.parent_id) for s in trace.data.spans]}"
    return roots[0]


def upstream_span(trace):
    """The root span's one child: the call to the upstream (LLM for chat exchanges, else UNKNOWN)."""
    root = root_span(trace)
    children = [s for s in trace.data.spans if s.parent_id == root.span_id]
    assert len(children) == 1, f"expected one upstream span, got {[(s.name, s.span_type) for s in children]}"
    return children[0]


def trace_json(trace) -> str:
    """Everything MLflow returns about the trace (info, metadata, tags, every span with its
    attributes, inputs, outputs and events) as one JSON text."""
    return json.dumps(trace.to_dict(), ensure_ascii=False, default=str)


def trace_json_via_rest(server_url: str, trace_id: str) -> str:
    """The trace as the UI fetches it (GET /api/3.0/mlflow/traces/get), raw JSON text."""
    r = requests.get(f"{server_url}/api/3.0/mlflow/traces/get", params={"trace_id": trace_id}, timeout=10)
    assert r.status_code == 200, (r.status_code, r.text[:500])
    return r.text


def expected_usage(backend_usage: dict) -> dict:
    """The backend's OpenAI usage as MLflow's token usage."""
    return {"input_tokens": backend_usage["prompt_tokens"], "output_tokens": backend_usage["completion_tokens"],
            "total_tokens": backend_usage["total_tokens"]}


@contextmanager
def sdk_tracking_uri(url: str) -> Iterator[None]:
    """Point the MLflow SDK's fluent API (mlflow.search_traces, mlflow.start_span) at `url` for a
    while. mlflow.set_tracking_uri also sets MLFLOW_TRACKING_URI in os.environ; both are undone
    afterwards (and harness.tracegate_env never passes MLFLOW_* on to tracegate anyway)."""
    import mlflow

    previous = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(url)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(None)
        if previous is not None:
            os.environ["MLFLOW_TRACKING_URI"] = previous
