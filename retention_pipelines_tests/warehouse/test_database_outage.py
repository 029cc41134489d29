"""A database that goes away for a moment: connections wait for it (a bounded time, and not
for a refusal that waiting cannot change), and a step that loses its connection midway
leaves the previous partition as it was and succeeds on its retry."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import dagster as dg
import psycopg
import pytest

from retention_pipelines.assets.ingestion import raw_customer_snapshot
from retention_pipelines.assets.retries import retried_only_when_transient
from retention_pipelines.core import database
from retention_pipelines.core.ingestion import landing_file_name
from retention_pipelines.resources import LandingResource, WarehouseResource
from retention_pipelines_tests.landing_files import customer, write_rows
from retention_pipelines_tests.warehouse.test_concurrent_runs import DAY, ids_of, ingest


def test_a_server_that_cannot_be_reached_is_tried_for_the_time_allowed_and_no_longer(
    caplog: pytest.LogCaptureFixture,
) -> None:
    started = time.monotonic()
    with pytest.raises(psycopg.OperationalError, match="refused"):
        database.connect("postgresql://postgres:secret@127.0.0.1:1/postgres", retry_s=1.5)
    assert 0.5 <= time.monotonic() - started <= 2.5
    said = [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
    assert len(said) == 1
    assert "cannot reach the database postgres at 127.0.0.1:1" in said[0]
    assert "secret" not in said[0]


def test_a_refusal_that_waiting_cannot_change_fails_at_once(server_url: str) -> None:
    started = time.monotonic()
    with pytest.raises(psycopg.OperationalError, match="does not exist"):
        database.connect(database.with_database(server_url, "no_such_database"), retry_s=30)
    assert time.monotonic() - started < 5


def test_only_a_lost_connection_makes_a_step_run_again() -> None:
    attempts: list[str] = []

    @dg.asset(retry_policy=dg.RetryPolicy(max_retries=2))
    @retried_only_when_transient
    def reconnects() -> None:
        attempts.append("reconnects")
        if len(attempts) == 1:
            raise psycopg.errors.AdminShutdown("terminating connection (administrator command)")

    @dg.asset(retry_policy=dg.RetryPolicy(max_retries=2))
    @retried_only_when_transient
    def refuses() -> None:
        attempts.append("refuses")
        raise ValueError("the landing file has a header and no data rows")

    assert dg.materialize([reconnects]).success
    failed = dg.materialize([refuses], raise_on_error=False)

    assert attempts == ["reconnects", "reconnects", "refuses"]
    [failure] = [event for event in failed.all_events if event.is_step_failure]
    error = failure.step_failure_data.error
    assert error is not None
    assert error.message.strip().endswith("the landing file has a header and no data rows")


def _start_server(pgdata: Path) -> None:
    """Start the embedded server of ``pgdata`` as another process of the platform would."""
    subprocess.run(
        [sys.executable, "-c", "import sys, pathlib; from retention_pipelines.core.database"
         " import embedded_database_url as start; start(pathlib.Path(sys.argv[1]))", str(pgdata)],
        check=True,
        timeout=120,
    )  # fmt: skip


class Outage(threading.Thread):
    """Stops the server while the ingestion's transaction is at work (a trigger holds it in
    a ``pg_sleep`` once the partition's rows are replaced, not yet committed), starts it again
    two seconds later, and reads the partition then: what readers see between the attempts."""

    def __init__(self, url: str, pgdata: Path) -> None:
        super().__init__(daemon=True)
        self.url, self.pgdata = url, pgdata
        self.seen_between: set[str] | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._wait_for_the_sleeping_transaction()
            assert database.stop_embedded_server(self.pgdata)
            time.sleep(2)
            _start_server(self.pgdata)
            self.seen_between = ids_of(self.url)
        except BaseException as error:  # reported by the test
            self.error = error

    def _wait_for_the_sleeping_transaction(self) -> None:
        deadline = time.monotonic() + 60
        with psycopg.connect(self.url, autocommit=True) as conn:
            while time.monotonic() < deadline:
                if conn.execute(
                    "select 1 from pg_stat_activity where wait_event = 'PgSleep'"
                    " and datname = current_database()"
                ).fetchone():
                    return
                time.sleep(0.05)
        raise TimeoutError("the ingestion never reached its commit")


@pytest.mark.slow
def test_an_ingestion_that_loses_the_server_midway_leaves_nothing_and_succeeds_on_retry(
    tmp_path: Path,
) -> None:
    # Not under tmp_path: a pytest session starting meanwhile narrows its parents' modes, and
    # the server's own user (pgserver, under root) must reach the folder to stop it.
    home = Path(tempfile.mkdtemp(prefix="retention-outage-"))
    pgdata = home / "pgdata"
    server = database.embedded_database_url(pgdata)
    try:
        database.ensure_database(server, "retention")
        url = database.with_database(server, "retention")
        database.upgrade(url)
        ingest(url, write_rows(tmp_path / "earlier.csv", [customer(n) for n in range(30)]))
        landing = tmp_path / "landing"
        landing.mkdir()
        write_rows(landing / landing_file_name(DAY), [customer(n) for n in range(100, 140)])
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                "create function public.slow_commit() returns trigger language plpgsql as"
                " $$ begin perform pg_sleep(2); return new; end $$;"
                " create trigger slow_commit before insert on raw.ingestion_runs"
                " for each row execute function public.slow_commit()"
            )
        outage = Outage(url, pgdata)
        outage.start()

        result = dg.materialize(
            [raw_customer_snapshot],
            partition_key=DAY.isoformat(),
            resources={
                "warehouse": WarehouseResource(database_url=url, connect_retry_s=30),
                "landing": LandingResource(landing_dir=str(landing)),
            },
            instance=dg.DagsterInstance.ephemeral(),
            raise_on_error=False,
        )
        outage.join(timeout=60)

        assert outage.error is None, outage.error
        retried = [
            event
            for event in result.all_events
            if event.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY
        ]
        assert len(retried) == 1
        assert "terminating connection" in str(retried[0].event_specific_data.error.cause)
        assert outage.seen_between == {customer(n)["customerID"] for n in range(30)}
        assert result.success
        assert ids_of(url) == {customer(n)["customerID"] for n in range(100, 140)}
    finally:
        database.stop_embedded_server(pgdata)
        shutil.rmtree(home, ignore_errors=True)
