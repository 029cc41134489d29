"""What ``make demo`` does before serving the UIs, on a throwaway database and folder: today
built, a first champion trained on the demo's small budget, today scored; then all reused."""

from collections.abc import Iterator
from copy import deepcopy
from pathlib import Path

import dagster as dg
import pytest

from retention_pipelines.demo import run_demo
from retention_pipelines.local_runs import RunProgress
from retention_pipelines.settings import get_settings
from retention_pipelines_tests.helpers import platform_settings

pytestmark = pytest.mark.slow  # the CLI's demo runs on the embedded server (test_demo_processes)

# 300 customers leave 60 for the test split: too few for the check against the logistic
# baseline to mean anything (the training tests hold quality), so it does not stop the demo.
SMALL_DEMO = {"RETENTION_BASELINE_TOLERANCE": "1.0"}


@pytest.fixture
def demo_home(database_url: str, server_url: str, tmp_path: Path) -> Iterator[Path]:
    with platform_settings(database_url, server_url, tmp_path, env=SMALL_DEMO):
        yield tmp_path


def _jobs_in_order(seen: list[RunProgress]) -> list[str]:
    jobs: list[str] = []
    for update in seen:
        if not jobs or jobs[-1] != update.job_name:
            jobs.append(update.job_name)
    return jobs


def test_the_demo_builds_trains_and_scores_today_once_then_reuses_everything(
    demo_home: Path,
) -> None:
    settings = get_settings()
    seen: list[RunProgress] = []
    log = demo_home / "logs" / "demo.log"
    first = run_demo(
        settings, customers=300, on_progress=lambda p: seen.append(deepcopy(p)), log_path=log
    )

    assert first.generated and first.landing_file.parent == demo_home / "landing"
    assert (first.counts.rows_read, first.counts.rows_valid, first.feature_rows) == (300, 300, 300)
    assert first.champion_version == "1" and first.trained_now
    assert first.trials == (settings.demo_xgboost_trials, settings.demo_catboost_trials)
    assert first.customers_scored == 300
    assert sum(first.bands.values()) == 300 and list(first.bands) == ["high", "medium", "low"]
    assert set(first.stages) == {"build", "train", "score"}
    assert _jobs_in_order(seen) == ["daily_snapshot_job", "retrain_job", "nightly_scoring_job"]
    studies = [update.observed.get("churn_model_candidates", {}) for update in seen]
    budgets = {study["study"]: study["trials_budget"] for study in studies if study}
    # The demo's budget, not retrain_job's default.
    assert budgets == {
        "xgboost": settings.demo_xgboost_trials,
        "catboost": settings.demo_catboost_trials,
    }
    assert "STEP_SUCCESS" in log.read_text()  # the Dagster log went to the file

    instance = dg.DagsterInstance.from_config(str(first.dagster_home))
    runs = {run_id: instance.get_run_by_id(run_id) for run_id in
            (first.run_id, first.train_run_id, first.score_run_id)}  # fmt: skip
    assert all(run is not None and run.is_success for run in runs.values())
    scoring = runs[first.score_run_id]
    assert scoring is not None
    assert scoring.tags["dagster/partition"] == first.snapshot_date.isoformat()
    assert dg.AssetKey("churn_risk_scores") in (scoring.asset_selection or set())
    assert dg.AssetKey("raw_customer_snapshot") not in (scoring.asset_selection or set())

    second = run_demo(get_settings(), customers=300)
    assert not second.generated
    assert (second.run_id, second.train_run_id, second.score_run_id) == (None, None, None)
    assert second.stages == {} and second.log_path is None
    assert second.champion_version == "1"
    assert (second.customers_scored, second.bands) == (300, first.bands)
    assert second.seconds < 20  # checks only
    assert len(instance.get_runs()) == 3
