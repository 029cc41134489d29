"""The night as operators run it: the schedule's run request, ``retention score --date`` on
the local Dagster instance, and a backfill over three dates, each partition independent."""

from collections.abc import Iterator
from datetime import UTC, date, datetime

import dagster as dg
import psycopg
import pytest
from typer.testing import CliRunner

from retention_pipelines.cli import app
from retention_pipelines.datagen import write_landing_csv
from retention_pipelines.definitions import defs
from retention_pipelines.settings import get_settings

from .conftest import TINY_TRAINING, platform_settings

pytestmark = pytest.mark.slow
DAYS = ("2026-02-01", "2026-02-02", "2026-02-03")
CUSTOMERS = 800


def test_the_schedule_runs_the_nightly_job_for_that_days_partition_at_two() -> None:
    schedule = defs.resolve_schedule_def("nightly_scoring_schedule")
    assert schedule.cron_schedule == "0 2 * * *"
    assert schedule.execution_timezone == get_settings().timezone
    context = dg.build_schedule_context(
        scheduled_execution_time=datetime(2026, 2, 3, 2, 0, tzinfo=UTC)
    )
    requests = schedule.evaluate_tick(context).run_requests or []
    assert [(request.partition_key, request.run_key) for request in requests] == [
        ("2026-02-03", "2026-02-03")
    ]
    assert schedule.job_name == "nightly_scoring_job"


@pytest.fixture(scope="module")
def local_platform(
    module_database_url: str, server_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The platform's own settings pointed at a throwaway warehouse, Dagster database, MLflow
    store and home folder, as ``retention`` would use them; landing files for three days and
    a champion trained on the first."""
    with platform_settings(module_database_url, server_url, tmp_path_factory.mktemp("home")):
        for offset, day in enumerate(DAYS):
            write_landing_csv(
                get_settings().resolved_landing_dir / f"customers_{day}.csv",
                CUSTOMERS,
                seed=offset,
            )
        instance = dg.DagsterInstance.ephemeral()
        built = defs.resolve_job_def("daily_snapshot_job").execute_in_process(
            partition_key=DAYS[0], instance=instance
        )
        assert built.success
        trained = defs.resolve_job_def("retrain_job").execute_in_process(
            run_config=TINY_TRAINING,
            instance=instance,
        )
        assert trained.success
        yield module_database_url


def _score_counts(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "select snapshot_date, count(*) from ml.churn_risk_scores group by 1 order by 1"
        ).fetchall()
    return {day.isoformat(): count for day, count in rows}


def test_retention_score_runs_the_night_for_a_date_with_progress(local_platform: str) -> None:
    result = CliRunner().invoke(app, ["score", "--date", DAYS[0]])
    assert result.exit_code == 0, result.output
    assert f"scored {CUSTOMERS:,} customers of {DAYS[0]}" in result.output
    assert _score_counts(local_platform) == {DAYS[0]: CUSTOMERS}
    with psycopg.connect(local_platform) as conn:
        versions = conn.execute(
            "select distinct model_version from ml.churn_risk_scores"
        ).fetchall()
    assert versions == [("1",)]


def test_a_backfill_over_three_dates_writes_three_independent_partitions(
    local_platform: str,
) -> None:
    job = defs.resolve_job_def("nightly_scoring_job")
    instance = dg.DagsterInstance.ephemeral()
    for day in DAYS:  # one run per partition, as the backfill policy launches them
        assert job.execute_in_process(partition_key=day, instance=instance).success
    assert _score_counts(local_platform) == dict.fromkeys(DAYS, CUSTOMERS)
    with psycopg.connect(local_platform) as conn:
        before = conn.execute(
            "select snapshot_date, max(scored_at) from ml.churn_risk_scores group by 1"
        ).fetchall()
    # Scoring one date again touches that date only.
    assert job.execute_in_process(
        partition_key=DAYS[1], instance=instance, asset_selection=[dg.AssetKey("churn_risk_scores")]
    ).success
    with psycopg.connect(local_platform) as conn:
        after = dict(
            conn.execute(
                "select snapshot_date, max(scored_at) from ml.churn_risk_scores group by 1"
            ).fetchall()
        )
    rescored = {day for day, stamp in before if after[day] != stamp}
    assert rescored == {date.fromisoformat(DAYS[1])}
    assert _score_counts(local_platform) == dict.fromkeys(DAYS, CUSTOMERS)


def test_scoring_a_date_without_features_fails_clearly(local_platform: str) -> None:
    result = defs.resolve_job_def("nightly_scoring_job").execute_in_process(
        partition_key="2026-02-04",
        instance=dg.DagsterInstance.ephemeral(),
        asset_selection=[dg.AssetKey("churn_risk_scores")],
        raise_on_error=False,
    )
    assert not result.success
    failure = next(event for event in result.all_events if event.is_step_failure)
    assert "has no rows for 2026-02-04" in str(failure.event_specific_data)
