"""Helpers the tests share: building a snapshot as the nightly job does, a registered
champion without training, the platform's settings pointed at throwaway databases, and a
training run small enough for tests."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

TELCO_CSV = Path(__file__).resolve().parents[2] / "shared" / "data" / "telco_customer_churn.csv"
TELCO_DAY = "2026-01-15"


@contextmanager
def throwaway_database(server_url: str) -> Iterator[str]:
    """A migrated database of its own on ``server_url``, dropped on exit."""
    from retention_pipelines.core import database  # noqa: PLC0415

    name = f"retention_test_{uuid.uuid4().hex[:10]}"
    database.ensure_database(server_url, name)
    url = database.with_database(server_url, name)
    database.upgrade(url)
    try:
        yield url
    finally:
        database.drop_database(server_url, name)


def build_snapshot(url: str, csv: Path, day: str, target_path: Path) -> None:
    """Ingest ``csv`` as the snapshot of ``day`` and build its features with the real dbt
    project, as the nightly job does."""
    import json  # noqa: PLC0415
    import subprocess  # noqa: PLC0415
    from datetime import date  # noqa: PLC0415

    from retention_pipelines.core.ingestion import (  # noqa: PLC0415
        check_landing_file,
        read_validated_chunks,
    )
    from retention_pipelines.core.warehouse.raw import replace_snapshot_partition  # noqa: PLC0415
    from retention_pipelines.resources import WarehouseResource, dbt_executable  # noqa: PLC0415
    from retention_pipelines.settings import get_settings  # noqa: PLC0415

    replace_snapshot_partition(
        url,
        snapshot_date=date.fromisoformat(day),
        facts=check_landing_file(csv, max_bytes=10**9),
        chunks=read_validated_chunks(csv, chunk_rows=10_000),
    )
    project = get_settings().dbt_project_dir
    with WarehouseResource(database_url=url).dbt_environment():
        subprocess.run(
            [dbt_executable(), "build", "--quiet", "--select", "stg_customers customer_features",
             "--project-dir", str(project), "--profiles-dir", str(project),
             "--target-path", str(target_path),
             "--vars", json.dumps({"snapshot_date": day})],
            check=True,
        )  # fmt: skip


def register_champion(client, test_auc: float) -> str:
    """A registered version whose training run logged ``test_roc_auc``, promoted: what the
    training stage leaves, without training (the artefact is never loaded)."""
    from retention_pipelines.core import registry  # noqa: PLC0415

    # Through the client, in MLflow's default experiment: whatever experiment this process
    # set active before (in another store) plays no part.
    run = client.create_run("0", run_name="registered-for-a-test")
    client.log_metric(run.info.run_id, "test_roc_auc", test_auc)
    client.set_terminated(run.info.run_id)
    if not client.search_registered_models(f"name = '{registry.MODEL_NAME}'"):
        client.create_registered_model(registry.MODEL_NAME)
    created = client.create_model_version(
        registry.MODEL_NAME, source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id
    )
    version = str(created.version)
    registry.promote(client, version, reason="promoted by a test", actor="pytest")
    return version


@contextmanager
def platform_settings(
    database_url: str, server_url: str, home: Path, env: dict[str, str] | None = None
) -> Iterator[None]:
    """The platform's own settings pointed at ``database_url``, a home folder and throwaway
    Dagster and MLflow databases, as ``retention`` and ``Definitions`` read them (and ``env``,
    more settings)."""
    from retention_pipelines.core import database  # noqa: PLC0415
    from retention_pipelines.settings import get_settings  # noqa: PLC0415

    names = {
        "RETENTION_DAGSTER_DATABASE": f"retention_test_dagster_{uuid.uuid4().hex[:8]}",
        "RETENTION_MLFLOW_DATABASE": f"retention_test_mlflow_{uuid.uuid4().hex[:8]}",
    }
    patch = pytest.MonkeyPatch()
    patch.setenv("RETENTION_DATABASE_URL", database_url)
    patch.setenv("RETENTION_HOME_DIR", str(home))
    patch.setenv("DAGSTER_HOME", str(home / "dagster_home"))  # what a local run sets
    for key, value in {**names, **(env or {})}.items():
        patch.setenv(key, value)
    get_settings.cache_clear()
    try:
        yield
    finally:
        patch.undo()
        get_settings.cache_clear()
        for name in names.values():
            database.drop_database(server_url, name)


# A retraining run small enough for tests that need a champion, not a good one: quality is the
# training tests' business.
TINY_TRAINING = {
    "ops": {
        name: {
            "config": {
                "seed": 3,
                "xgboost_trials": 3,
                "xgboost_timeout_s": 30,
                "catboost_trials": 1,
                "catboost_timeout_s": 30,
                "baseline_tolerance": 1.0,
            }
        }
        for name in ("training_set", "churn_model_candidates")
    }
}


def debian_program(program: str, package: str) -> str:
    """A program the tests drive from a Debian package (``.ci/run`` installs the package where
    it is missing): its path; a skip where it is not installed, a failure in CI."""
    path = shutil.which(program)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{program} is missing: .ci/run installs Debian's {package} package")
        pytest.skip(f"{program} is not installed here (apt-get install {package})")
    return path
