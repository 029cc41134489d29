"""The code location: one Definitions object assembling what the stage modules define."""

import dagster as dg
from dagster_dbt import DbtCliResource

from retention_pipelines.assets import (
    features,
    ingestion,
    monitoring,
    scoring,
    training,
)
from retention_pipelines.automation import (
    daily_snapshot_job,
    drift_retrain_sensor,
    nightly_scoring_job,
    nightly_scoring_schedule,
    retrain_job,
)
from retention_pipelines.checks.quality import quality_checks
from retention_pipelines.resources import (
    LandingResource,
    MlflowResource,
    WarehouseResource,
    dbt_executable,
)

defs = dg.Definitions(
    assets=[*dg.load_assets_from_modules([ingestion, features, training, scoring, monitoring])],
    asset_checks=[
        *dg.load_asset_checks_from_modules([ingestion, features, training, scoring]),
        *quality_checks,
    ],
    jobs=[daily_snapshot_job, nightly_scoring_job, retrain_job],
    schedules=[nightly_scoring_schedule],
    sensors=[drift_retrain_sensor],
    resources={
        "warehouse": WarehouseResource(),
        "landing": LandingResource(),
        "mlflow_registry": MlflowResource(),
        "dbt": DbtCliResource(
            project_dir=features.retention_dbt_project, dbt_executable=dbt_executable()
        ),
    },
)
