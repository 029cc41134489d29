"""Model quality and training time with the default budget, on the real Telco data.

    uv run python benchmarks/train_quality.py

Ingests ../shared/data/telco_customer_churn.csv into a throwaway database on the platform's
Postgres, builds its features with dbt, runs ``retrain_job`` in-process with the default
budget (settings), and prints test ROC AUC, Brier and top-decile lift for the baseline, both
tuned families and the calibrated winner, with the wall time.
"""

from __future__ import annotations

import shutil
import tempfile
import time
import uuid
from pathlib import Path

import dagster as dg
from dagster_dbt import DbtCliResource

from retention_pipelines.assets.features import retention_dbt_models, retention_dbt_project
from retention_pipelines.assets.ingestion import raw_customer_snapshot
from retention_pipelines.core import database, registry
from retention_pipelines.definitions import defs
from retention_pipelines.resources import (
    LandingResource,
    MlflowResource,
    WarehouseResource,
    dbt_executable,
)
from retention_pipelines.settings import PROJECT_ROOT, get_settings

TELCO = PROJECT_ROOT.parent / "shared" / "data" / "telco_customer_churn.csv"
DAY = "2026-01-15"


def main() -> None:
    settings = get_settings()
    server = database.resolve_database_url(settings.database_url, settings.embedded_pgdata)
    suffix = uuid.uuid4().hex[:8]
    warehouse_db, mlflow_db = f"retention_bench_{suffix}", f"retention_bench_mlflow_{suffix}"
    database.ensure_database(server, warehouse_db)
    try:
        with tempfile.TemporaryDirectory() as folder:
            shutil.copyfile(TELCO, Path(folder) / f"customers_{DAY}.csv")
            resources = {
                "warehouse": WarehouseResource(
                    database_url=database.with_database(server, warehouse_db)
                ),
                "landing": LandingResource(landing_dir=folder),
                "dbt": DbtCliResource(
                    project_dir=retention_dbt_project, dbt_executable=dbt_executable()
                ),
                "mlflow_registry": MlflowResource(
                    tracking_uri=registry.mlflow_tracking_uri(server, mlflow_db),
                    artifact_root=str(Path(folder) / "mlartifacts"),
                ),
            }
            instance = dg.DagsterInstance.ephemeral()
            dg.materialize(
                [raw_customer_snapshot, retention_dbt_models],
                partition_key=DAY,
                resources=resources,
                instance=instance,
            )
            started = time.perf_counter()
            result = defs.resolve_job_def("retrain_job").execute_in_process(
                resources=resources, instance=instance
            )
            seconds = time.perf_counter() - started
            training = result.output_for_node("churn_model_candidates")
    finally:
        database.drop_database(server, warehouse_db)
        database.drop_database(server, mlflow_db)
    print(f"retrain_job: {seconds:.1f} s wall, winner {training.winner}, "
          f"calibration {training.model.calibrator.method}")  # fmt: skip
    for kind, candidate in training.candidates.items():
        print(f"{kind}: {candidate.tuned.trials} trials ({candidate.tuned.pruned} pruned), "
              f"{candidate.tuned.seconds:.1f} s tuning")  # fmt: skip
    print(f"{'model':26s} {'ROC AUC':>8s} {'Brier':>7s} {'lift@10%':>8s}")
    for name, metrics in training.comparison().items():
        print(f"{name:26s} {metrics['roc_auc']:8.4f} {metrics['brier']:7.4f} "
              f"{metrics['top_decile_lift']:8.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
