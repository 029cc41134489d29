"""The code location: one Definitions object assembling what the stage modules define."""

import dagster as dg
from dagster_dbt import DbtCliResource

from retention_pipelines.assets import features, ingestion, training
from retention_pipelines.automation import daily_snapshot_job, retrain_job
from retention_pipelines.resources import (
    LandingResource,
    MlflowResource,
    WarehouseResource,
    dbt_executable,
)

defs = dg.Definitions(
    assets=[*dg.load_assets_from_modules([ingestion, features, training])],
    jobs=[daily_snapshot_job, retrain_job],
    resources={
        "warehouse": WarehouseResource(),
        "landing": LandingResource(),
        "mlflow_registry": MlflowResource(),
        "dbt": DbtCliResource(
            project_dir=features.retention_dbt_project, dbt_executable=dbt_executable()
        ),
    },
)
