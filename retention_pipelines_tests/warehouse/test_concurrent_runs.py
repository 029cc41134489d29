"""Runs of one date at the same time, on real Postgres and dbt: ingestions of one date take
turns (the partition's advisory lock) and dbt commands take turns on a warehouse (its DDL
lock), so the second run waits and then succeeds instead of colliding with the first."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path

import dagster as dg
import psycopg
import pytest
from dagster_dbt import DbtCliResource

from retention_pipelines.assets.features import (
    retention_dbt_analytics,
    retention_dbt_models,
    retention_dbt_project,
)
from retention_pipelines.core.ingestion import check_landing_file, read_validated_chunks
from retention_pipelines.core.warehouse.raw import (
    BeforeCommit,
    IngestionSummary,
    partition_counts,
    replace_snapshot_partition,
)
from retention_pipelines.resources import WarehouseResource, dbt_executable
from retention_pipelines_tests.helpers import TELCO_DAY
from retention_pipelines_tests.landing_files import customer, write_rows

DAY = date.fromisoformat(TELCO_DAY)


def ingest(
    url: str, path: Path, day: date = DAY, before_commit: BeforeCommit | None = None
) -> IngestionSummary:
    return replace_snapshot_partition(
        url,
        snapshot_date=day,
        facts=check_landing_file(path, max_bytes=10**9),
        chunks=read_validated_chunks(path, chunk_rows=1_000),
        before_commit=before_commit,
    )


def wait_for_a_blocked_session(url: str, timeout_s: float = 30.0) -> None:
    """Return once a session of this database waits for a lock (the second run queued)."""
    deadline = time.monotonic() + timeout_s
    with psycopg.connect(url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            waiting = conn.execute(
                "select count(*) from pg_stat_activity"
                " where datname = current_database() and wait_event_type = 'Lock'"
            ).fetchone()
            if waiting and waiting[0]:
                return
            time.sleep(0.05)
    pytest.fail("no session waited for a lock")


def ids_of(url: str, day: date = DAY) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "select customer_id from raw.customer_snapshots where snapshot_date = %s", (day,)
        ).fetchall()
    return {row[0] for row in rows}


def test_a_second_ingestion_of_a_date_waits_for_the_first_and_its_file_wins(
    database_url: str, tmp_path: Path
) -> None:
    first_file = write_rows(tmp_path / "first.csv", [customer(n) for n in range(30)])
    second_rows = [customer(n) for n in range(20, 60)]
    second_file = write_rows(
        tmp_path / "second.csv", [*second_rows, second_rows[0], customer(99, tenure="-3")]
    )
    other_day_file = write_rows(tmp_path / "other.csv", [customer(n) for n in range(5)])
    committing, release = threading.Event(), threading.Event()

    def hold_the_commit(conn: psycopg.Connection) -> None:
        committing.set()
        assert release.wait(timeout=60)

    with ThreadPoolExecutor(max_workers=2) as pool:
        first = pool.submit(ingest, database_url, first_file, before_commit=hold_the_commit)
        assert committing.wait(timeout=60)
        second = pool.submit(ingest, database_url, second_file)
        wait_for_a_blocked_session(database_url)
        # Another date has a lock of its own: it is not held up meanwhile.
        ingest(database_url, other_day_file, day=date(2026, 1, 16))
        release.set()
        first.result(timeout=60)
        summary = second.result(timeout=60)

    assert ids_of(database_url) == {row["customerID"] for row in second_rows}
    assert (summary.rows_read, summary.rows_valid, summary.rows_rejected) == (42, 40, 1)
    assert summary.duplicates_collapsed == 1
    counts = partition_counts(database_url, DAY)
    assert counts is not None and counts.reconciles
    assert (counts.rows_read, counts.rows_valid, counts.rows_rejected) == (42, 40, 1)
    assert len(ids_of(database_url, date(2026, 1, 16))) == 5


def _build_views(url: str) -> tuple[bool, list[str]]:
    """The date's feature tables and analytics views built by the Dagster dbt assets, on an
    instance of this call's own; whether the run succeeded, and what its steps logged."""
    with dg.DagsterInstance.ephemeral() as instance:
        result = dg.materialize(
            [retention_dbt_models, retention_dbt_analytics],
            partition_key=TELCO_DAY,
            resources={
                "warehouse": WarehouseResource(database_url=url),
                "dbt": DbtCliResource(
                    project_dir=retention_dbt_project, dbt_executable=dbt_executable()
                ),
            },
            instance=instance,
            raise_on_error=False,
        )
        return result.success, [entry.user_message for entry in instance.all_logs(result.run_id)]


@pytest.mark.slow
def test_two_first_builds_of_the_dbt_models_at_once_both_succeed(
    database_url: str, tmp_path: Path
) -> None:
    """The first night of a fresh warehouse, twice at once: each dbt command creates the views
    (and the call-list table) in turn, the one that waits says so, and both runs succeed."""
    ingest(database_url, write_rows(tmp_path / "day.csv", [customer(n) for n in range(20)]))
    with ThreadPoolExecutor(max_workers=2) as pool:
        outcomes = list(pool.map(_build_views, [database_url] * 2))

    assert [success for success, _ in outcomes] == [True, True]
    waits = [
        message
        for _, messages in outcomes
        for message in messages
        if "waiting for another dbt run" in message
    ]
    assert waits, "neither run waited for the other's dbt command"
    with psycopg.connect(database_url) as conn:
        relations = conn.execute(
            "select table_name, table_type from information_schema.tables"
            " where table_schema = 'analytics' order by 1"
        ).fetchall()
        features = conn.execute(
            "select count(*) from features.customer_features where snapshot_date = %s", (DAY,)
        ).fetchone()
    assert relations == [
        ("call_list_facets", "BASE TABLE"),
        ("customer_risk_latest", "BASE TABLE"),
        ("customer_score_history", "VIEW"),
        ("risk_band_summary", "BASE TABLE"),
        ("top_reasons_daily", "BASE TABLE"),
    ]
    assert features == (20,)
