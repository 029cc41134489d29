"""Jobs, schedules and sensors."""

from datetime import date

import dagster as dg

from retention_pipelines.assets.partitions import daily_partitions
from retention_pipelines.core import performance, retraining
from retention_pipelines.core.warehouse.monitoring import quality_passed
from retention_pipelines.resources import MlflowResource, MonitoringResource, WarehouseResource
from retention_pipelines.settings import RetentionSettings

# Everything snapshot-shaped for one day: ingestion, then the dbt feature tables.
daily_snapshot_job = dg.define_asset_job(
    name="daily_snapshot_job",
    selection=dg.AssetSelection.groups("ingestion", "staging", "features"),
    partitions_def=daily_partitions,
    description="Ingest a day's landing file and rebuild that day's feature tables.",
)

# Train, register a challenger, run the promotion gate.
retrain_job = dg.define_asset_job(
    name="retrain_job",
    selection=dg.AssetSelection.groups("training"),
    description="Tune and calibrate a churn model, register it as challenger, run the gate.",
    tags={"retention/stage": "training"},
    # One search in one place, whichever executor the partitioned jobs use: its Optuna study
    # spreads over `retention tune-worker` processes, not over step pods.
    executor_def=dg.multiprocess_executor,
)

# The night: ingest the day's landing file, rebuild its features (and check their quality),
# score every customer with the champion, refresh what business users read, and end with the
# drift report and the realised performance of earlier scores; the customers to contact are
# handed to the CRM as soon as the scores are in.
nightly_scoring_job = dg.define_asset_job(
    name="nightly_scoring_job",
    selection=dg.AssetSelection.groups(
        "ingestion", "staging", "features", "scoring", "analytics", "monitoring", "crm"
    ),
    partitions_def=daily_partitions,
    description=(
        "One snapshot date end to end: ingestion, features, scores, analytics views, drift, "
        "CRM hand-off."
    ),
)


def step_executor(settings: RetentionSettings) -> dg.ExecutorDefinition:
    """The executor of the jobs that do not name one (the partitioned ones): processes of the
    run's machine, or on Kubernetes (``RETENTION_EXECUTOR=k8s``) Dagster's own
    ``k8s_job_executor``, a pod per step with at most ``k8s_max_concurrent_steps`` at once."""
    if settings.executor == "k8s":
        from dagster_k8s import k8s_job_executor  # noqa: PLC0415

        return k8s_job_executor.configured(
            {"max_concurrent": settings.k8s_max_concurrent_steps}, name="k8s_step_executor"
        )
    return dg.multiprocess_executor


# 02:00 in RETENTION_TIMEZONE, for that day's partition (today's landing file must have
# arrived by then). Runs are keyed by partition, so a tick evaluated twice launches once.
nightly_scoring_schedule = dg.build_schedule_from_partitioned_job(
    nightly_scoring_job,
    name="nightly_scoring_schedule",
    hour_of_day=2,
    minute_of_hour=0,
    description="Every night at 02:00: the day's snapshot ingested, featurized and scored.",
)


# Governance: what is past its retention goes, every day, after the night's runs.
data_retention_job = dg.define_asset_job(
    name="data_retention_job",
    selection=dg.AssetSelection.assets("data_retention_purge"),
    description="Delete what is past each table's retention; keep what the champion needs.",
)

# 05:00 in RETENTION_TIMEZONE: after the night's scoring, before the working day.
data_retention_schedule = dg.ScheduleDefinition(
    name="data_retention_schedule",
    job=data_retention_job,
    cron_schedule="0 5 * * *",
    execution_timezone=daily_partitions.timezone,
    description="Every day at 05:00: rows past their retention purged (RETENTION_KEEP_*_DAYS).",
)


SENSOR_TAG = "retention/sensor"


@dg.sensor(
    name="drift_retrain_sensor",
    job=retrain_job,
    minimum_interval_seconds=300,
    description=(
        "Retrains once per drifted date (run key retrain-<champion>-<date>) when the latest "
        "drift report shows drift past the threshold, or the champion's realised ROC AUC "
        "dropped, and the date's data quality passed; waits RETENTION_RETRAIN_COOLDOWN_DAYS "
        "after a retraining."
    ),
)
def drift_retrain_sensor(
    context: dg.SensorEvaluationContext,
    warehouse: WarehouseResource,
    mlflow_registry: MlflowResource,
    monitoring: MonitoringResource,
) -> dg.RunRequest | dg.SkipReason:
    url = warehouse.url()
    reports = retraining.latest_reports(url)
    report = reports[0] if reports else None
    champion = performance.champion_reference(mlflow_registry.client)
    decision = retraining.decide_retraining(
        report=report,
        champion_version=champion.version if champion else None,
        quality_passed=quality_passed(url, report.snapshot_date) if report else None,
        last_drift_retrain=_last_drift_retrain(context.instance),
        cooldown_days=monitoring.retrain_cooldown_days,
        performance=(
            performance.performance_drop(
                url,
                champion.version,
                champion.test_auc,
                threshold=monitoring.performance_auc_drop,
            )
            if champion and champion.test_auc is not None
            else None
        ),
    )
    if not decision.retrain:
        return dg.SkipReason(decision.reason)
    return dg.RunRequest(
        run_key=decision.run_key, tags={**decision.tags, SENSOR_TAG: "drift_retrain_sensor"}
    )


def _last_drift_retrain(instance: dg.DagsterInstance) -> date | None:
    """The drifted date of the newest retraining run this sensor requested."""
    runs = instance.get_runs(
        filters=dg.RunsFilter(job_name=retrain_job.name, tags={SENSOR_TAG: "drift_retrain_sensor"}),
        limit=1,
    )
    tag = runs[0].tags.get(retraining.DRIFT_DATE_TAG) if runs else None
    return date.fromisoformat(tag) if tag else None
