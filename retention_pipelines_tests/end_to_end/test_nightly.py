"""The night as operators run it: ``retention train`` and ``retention score --date`` on the
local Dagster instance, the schedule's run request, and a backfill over three dates, each
partition independent."""

import re
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import dagster as dg
import psycopg
import pytest
from typer.testing import CliRunner

from retention_pipelines.cli import app
from retention_pipelines.datagen import write_landing_csv
from retention_pipelines.definitions import load_definitions
from retention_pipelines.local_runs import run_job
from retention_pipelines.settings import get_settings
from retention_pipelines_tests.helpers import platform_settings

pytestmark = pytest.mark.slow
DAYS = ("2026-02-01", "2026-02-02", "2026-02-03")
CUSTOMERS = 800
# A champion for tests that need one, not a good one: quality is the training tests' business.
QUICK_TRAINING = {"RETENTION_BASELINE_TOLERANCE": "1", "RETENTION_TRAINING_SEED": "3"}


def test_the_schedule_runs_the_nightly_job_for_that_days_partition_at_two() -> None:
    schedule = load_definitions().resolve_schedule_def("nightly_scoring_schedule")
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
    store and home folder, as ``retention`` would use them; landing files for three days."""
    home = tmp_path_factory.mktemp("home")
    with platform_settings(module_database_url, server_url, home, env=QUICK_TRAINING):
        for offset, day in enumerate(DAYS):
            write_landing_csv(
                get_settings().resolved_landing_dir / f"customers_{day}.csv",
                CUSTOMERS,
                seed=offset,
            )
        yield module_database_url


def _score_counts(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "select snapshot_date, count(*) from ml.churn_risk_scores group by 1 order by 1"
        ).fetchall()
    return {day.isoformat(): count for day, count in rows}


def _lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.strip()]


def test_train_without_a_labelled_snapshot_says_what_to_build_first(local_platform: str) -> None:
    result = CliRunner().invoke(app, ["train"])
    assert result.exit_code == 1
    assert _lines(result.output) == [
        "no labelled snapshot to train on: build one first (`make demo` builds today's, or "
        "`retention score --date D` for a landed file)"
    ]


def test_score_without_a_champion_says_which_command_trains_one_before_any_run(
    local_platform: str,
) -> None:
    result = CliRunner().invoke(app, ["score", "--date", DAYS[0]])
    assert result.exit_code == 1
    [line] = _lines(result.output)  # MLflow creating its tables says nothing here
    assert line.startswith("no champion model yet: train one with `retention train`")
    assert _score_counts(local_platform) == {}


def test_retention_train_makes_a_first_champion_showing_progress_not_the_log(
    local_platform: str,
) -> None:
    assert run_job(get_settings(), "daily_snapshot_job", partition_key=DAYS[0]).success
    result = CliRunner().invoke(app, ["train", "--xgboost-trials", "3", "--catboost-trials", "1"])
    assert result.exit_code == 0, result.output
    assert "registered churn-model version 1: promoted (first model" in result.output
    assert "STEP_START" not in result.output and "Trial " not in result.output
    log = Path(re.search(r"log: (\S+)", result.output)[1])  # type: ignore[index]
    assert "STEP_SUCCESS" in log.read_text()


def test_retention_score_runs_the_night_for_a_date_with_a_short_summary(
    local_platform: str,
) -> None:
    result = CliRunner().invoke(app, ["score", "--date", DAYS[0]])
    assert result.exit_code == 0, result.output
    summary = _lines(result.output)
    assert summary[0].startswith(
        f"scored {CUSTOMERS:,} customers of {DAYS[0]} with churn-model v1: "
    )
    assert summary[1].startswith("log: ") and summary[2].startswith("run ")
    assert _score_counts(local_platform) == {DAYS[0]: CUSTOMERS}
    run_id = summary[2].split()[1].rstrip(":")
    run = dg.DagsterInstance.get().get_run_by_id(run_id)
    assert run is not None and run.is_success and run.job_name == "nightly_scoring_job"


def test_a_backfill_over_three_dates_writes_three_independent_partitions(
    local_platform: str,
) -> None:
    job = load_definitions().resolve_job_def("nightly_scoring_job")
    instance = dg.DagsterInstance.ephemeral()
    for day in DAYS[1:]:  # one run per partition, as the backfill policy launches them
        if day == DAYS[1]:
            verbose = CliRunner().invoke(app, ["score", "--date", day, "--verbose"])
            assert verbose.exit_code == 0, verbose.output
        else:
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
    result = (
        load_definitions()
        .resolve_job_def("nightly_scoring_job")
        .execute_in_process(
            partition_key="2026-02-04",
            instance=dg.DagsterInstance.ephemeral(),
            asset_selection=[dg.AssetKey("churn_risk_scores")],
            raise_on_error=False,
        )
    )
    assert not result.success
    failure = next(event for event in result.all_events if event.is_step_failure)
    assert "has no rows for 2026-02-04" in str(failure.event_specific_data)
