"""Scale-out on PostgreSQL: two tracegate replicas in front of one backend export to one MLflow
server whose backend store is PostgreSQL; every request ends up as exactly one trace with its own
user, session and client_request_id, tagged with the replica that served it.

A smaller version of `scripts/scaleout-postgres` (see scaleout.py). It needs PostgreSQL's server
binaries (Debian: `apt-get install postgresql`) and psycopg2 (Tests/e2e/requirements.txt); it
fails, never skips, without them.
"""

from __future__ import annotations

import pytest

import scaleout
from mlflow_harness import require_mlflow_export

REQUESTS = 60


@pytest.fixture
def postgres():
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        pytest.fail("psycopg2 is not installed: pip install -r Tests/e2e/requirements.txt")
    cluster = scaleout.PostgresCluster().start()  # fails with an install hint when PostgreSQL is absent
    yield cluster
    cluster.stop()


def test_two_replicas_one_trace_per_request_on_postgresql(backend, postgres, tmp_path):
    scaleout.require_tracegate()
    require_mlflow_export()
    result = scaleout.run_scenario("postgresql", tmp_path / "run", backend.url, REQUESTS, cluster=postgres,
                                   replicas=2, concurrency=4, stream_every=3, ingest_timeout=40,
                                   extra_flags={"export_batch_delay": "200ms"})
    print("\n" + scaleout.format_table([result]))
    assert result.ok, "\n".join([scaleout.format_table([result]), *result.problems])
    assert result.traces_found == REQUESTS and result.duplicates == 0 and result.missing == 0
    # Each replica ran with its own spool (the harness gives every process one in its working
    # directory): replicas must never share one.
    spools = [sorted((tmp_path / "run" / f"replica-{name}").glob("spool-*/mlflow/spans")) for name in ("a", "b")]
    assert all(len(s) == 1 for s in spools) and spools[0] != spools[1], spools
