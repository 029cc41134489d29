"""Model quality and training time with the default budget, on the real Telco data.

    uv run python benchmarks/train_quality.py [--seeds 42 0 1 2 3]

Ingests ../shared/data/telco_customer_churn.csv into a throwaway database on the platform's
Postgres, builds its features with dbt, runs ``retrain_job`` in-process with the default
budget (settings), and prints test ROC AUC, Brier and top-decile lift for the baseline, both
tuned families and the calibrated winner, with the wall time.

The test split holds about 1,130 customers, so a test ROC AUC carries a standard error of
about 0.012. With ``--seeds`` the job runs once per split seed (the default seed first) and a
summary shows how the figures spread across splits, and how often the chosen model beats the
baseline on its split.
"""

from __future__ import annotations

import argparse
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
from retention_pipelines.core.model_search import TrainingResult
from retention_pipelines.definitions import load_definitions
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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=[get_settings().training_seed],
        help="split seeds to run, one retrain_job each (default: the configured seed)",
    )  # fmt: skip
    seeds = parser.parse_args().seeds
    settings = get_settings()
    server = database.resolve_database_url(settings.database_url, settings.embedded_pgdata)
    suffix = uuid.uuid4().hex[:8]
    warehouse_db, mlflow_db = f"retention_bench_{suffix}", f"retention_bench_mlflow_{suffix}"
    database.ensure_database(server, warehouse_db)
    results: dict[int, tuple[float, TrainingResult]] = {}
    try:
        with tempfile.TemporaryDirectory() as folder:
            shutil.copyfile(TELCO, Path(folder) / f"customers_{DAY}.csv")
            warehouse = WarehouseResource(database_url=database.with_database(server, warehouse_db))
            resources = {
                "warehouse": warehouse,
                "landing": LandingResource(landing_dir=folder),
                "dbt": DbtCliResource(
                    project_dir=retention_dbt_project, dbt_executable=dbt_executable()
                ),
                "mlflow_registry": MlflowResource(
                    warehouse=warehouse,
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
            for seed in seeds:
                trained = _train(resources, instance, seed)
                if trained is not None:
                    results[seed] = trained
                    _report(seed, *trained)
    finally:
        database.drop_database(server, warehouse_db)
        database.drop_database(server, mlflow_db)
    if len(seeds) > 1:
        _summary(results, failed=len(seeds) - len(results))


def _train(
    resources: dict[str, object], instance: dg.DagsterInstance, seed: int
) -> tuple[float, TrainingResult] | None:
    config = {"config": {"seed": seed}}
    started = time.perf_counter()
    result = (
        load_definitions()
        .resolve_job_def("retrain_job")
        .execute_in_process(
            resources=resources,
            instance=instance,
            run_config={"ops": {"training_set": config, "churn_model_candidates": config}},
            raise_on_error=False,
        )
    )
    if not result.success:
        failure = next(event for event in result.all_events if event.is_step_failure)
        error = failure.step_failure_data.error
        print(f"\nseed {seed}: training failed: {error.message.strip() if error else failure}")
        return None
    return time.perf_counter() - started, result.output_for_node("churn_model_candidates")


def _report(seed: int, seconds: float, training: TrainingResult) -> None:
    print(f"\nseed {seed}: retrain_job {seconds:.1f} s wall, winner {training.winner}, "
          f"tree weight {training.model.tree_weight:.2f}, "
          f"calibration {training.model.calibrator.method}")  # fmt: skip
    for kind, candidate in training.candidates.items():
        print(f"{kind}: {candidate.tuned.trials} trials ({candidate.tuned.pruned} pruned), "
              f"{candidate.tuned.seconds:.1f} s tuning")  # fmt: skip
    print(f"{'model':40s} {'ROC AUC':>8s} {'Brier':>7s} {'lift@10%':>8s}")
    for name, metrics in training.comparison().items():
        print(f"{name:40s} {metrics['roc_auc']:8.4f} {metrics['brier']:7.4f} "
              f"{metrics['top_decile_lift']:8.2f}")  # fmt: skip


def _summary(results: dict[int, tuple[float, TrainingResult]], failed: int) -> None:
    chosen = [training.test for _, training in results.values()]
    baseline = [training.baseline_test for _, training in results.values()]
    wins = sum(c["roc_auc"] > b["roc_auc"] for c, b in zip(chosen, baseline, strict=True))
    print(f"\nover {len(results)} split seeds {sorted(results)}:")
    if not results:
        return
    for name, rows in (("baseline", baseline), ("chosen", chosen)):
        aucs = [row["roc_auc"] for row in rows]
        briers = [row["brier"] for row in rows]
        print(f"{name:9s} ROC AUC mean {sum(aucs) / len(aucs):.4f} "
              f"(min {min(aucs):.4f}, max {max(aucs):.4f}), "
              f"Brier mean {sum(briers) / len(briers):.4f}")  # fmt: skip
    print(f"{failed} split(s) failed the baseline check; of the others, the chosen model "
          f"beats the baseline's test ROC AUC on {wins} of {len(results)}; "
          f"slowest run {max(seconds for seconds, _ in results.values()):.1f} s")  # fmt: skip


if __name__ == "__main__":
    main()
