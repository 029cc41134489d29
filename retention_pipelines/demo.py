"""What ``make demo`` does before it serves the UIs: today's partition built, a first champion
trained when there is none, today's customers scored, all through the local Dagster instance
so the runs show in the UI afterwards.

Each step is skipped when what it makes is already there (today's features, a champion,
today's scores), so a second demo only checks and goes on to serve. The first champion is
trained on a small budget (``RETENTION_DEMO_XGBOOST_TRIALS`` and
``RETENTION_DEMO_CATBOOST_TRIALS`` Optuna trials instead of ``retrain_job``'s full default)
so the first demo stays a few minutes long: a model to look at, not the best one;
``retention train`` tunes with the full budget and lets the gate decide.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import dagster as dg

from retention_pipelines.core.database import connect, settings_database_url
from retention_pipelines.core.ingestion import landing_file_name
from retention_pipelines.core.warehouse.features import read_labelled
from retention_pipelines.core.warehouse.raw import PartitionCounts, partition_counts
from retention_pipelines.core.warehouse.scores import band_counts, score_counts
from retention_pipelines.local_runs import RunOutcome, RunProgress, local_instance, run_job
from retention_pipelines.settings import RetentionSettings

if TYPE_CHECKING:
    from mlflow import MlflowClient

DEMO_JOB = "daily_snapshot_job"
TRAIN_JOB = "retrain_job"
SCORE_JOB = "nightly_scoring_job"
FEATURE_ASSET = dg.AssetKey("customer_features")
# What the scoring stage runs of nightly_scoring_job: the night without its ingestion and
# features, which the build stage has just made (or made earlier today).
SCORE_GROUPS = ("scoring", "analytics", "monitoring", "crm")
CANDIDATES_ASSET = "churn_model_candidates"
BANDS = ("high", "medium", "low")


@dataclass
class DemoReport:
    snapshot_date: date
    database_url: str
    dagster_home: Path
    landing_file: Path
    generated: bool
    run_id: str | None
    log_path: Path | None
    seconds: float
    counts: PartitionCounts
    feature_rows: int
    champion_version: str | None = None
    # The retraining run of this demo, when it trained the champion; None when one was there.
    train_run_id: str | None = None
    trials: tuple[int, int] | None = None  # (XGBoost, CatBoost) Optuna trials of that run
    score_run_id: str | None = None
    customers_scored: int = 0
    bands: dict[str, int] = field(default_factory=dict)
    # Seconds per stage that ran ("build", "train", "score"); a reused stage is absent.
    stages: dict[str, float] = field(default_factory=dict)

    def lines(self) -> list[tuple[str, str]]:
        return [
            ("landing file", f"{self.landing_file}{' (generated)' if self.generated else ''}"),
            ("build run (daily_snapshot_job)", self._run(self.run_id, "build", "built")),
            ("rows read", f"{self.counts.rows_read:,}"),
            ("valid rows (raw.customer_snapshots)", f"{self.counts.rows_valid:,}"),
            ("rejected rows (raw.customer_rejects)", f"{self.counts.rows_rejected:,}"),
            ("duplicates collapsed", f"{self.counts.duplicates_collapsed:,}"),
            ("feature rows (features.customer_features)", f"{self.feature_rows:,}"),
            ("champion (churn-model@champion)", self._champion()),
            ("scoring run (nightly_scoring_job)", self._run(self.score_run_id, "score", "scored")),
            ("customers scored (ml.churn_risk_scores)", f"{self.customers_scored:,}"),
            *((f"{band} risk", f"{self.bands.get(band, 0):,}") for band in BANDS),
            ("seconds", f"{self.seconds:.1f}"),
        ]

    @property
    def trained_now(self) -> bool:
        return self.train_run_id is not None

    def _run(self, run_id: str | None, stage: str, done: str) -> str:
        if run_id is None:
            return f"reused ({done} earlier today)"
        return f"{run_id[:8]}, {self.stages.get(stage, 0.0):.0f} s"

    def _champion(self) -> str:
        if self.champion_version is None:
            return "none"
        version = f"v{self.champion_version}"
        if self.train_run_id is not None:
            trials = (
                f"{self.trials[0]} XGBoost + {self.trials[1]} CatBoost trials, "
                if self.trials
                else ""
            )
            seconds = self.stages.get("train", 0.0)
            return f"{version}, trained now ({trials}run {self.train_run_id[:8]}, {seconds:.0f} s)"
        if self.score_run_id is None:
            return f"{version} (today's scores; registered earlier)"
        return f"{version} (registered earlier)"


class DemoRunError(RuntimeError):
    """A run of the demo failed; ``outcome`` says which step, and why."""

    def __init__(self, outcome: RunOutcome) -> None:
        log = outcome.log_path or "above"
        super().__init__(f"the demo run {outcome.run_id} failed: {outcome.error} (log: {log})")
        self.outcome = outcome


class DemoDataError(RuntimeError):
    """Today's snapshot cannot train a first champion (too few labelled customers)."""


def today_in(timezone: str) -> date:
    return datetime.now(ZoneInfo(timezone)).date()


def demo_training_config(settings: RetentionSettings) -> dict[str, Any]:
    """Run config of the demo's first training: the demo's small Optuna budget in place of
    the training resource's (what ``retention train`` and the sensor use)."""
    trials = {
        "xgboost_trials": settings.demo_xgboost_trials,
        "catboost_trials": settings.demo_catboost_trials,
    }
    return {"ops": {CANDIDATES_ASSET: {"config": trials}}}


def mlflow_client(settings: RetentionSettings, url: str) -> MlflowClient:
    """The registry's client as the command line builds it (the mlflow database on the
    platform's server)."""
    from mlflow import MlflowClient  # noqa: PLC0415  # a slow import, only when needed

    from retention_pipelines.core.registry import mlflow_tracking_uri  # noqa: PLC0415

    return MlflowClient(mlflow_tracking_uri(url, settings.mlflow_database))


def run_demo(
    settings: RetentionSettings,
    *,
    customers: int,
    on_progress: Callable[[RunProgress], None] | None = None,
    log_path: Path | None = None,
) -> DemoReport:
    """Start (or reuse) the database and instance, land a snapshot, build today's partition,
    train a first champion when there is none, and score today when it is not scored yet.

    When today is built and scored already, MLflow is not even opened (its import alone takes
    seconds): the report names the model of today's scores."""
    started = time.perf_counter()
    url = settings_database_url(settings)
    instance = local_instance(settings)
    today = today_in(settings.timezone)
    partition = today.isoformat()
    landing = settings.resolved_landing_dir / landing_file_name(today)
    generated = not landing.exists()
    if generated:
        _generate_landing_file(landing, customers, today)
    stages: dict[str, float] = {}

    def run(stage: str, job: str, **options: Any) -> RunOutcome:
        began = time.perf_counter()
        outcome = run_job(settings, job, on_progress=on_progress, log_path=log_path, **options)
        stages[stage] = time.perf_counter() - began
        if not outcome.success:
            raise DemoRunError(outcome)
        return outcome

    run_id = None
    if partition not in instance.get_materialized_partitions(FEATURE_ASSET):
        run_id = run("build", DEMO_JOB, partition_key=partition).run_id

    champion = train_run_id = trials = score_run_id = None
    if run_id is not None or not _scored(instance, partition):
        from retention_pipelines.core import registry  # noqa: PLC0415  # MLflow: slow

        client = mlflow_client(settings, url)
        champion = registry.champion_version(client)
        if champion is None:
            _check_trainable(url, settings.training_snapshots, landing)
            config = demo_training_config(settings)
            train_run_id = run("train", TRAIN_JOB, run_config=config).run_id
            trials = (settings.demo_xgboost_trials, settings.demo_catboost_trials)
            champion = registry.champion_version(client)
        selection = scoring_assets()
        score_run_id = run(
            "score", SCORE_JOB, partition_key=partition, asset_selection=selection
        ).run_id
    scores = score_counts(url, today)
    with connect(url) as conn:
        bands = band_counts(conn, today)

    empty = PartitionCounts(0, 0, 0, 0)
    return DemoReport(
        snapshot_date=today,
        database_url=url,
        dagster_home=settings.dagster_home,
        landing_file=landing,
        generated=generated,
        run_id=run_id,
        log_path=log_path if stages else None,
        seconds=time.perf_counter() - started,
        counts=partition_counts(url, today) or empty,
        feature_rows=scores.feature_rows,
        champion_version=champion or scores.versions or None,
        train_run_id=train_run_id,
        trials=trials,
        score_run_id=score_run_id,
        customers_scored=scores.score_rows,
        bands=_in_band_order(bands),
        stages=stages,
    )


def _generate_landing_file(landing: Path, customers: int, today: date) -> None:
    """Today's demo snapshot: labelled synthetic customers (the first champion trains on
    them), the same for the same day."""
    from retention_pipelines.core.training import MIN_LABELLED_ROWS  # noqa: PLC0415
    from retention_pipelines.datagen import write_landing_csv  # noqa: PLC0415

    if customers < MIN_LABELLED_ROWS:
        raise DemoDataError(
            f"the demo needs at least {MIN_LABELLED_ROWS} customers to train a first champion "
            f"({customers} asked)"
        )
    landing.parent.mkdir(parents=True, exist_ok=True)
    write_landing_csv(landing, customers, seed=int(today.strftime("%Y%m%d")), labelled=True)


def scoring_assets() -> list[dg.AssetKey]:
    """The assets of nightly_scoring_job after the features: scores, what business users
    read, drift, realised performance and the CRM hand-off."""
    from retention_pipelines.definitions import load_definitions  # noqa: PLC0415

    graph = load_definitions().resolve_asset_graph()
    return sorted(dg.AssetSelection.groups(*SCORE_GROUPS).resolve(graph))


def _scored(instance: dg.DagsterInstance, partition: str) -> bool:
    """Whether a run of nightly_scoring_job (the demo's, or the nightly schedule's) went
    through for ``partition``: scores, analytics and monitoring all built."""
    runs = instance.get_runs(
        filters=dg.RunsFilter(
            job_name=SCORE_JOB,
            statuses=[dg.DagsterRunStatus.SUCCESS],
            tags={"dagster/partition": partition},
        ),
        limit=1,
    )
    return bool(runs)


def _check_trainable(url: str, snapshots: int, landing: Path) -> None:
    """Say, before a training run fails on it, that the rows training would read (the latest
    labelled snapshots) are too few: a landing file of the person's own without the Churn
    column filled, say."""
    from retention_pipelines.core.training import MIN_LABELLED_ROWS  # noqa: PLC0415

    frame, _ = read_labelled(url, snapshots)
    if len(frame) < MIN_LABELLED_ROWS:
        raise DemoDataError(
            f"{len(frame):,} customers with a churn label to train a first champion on, "
            f"at least {MIN_LABELLED_ROWS} needed: today's landing file {landing} has too few; "
            "move it away and run the demo again to generate a labelled one"
        )


def _in_band_order(counts: Mapping[str, int]) -> dict[str, int]:
    return {band: counts.get(band, 0) for band in BANDS}
