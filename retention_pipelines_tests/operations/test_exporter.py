"""The platform exporter on a real warehouse and a real Dagster run storage: the figures it
exports are the rows the platform wrote, a second scrape inside the cache window reads
nothing, and a database it cannot reach is ``retention_platform_up 0``, not an error page."""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, date, datetime
from datetime import time as time_of_day
from pathlib import Path

import dagster as dg
import psycopg
import pytest
from prometheus_client import generate_latest, start_http_server
from prometheus_client.parser import text_string_to_metric_families

from retention_pipelines.core import database
from retention_pipelines.core.warehouse import platform_health
from retention_pipelines.core.warehouse.platform_health import NO_RUNS, JobRuns, nightly_window
from retention_pipelines.exporter import (
    METRICS,
    NIGHTLY_JOB,
    PREFIX,
    PURGE_JOB,
    ExporterConfig,
    PlatformReader,
    exporter_registry,
    purge_due_since,
)
from retention_pipelines_tests.operations.promql import (
    instant_query,
    panel_expressions,
    rule_expressions,
    running_prometheus,
    wait_for_series,
)

RETENTION = str(Path(sys.executable).parent / "retention")
UNREACHABLE = "postgresql://postgres:secret@127.0.0.1:1/warehouse"
# A Dagster database no instance ever used: the tests that are about the warehouse only.
NO_DAGSTER = "retention_test_dagster_none"
# The platform's clock in these tests: 07:00 UTC on the day after the latest scores.
NOW = datetime(2026, 3, 3, 7, 0, tzinfo=UTC)
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


# --- a platform after a few nights ----------------------------------------------------------

_SEED = """
insert into ml.churn_risk_scores
select day, 'C-' || customer, 0.3, 'medium', 'Contract: Month-to-month', 0.4,
       'Tenure: 2 months', 0.2, 'Fiber optic', 0.1, 'churn-model', '3', now()
from (values (date '2026-03-01', 100), (date '2026-03-02', 120)) as days (day, customers),
     generate_series(1, customers) as customer;

insert into raw.ingestion_runs (snapshot_date, source, file_sha256, file_bytes, rows_read,
                                rows_valid, rows_rejected, duplicates_collapsed, rows_suppressed)
values ('2026-03-01', 'customers_2026-03-01.csv', 'a', 10, 100, 100, 0, 0, 0),
       ('2026-03-02', 'customers_2026-03-02.csv', 'b', 10, 131, 120, 8, 2, 1);

insert into monitoring.drift_reports (snapshot_date, reference_model_version,
    reference_snapshots, reference_rows, current_rows, dataset_drift, drift_share,
    drift_share_threshold, drifted_columns, column_results, findings, report_path)
values ('2026-03-01', '3', '2026-02-01', 100, 100, false, 0.05, 0.2, '[]', '[]', '[]', 'a'),
       ('2026-03-02', '3', '2026-02-01', 100, 120, true, 0.35, 0.2, '[]', '[]', '[]', 'b');

insert into monitoring.data_quality (snapshot_date, success, expectations, failed, results)
values ('2026-03-01', true, 30, 0, '[]'), ('2026-03-02', false, 30, 2, '[]');

insert into ml.model_versions (model_name, model_version, registered_at, is_champion,
                               is_challenger, test_roc_auc, synced_at)
values ('churn-model', '2', now(), false, false, 0.81, now()),
       ('churn-model', '3', now(), true, false, 0.84, now()),
       ('churn-model', '4', now(), false, true, 0.90, now());

insert into monitoring.model_performance (evaluated_on, score_date, model_version, customers,
    churned, roc_auc, brier, mean_probability, churn_rate, calibration)
values ('2026-03-01', '2026-02-28', '3', 50, 10, 0.70, 0.1, 0.2, 0.2, '[]'),
       ('2026-03-02', '2026-02-20', '3', 50, 10, 0.78, 0.1, 0.2, 0.2, '[]'),
       ('2026-03-02', '2026-02-25', '3', 50, 10, 0.80, 0.1, 0.2, 0.2, '[]'),
       ('2026-03-02', '2026-02-27', '3', 50, 0, null, 0.1, 0.2, 0.0, '[]'),
       ('2026-03-02', '2026-03-01', '2', 50, 10, 0.60, 0.1, 0.2, 0.2, '[]');

insert into ml.crm_outbox (snapshot_date, customer_id, idempotency_key, handoff_reason,
    churn_probability, risk_band, monthly_charges, revenue_at_risk, priority, talking_points,
    model_name, model_version, status, created_at, sent_at)
select day::date, 'C-' || status || '-' || task, day || '/' || status || '/' || task,
       'entered_high', 0.8, 'high', 70, 56, task, '[]', 'churn-model', '3', status,
       selected_at::timestamptz,
       case when status = 'sent' then selected_at::timestamptz + interval '1 minute' end
from (values
    -- The night of 2026-03-02: five delivered, one refused, two not delivered yet.
    ('2026-03-02', 'sent', 5, '2026-03-02 02:10+00'),
    ('2026-03-02', 'dead_letter', 1, '2026-03-02 02:10+00'),
    ('2026-03-02', 'pending', 2, '2026-03-02 02:10+00'),
    -- The oldest date of the last 7 on 2026-03-03, and the day before it.
    ('2026-02-25', 'sent', 1, '2026-02-25 02:10+00'),
    ('2026-02-25', 'dead_letter', 1, '2026-02-25 02:10+00'),
    ('2026-02-24', 'sent', 3, '2026-02-24 02:10+00'),
    ('2026-02-24', 'dead_letter', 1, '2026-02-24 02:10+00'),
    -- Left pending by a CRM outage long ago: the oldest pending task, of any date.
    ('2026-02-20', 'pending', 1, '2026-02-20 02:05+00')
) as handoffs (day, status, tasks, selected_at),
     generate_series(1, tasks) as task;
"""


@pytest.fixture(scope="module")
def warehouse(module_database_url: str) -> str:
    with psycopg.connect(module_database_url) as conn:
        conn.execute(_SEED)  # type: ignore[arg-type]  # the test's own SQL
    return module_database_url


@dg.asset(partitions_def=dg.DailyPartitionsDefinition(start_date="2026-01-01", end_offset=1))
def night(context: dg.AssetExecutionContext) -> None:
    """A night's work, failing on the date the tests want a failed night for."""
    if context.partition_key == "2026-03-03":
        raise RuntimeError("the landing file never came")


class PurgeConfig(dg.Config):
    fail: bool = False


@dg.asset
def purge(config: PurgeConfig) -> None:
    """A retention purge, failing when told to."""
    if config.fail:
        raise RuntimeError("the warehouse refused the delete")


@pytest.fixture(scope="module")
def dagster_database(server_url: str) -> Iterator[str]:
    """A Dagster instance on the test server (dagster-postgres, as the platform's), holding a
    successful nightly run of 2026-03-02, a failed one of 2026-03-03 and another job's run
    of 2026-03-04 that succeeded; then a purge that succeeded and a later one that failed."""
    name = f"retention_test_dagster_{uuid.uuid4().hex[:8]}"
    database.ensure_database(server_url, name)
    storage = {"postgres": {"postgres_url": database.with_database(server_url, name)}}
    nightly = dg.define_asset_job(NIGHTLY_JOB, selection=[night])
    other = dg.define_asset_job("daily_snapshot_job", selection=[night])
    purge_job = dg.define_asset_job(PURGE_JOB, selection=[purge])
    definitions = dg.Definitions(assets=[night, purge], jobs=[nightly, other, purge_job])
    try:
        with dg.instance_for_test(overrides={"storage": storage}) as instance:
            for job, partition in (
                (NIGHTLY_JOB, "2026-03-02"),
                (NIGHTLY_JOB, "2026-03-03"),
                ("daily_snapshot_job", "2026-03-04"),
            ):
                definitions.resolve_job_def(job).execute_in_process(
                    instance=instance, partition_key=partition, raise_on_error=False
                )
            for fail in (False, True):
                definitions.resolve_job_def(PURGE_JOB).execute_in_process(
                    instance=instance,
                    run_config={"ops": {"purge": {"config": {"fail": fail}}}},
                    raise_on_error=False,
                )
        yield name
    finally:
        database.drop_database(server_url, name)


def _config(url: str, dagster: str, **changes: object) -> ExporterConfig:
    config = ExporterConfig(
        warehouse_url=lambda: url,
        dagster_database=dagster,
        timezone="UTC",
        nightly_deadline=time_of_day(6, 0),
        max_reject_share=0.05,
        auc_drop_tolerance=0.05,
        timeout_s=3.0,
        cache_s=15.0,
    )
    return replace(config, **changes)  # type: ignore[arg-type]


def _scrape(reader: PlatformReader) -> Samples:
    text = generate_latest(exporter_registry(reader)).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(PREFIX + name, tuple(sorted(labels.items())))]


def _names(samples: Samples) -> set[str]:
    return {name.removeprefix(PREFIX) for name, _ in samples}


def _midnight(day: str) -> float:
    return datetime.fromisoformat(day).replace(tzinfo=UTC).timestamp()


# --- what it exports ------------------------------------------------------------------------


@pytest.mark.slow  # the module's Dagster runs: about 8 s
def test_the_exported_figures_are_the_latest_rows_of_each_table(
    warehouse: str, dagster_database: str
) -> None:
    samples = _scrape(PlatformReader(_config(warehouse, dagster_database), now=lambda: NOW))

    assert _value(samples, "up", source="warehouse") == 1
    assert _value(samples, "up", source="dagster") == 1
    assert _value(samples, "latest_scored_date_timestamp_seconds") == _midnight("2026-03-02")
    assert _value(samples, "latest_scored_date_age_days") == 1
    assert _value(samples, "scored_rows") == 120
    assert _value(samples, "latest_ingested_date_timestamp_seconds") == _midnight("2026-03-02")
    assert _value(samples, "ingested_rows", outcome="valid") == 120
    assert _value(samples, "ingested_rows", outcome="rejected") == 8
    assert _value(samples, "ingested_rows", outcome="duplicate") == 2
    assert _value(samples, "ingested_rows", outcome="suppressed") == 1
    assert _value(samples, "reject_share") == pytest.approx(8 / 131)
    assert _value(samples, "reject_share_threshold") == 0.05
    assert _value(samples, "drift_report_date_timestamp_seconds") == _midnight("2026-03-02")
    assert _value(samples, "dataset_drift") == 1
    assert _value(samples, "drift_share") == pytest.approx(0.35)
    assert _value(samples, "drift_share_threshold") == pytest.approx(0.2)
    assert _value(samples, "data_quality_date_timestamp_seconds") == _midnight("2026-03-02")
    assert _value(samples, "data_quality_passed") == 0
    assert _value(samples, "data_quality_failed_expectations") == 2
    champion = {"model_name": "churn-model", "model_version": "3"}
    assert _value(samples, "champion_info", **champion) == 1
    assert _value(samples, "champion_version") == 3
    assert _value(samples, "champion_test_roc_auc") == pytest.approx(0.84)
    # The champion's freshest judged scores: the latest labelled date, then score date; a
    # one-class group (no AUC) and other versions left aside, as the retraining sensor does.
    assert _value(samples, "realised_roc_auc") == pytest.approx(0.80)
    assert _value(samples, "realised_roc_auc_drop_tolerance") == 0.05


@pytest.mark.slow
def test_the_nightly_figures_are_the_nightly_jobs_successful_runs(
    warehouse: str, dagster_database: str
) -> None:
    """The failed night of 2026-03-03 and another job's later success do not count."""
    reader = PlatformReader(_config(warehouse, dagster_database), now=lambda: NOW)
    samples = _scrape(reader)
    dagster_url = database.with_database(warehouse, dagster_database)
    with psycopg.connect(dagster_url) as conn:
        row = conn.execute(
            "select max(end_time) from runs where pipeline_name = %s and partition = %s",
            (NIGHTLY_JOB, "2026-03-02"),
        ).fetchone()
    assert row is not None
    ended = row[0]

    assert _value(samples, "nightly_last_success_timestamp_seconds") == pytest.approx(ended)
    assert _value(samples, "nightly_hours_since_success") == pytest.approx(
        (NOW.timestamp() - ended) / 3600
    )
    assert _value(samples, "nightly_latest_date_timestamp_seconds") == _midnight("2026-03-02")
    # 07:00 UTC: today's night was due at 06:00.
    assert _value(samples, "nightly_due_date_timestamp_seconds") == _midnight("2026-03-03")
    assert (
        _value(samples, "nightly_deadline_timestamp_seconds") == _midnight("2026-03-03") + 6 * 3600
    )


@pytest.mark.slow
def test_the_purge_figures_are_the_purge_jobs_successful_runs(
    warehouse: str, dagster_database: str
) -> None:
    """The later failed purge does not count: a purge is judged by its job's runs, which
    succeed whether or not anything was past its cut-off (the audit log says only what
    went)."""
    samples = _scrape(PlatformReader(_config(warehouse, dagster_database), now=lambda: NOW))
    dagster_url = database.with_database(warehouse, dagster_database)
    with psycopg.connect(dagster_url) as conn:
        ended = dict(
            conn.execute(
                "select status, max(end_time) from runs where pipeline_name = %s group by status",
                (PURGE_JOB,),
            ).fetchall()
        )
    assert ended["FAILURE"] > ended["SUCCESS"]

    assert _value(samples, "purge_last_success_timestamp_seconds") == pytest.approx(
        ended["SUCCESS"]
    )
    assert _value(samples, "purge_hours_without_success") == pytest.approx(
        (NOW.timestamp() - ended["SUCCESS"]) / 3600
    )


def test_the_crm_figures_count_the_last_7_dates_and_age_the_oldest_pending_task(
    warehouse: str,
) -> None:
    """On 2026-03-03 the last 7 dates are 2026-02-25 to 2026-03-03: the tasks of 2026-02-24
    are left out, while the task pending since 2026-02-20 is the oldest pending one."""
    samples = _scrape(PlatformReader(_config(warehouse, NO_DAGSTER), now=lambda: NOW))

    assert _value(samples, "crm_tasks", status="pending") == 2
    assert _value(samples, "crm_tasks", status="sent") == 6
    assert _value(samples, "crm_tasks", status="dead_letter") == 2
    selected = datetime(2026, 2, 20, 2, 5, tzinfo=UTC)
    assert _value(samples, "crm_oldest_pending_seconds") == (NOW - selected).total_seconds()


def test_the_last_7_dates_are_those_of_today_in_the_platforms_timezone(warehouse: str) -> None:
    """At 23:30 UTC on 2026-03-02 it is already 2026-03-03 in Tokyo: 2026-02-24 has left
    the window there, not yet in UTC."""
    evening = datetime(2026, 3, 2, 23, 30, tzinfo=UTC)
    for timezone, dead_letters in (("UTC", 3), ("Asia/Tokyo", 2)):
        reader = PlatformReader(
            _config(warehouse, NO_DAGSTER, timezone=timezone), now=lambda: evening
        )
        assert _value(_scrape(reader), "crm_tasks", status="dead_letter") == dead_letters


def test_the_crm_figures_read_through_the_outbox_indexes(database_url: str) -> None:
    """180 days of 200 tasks a day: the recent dates are a range of the primary key, the
    pending tasks are read from their partial index, never the whole table."""
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "insert into ml.crm_outbox (snapshot_date, customer_id, idempotency_key,"
            " handoff_reason, churn_probability, risk_band, monthly_charges, revenue_at_risk,"
            " priority, talking_points, model_name, model_version, status, sent_at)"
            " select day::date, 'C-' || task, day::date || '/' || task, 'entered_high', 0.8,"
            " 'high', 70, 56, task, '[]', 'churn-model', '3',"
            " case when day::date = '2026-03-02' then 'pending' else 'sent' end,"
            " case when day::date = '2026-03-02' then null else now() end"
            " from generate_series(date '2025-09-04', date '2026-03-02', interval '1 day') as day,"
            " generate_series(1, 200) as task"
        )
        conn.execute("analyze ml.crm_outbox")
        plan = "\n".join(
            row[0]
            for row in conn.execute(
                "explain " + platform_health._HEALTH_QUERY,  # type: ignore[arg-type]  # ours
                {
                    "today": NOW.date(),
                    "crm_recent_days": platform_health.CRM_RECENT_DAYS,
                    "model_name": platform_health.MODEL_NAME,
                    "scores_table": "ml.churn_risk_scores",
                    "known_date": None,
                    "known_writes": None,
                    "known_rows": 0,
                },
            ).fetchall()
        )
    assert "Seq Scan on crm_outbox" not in plan, plan
    assert "crm_outbox_pkey" in plan, plan
    assert "crm_outbox_pending" in plan, plan


@pytest.mark.parametrize(
    ("purge_ended", "first_night_ended", "due_since"),
    [
        # The newest purge's end, whenever the first night was.
        ("2026-03-02T05:03:00+00:00", "2026-01-01T02:30:00+00:00", "2026-03-02T05:03:00+00:00"),
        # No purge yet: since the first night, when the platform began to hold customer data.
        (None, "2026-01-01T02:30:00+00:00", "2026-01-01T02:30:00+00:00"),
        # A new platform: nothing is due.
        (None, None, None),
    ],
)
def test_a_purge_is_due_from_the_last_one_or_else_from_the_first_night(
    purge_ended: str | None, first_night_ended: str | None, due_since: str | None
) -> None:
    def runs(ended: str | None) -> JobRuns:
        at = None if ended is None else datetime.fromisoformat(ended)
        return JobRuns(first_success_at=at, last_success_at=at, latest_date=None)

    nightly = runs(first_night_ended)
    purge_runs = runs(purge_ended) if purge_ended else NO_RUNS
    expected = None if due_since is None else datetime.fromisoformat(due_since)
    assert purge_due_since(purge_runs, nightly) == expected


@pytest.mark.slow
def test_a_full_platform_exports_every_documented_metric_and_nothing_else(
    warehouse: str, dagster_database: str
) -> None:
    samples = _scrape(PlatformReader(_config(warehouse, dagster_database), now=lambda: NOW))
    assert _names(samples) == set(METRICS)


def test_a_new_platform_exports_only_what_exists(database_url: str, server_url: str) -> None:
    """Migrated tables without rows, a Dagster database no instance has opened yet."""
    dagster = f"retention_test_dagster_{uuid.uuid4().hex[:8]}"
    database.ensure_database(server_url, dagster)
    try:
        samples = _scrape(PlatformReader(_config(database_url, dagster), now=lambda: NOW))
    finally:
        database.drop_database(server_url, dagster)

    assert _value(samples, "up", source="warehouse") == 1
    assert _value(samples, "up", source="dagster") == 1
    assert _value(samples, "scored_rows") == 0
    assert _value(samples, "nightly_last_success_timestamp_seconds") == 0
    assert _value(samples, "nightly_latest_date_timestamp_seconds") == 0
    assert _value(samples, "purge_last_success_timestamp_seconds") == 0
    for status in ("pending", "sent", "dead_letter"):
        assert _value(samples, "crm_tasks", status=status) == 0
    assert _value(samples, "crm_oldest_pending_seconds") == 0
    # No night has succeeded, so no purge is due yet: no hours without one.
    assert _names(samples) == {
        "up",
        "read_duration_seconds",
        "read_timestamp_seconds",
        "scored_rows",
        "crm_tasks",
        "crm_oldest_pending_seconds",
        "purge_last_success_timestamp_seconds",
        "reject_share_threshold",
        "realised_roc_auc_drop_tolerance",
        "nightly_due_date_timestamp_seconds",
        "nightly_deadline_timestamp_seconds",
        "nightly_last_success_timestamp_seconds",
        "nightly_latest_date_timestamp_seconds",
    }


def test_the_latest_dates_count_holds_until_the_scores_table_is_written(database_url: str) -> None:
    """Counting a date's scores is linear in its customers: it is done again only once the
    date or the table's writes moved, which the statistics collector counts for nothing."""
    _write_and_flush_statistics(database_url, _SEED)
    today = NOW.date()
    counted = platform_health.read_warehouse_health(database_url, today=today, timeout_s=3).scored
    assert (counted.rows, counted.writes) == (120, 220)

    reused = platform_health.read_warehouse_health(
        database_url, today=today, timeout_s=3, known=replace(counted, rows=999)
    )
    assert reused.scored.rows == 999  # the known count, not a new one

    _write_and_flush_statistics(  # one more customer scored on the date
        database_url,
        "insert into ml.churn_risk_scores select snapshot_date, 'C-new', churn_probability,"
        " risk_band, top_reason_1, top_reason_1_contribution, top_reason_2,"
        " top_reason_2_contribution, top_reason_3, top_reason_3_contribution, model_name,"
        " model_version, scored_at from ml.churn_risk_scores"
        " where snapshot_date = '2026-03-02' limit 1",
    )
    recounted = platform_health.read_warehouse_health(
        database_url, today=today, timeout_s=3, known=counted
    )
    assert (recounted.scored.rows, recounted.scored.writes) == (121, 221)


def _write_and_flush_statistics(url: str, statement: str) -> None:
    """Run ``statement`` and have its row counts reach the statistics now (a session reports
    them when it goes idle, at most once a second unless asked)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(statement)  # type: ignore[arg-type]  # the test's own SQL
        conn.execute("select pg_stat_force_next_flush()")
        conn.execute("select 1")  # idle in between: the statistics were reported


# --- the cache ------------------------------------------------------------------------------


class ManualClock:
    def __init__(self) -> None:
        self.seconds = 1000.0

    def __call__(self) -> float:
        return self.seconds


def test_scrapes_inside_the_cache_window_read_nothing_and_later_ones_read_again(
    database_url: str,
) -> None:
    with psycopg.connect(database_url) as conn:
        conn.execute(_SEED)  # type: ignore[arg-type]  # the test's own SQL
    clock = ManualClock()
    reader = PlatformReader(_config(database_url, NO_DAGSTER), clock=clock)
    assert _value(_scrape(reader), "drift_share") == pytest.approx(0.35)

    with psycopg.connect(database_url) as conn:
        conn.execute("update monitoring.drift_reports set drift_share = 0.5")
    clock.seconds += 14.9
    assert _value(_scrape(reader), "drift_share") == pytest.approx(0.35)
    assert reader.reads == 1

    clock.seconds += 0.2
    assert _value(_scrape(reader), "drift_share") == pytest.approx(0.5)
    assert reader.reads == 2


def test_a_cache_of_zero_reads_on_every_scrape(database_url: str) -> None:
    reader = PlatformReader(_config(database_url, NO_DAGSTER, cache_s=0))
    for _ in range(3):
        _scrape(reader)
    assert reader.reads == 3


# --- when it cannot read --------------------------------------------------------------------


def test_an_unreachable_database_is_up_zero_and_no_figures() -> None:
    reader = PlatformReader(_config(UNREACHABLE, "dagster"), now=lambda: NOW)
    started = time.monotonic()
    samples = _scrape(reader)
    assert time.monotonic() - started < 3

    assert _value(samples, "up", source="warehouse") == 0
    assert _value(samples, "up", source="dagster") == 0
    assert _names(samples) == {
        "up",
        "read_duration_seconds",
        "read_timestamp_seconds",
        "reject_share_threshold",
        "realised_roc_auc_drop_tolerance",
        "nightly_due_date_timestamp_seconds",
        "nightly_deadline_timestamp_seconds",
    }


def test_a_warehouse_that_comes_back_is_read_again_after_the_cache_window(
    warehouse: str,
) -> None:
    """The URL is only resolved once a read succeeds: an exporter started while the embedded
    server could not be started, or the network was down, recovers without a restart."""
    attempts: list[str] = []

    def warehouse_url() -> str:
        attempts.append("resolve")
        if len(attempts) == 1:
            raise RuntimeError("the embedded Postgres is shutting down")
        return warehouse

    clock = ManualClock()
    reader = PlatformReader(
        _config(warehouse, NO_DAGSTER, warehouse_url=warehouse_url), clock=clock
    )
    assert _value(_scrape(reader), "up", source="warehouse") == 0
    clock.seconds += 15
    assert _value(_scrape(reader), "up", source="warehouse") == 1
    assert _value(_scrape(reader), "scored_rows") == 120
    assert len(attempts) == 2


def test_the_exporters_sessions_cannot_write(warehouse: str) -> None:
    with (
        platform_health._read_only(warehouse, 3.0) as conn,
        pytest.raises(psycopg.errors.ReadOnlySqlTransaction),
    ):
        conn.execute("delete from ml.churn_risk_scores")


# --- the nightly deadline -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("now", "due", "deadline"),
    [
        # In UTC: before 06:00 yesterday's night is due, from 06:00 on today's.
        ("2026-03-03T05:59:59+00:00", "2026-03-02", "2026-03-02T06:00:00+00:00"),
        ("2026-03-03T06:00:00+00:00", "2026-03-03", "2026-03-03T06:00:00+00:00"),
        ("2026-03-03T23:00:00+00:00", "2026-03-03", "2026-03-03T06:00:00+00:00"),
    ],
)
def test_the_night_due_is_the_latest_whose_deadline_has_passed(
    now: str, due: str, deadline: str
) -> None:
    window = nightly_window(datetime.fromisoformat(now), "UTC", time_of_day(6, 0))
    assert window.due_date == date.fromisoformat(due)
    assert window.deadline == datetime.fromisoformat(deadline)


def test_the_deadline_is_local_time_in_the_platforms_timezone_across_summer_time() -> None:
    """06:00 in Paris is 05:00 UTC in winter and 04:00 UTC in summer (clocks moved on
    2026-03-29); at 04:30 UTC that day, in summer time, the night is due already."""
    deadline = time_of_day(6, 0)
    winter = nightly_window(datetime(2026, 3, 28, 4, 30, tzinfo=UTC), "Europe/Paris", deadline)
    summer = nightly_window(datetime(2026, 3, 29, 4, 30, tzinfo=UTC), "Europe/Paris", deadline)
    assert (winter.due_date, winter.deadline) == (
        date(2026, 3, 27),
        datetime(2026, 3, 27, 5, 0, tzinfo=UTC),
    )
    assert (summer.due_date, summer.deadline) == (
        date(2026, 3, 29),
        datetime(2026, 3, 29, 4, 0, tzinfo=UTC),
    )


@pytest.mark.slow  # loads the code location's modules (MLflow, dbt): up to 15 s alone
def test_the_names_the_exporter_repeats_are_the_platforms() -> None:
    """The job and model names, kept here to spare the exporter Dagster's and MLflow's imports."""
    from retention_pipelines.automation import (  # noqa: PLC0415
        data_retention_job,
        nightly_scoring_job,
    )
    from retention_pipelines.core.registry import MODEL_NAME  # noqa: PLC0415

    assert nightly_scoring_job.name == NIGHTLY_JOB
    assert data_retention_job.name == PURGE_JOB
    assert platform_health.MODEL_NAME == MODEL_NAME


# --- the command ----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _get(url: str, deadline_s: float, process: subprocess.Popen[str]) -> tuple[int, str]:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310  # localhost
                return response.status, response.read().decode()
        except OSError:
            time.sleep(0.1)
    pytest.fail(f"retention exporter did not answer (exit {process.poll()})")


@pytest.mark.slow  # the command's start: about 10 s on two busy cores
def test_retention_exporter_answers_up_zero_while_the_database_is_down_and_stops_on_sigterm(
    tmp_path: Path,
) -> None:
    port = _free_port()
    environment = {
        **os.environ,
        "RETENTION_DATABASE_URL": UNREACHABLE,
        "RETENTION_HOME_DIR": str(tmp_path),
        "RETENTION_DB_CONNECT_RETRY_S": "30",  # the exporter tries once, whatever this says
    }
    process = subprocess.Popen(
        [RETENTION, "exporter", "--port", str(port)], env=environment, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        status, text = _get(f"http://127.0.0.1:{port}/metrics", 60, process)
        assert status == 200
        assert 'retention_platform_up{source="warehouse"} 0.0' in text
        assert 'retention_platform_up{source="dagster"} 0.0' in text
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=10)
    finally:
        process.kill()
    assert process.returncode == 0, output
    assert f"platform metrics on http://127.0.0.1:{port}/metrics" in output
    assert "cannot read the warehouse: OperationalError" in output
    assert "secret" not in output


# --- what Prometheus makes of it ------------------------------------------------------------

# The platform's rules on the seeded night, judged now: the night of today is long overdue,
# 6.15% of the rows were rejected (setting 5%), the latest report drifted and its data
# quality failed, a CRM task has been pending since 2026-02-20; the realised ROC AUC (0.80)
# is within 0.05 of the test figure (0.84), the dead-lettered tasks' dates are weeks before
# the last 7 days, and the purge succeeded moments ago.
FIRING_ON_THE_SEEDED_NIGHT = {
    "RetentionNightlyScoringLate",
    "RetentionRejectShareHigh",
    "RetentionDatasetDrift",
    "RetentionDataQualityFailed",
    "RetentionCrmTasksStuckPending",
}
PLATFORM_RULES = {
    *FIRING_ON_THE_SEEDED_NIGHT,
    "RetentionRealisedAucDrop",
    "RetentionCrmTasksDeadLettered",
    "RetentionPurgeNotSucceeded",
    "RetentionPlatformSourceDown",
    "RetentionExporterDown",
}


@pytest.mark.slow  # the module's Dagster runs, a Prometheus server and its first scrapes
def test_prometheus_scraping_the_exporter_has_data_for_every_pipeline_panel_and_rule(
    warehouse: str, dagster_database: str, tmp_path: Path
) -> None:
    reader = PlatformReader(_config(warehouse, dagster_database))
    port = _free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=exporter_registry(reader))
    try:
        targets = {"retention-exporter": f"127.0.0.1:{port}"}
        with running_prometheus(tmp_path, targets=targets, scrape_interval="1s") as prometheus:
            wait_for_series(prometheus, "retention_platform_nightly_hours_since_success")
            empty = [
                expression.where
                for expression in panel_expressions()
                if expression.where.startswith("pipeline.json")
                and not instant_query(prometheus, expression.expr)["data"]["result"]
            ]
            firing = {
                expression.where.split(": ")[1]
                for expression in rule_expressions()
                if instant_query(prometheus, expression.expr)["data"]["result"]
            }
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    assert empty == []
    assert firing & PLATFORM_RULES == FIRING_ON_THE_SEEDED_NIGHT
    assert reader.reads == 1  # a scrape a second, one read in the cache window
