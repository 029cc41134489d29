"""Shared fixtures: a real Postgres (the configured server or a throwaway embedded one) and a
fresh database per test module, migrated like production."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import psycopg
import pytest

TELCO_CSV = Path(__file__).resolve().parents[2] / "shared" / "data" / "telco_customer_churn.csv"
_TEST_HOME = Path(tempfile.mkdtemp(prefix="retention-tests-"))


def pytest_configure(config: pytest.Config) -> None:
    """Keep the tests' embedded server and files out of the project's own ``.retention/``."""
    os.environ.setdefault("RETENTION_HOME_DIR", str(_TEST_HOME))


def pytest_unconfigure(config: pytest.Config) -> None:
    from retention_pipelines.core.database import stop_embedded_server  # noqa: PLC0415

    stop_embedded_server(_TEST_HOME / "pgdata")
    shutil.rmtree(_TEST_HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def server_url() -> str:
    """The server the suite runs on: RETENTION_DATABASE_URL, or the embedded default."""
    from retention_pipelines.core import database  # noqa: PLC0415
    from retention_pipelines.settings import get_settings  # noqa: PLC0415

    settings = get_settings()
    return database.resolve_database_url(settings.database_url, settings.embedded_pgdata)


def _fresh_database(server_url: str) -> Iterator[str]:
    from retention_pipelines.core import database  # noqa: PLC0415

    name = f"retention_test_{uuid.uuid4().hex[:10]}"
    database.ensure_database(server_url, name)
    url = database.with_database(server_url, name)
    database.upgrade(url)
    try:
        yield url
    finally:
        database.drop_database(server_url, name)


@pytest.fixture(scope="module")
def module_database_url(server_url: str) -> Iterator[str]:
    """A migrated database shared by the tests of one module."""
    yield from _fresh_database(server_url)


@pytest.fixture
def database_url(server_url: str) -> Iterator[str]:
    """A migrated database of this test's own."""
    yield from _fresh_database(server_url)


@pytest.fixture(scope="session")
def telco_csv() -> Path:
    if not TELCO_CSV.exists():
        pytest.fail(f"the Telco data is expected at {TELCO_CSV}")
    return TELCO_CSV


@pytest.fixture(scope="module")
def mlflow_uri(server_url: str) -> Iterator[str]:
    """A throwaway MLflow store on the test server, set as this process's tracking URI."""
    import mlflow  # noqa: PLC0415

    from retention_pipelines.core import database, registry  # noqa: PLC0415

    name = f"retention_test_mlflow_{uuid.uuid4().hex[:8]}"
    previous = mlflow.get_tracking_uri()
    uri = registry.mlflow_tracking_uri(server_url, name)
    mlflow.set_tracking_uri(uri)
    try:
        yield uri
    finally:
        mlflow.set_tracking_uri(previous)
        database.drop_database(server_url, name)


TELCO_DAY = "2026-01-15"


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
    from retention_pipelines.core.warehouse import replace_snapshot_partition  # noqa: PLC0415
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


@pytest.fixture(scope="module")
def telco_warehouse(module_database_url: str, telco_csv: Path, tmp_path_factory) -> str:
    """This module's database holding the Telco snapshot of ``TELCO_DAY``, ingested and turned
    into features by the real dbt project."""
    build_snapshot(module_database_url, telco_csv, TELCO_DAY, tmp_path_factory.mktemp("dbt"))
    return module_database_url


@pytest.fixture(scope="module")
def telco_features(telco_warehouse: str) -> pd.DataFrame:
    """The Telco snapshot's rows of ``features.customer_features``, in customer id order."""
    with psycopg.connect(telco_warehouse) as conn:
        cursor = conn.execute("select * from features.customer_features order by customer_id")
        return pd.DataFrame(cursor.fetchall(), columns=[c.name for c in cursor.description])


def register_champion(client, test_auc: float) -> str:
    """A registered version whose training run logged ``test_roc_auc``, promoted: what the
    training stage leaves, without training (the artefact is never loaded)."""
    import mlflow  # noqa: PLC0415

    from retention_pipelines.core import registry  # noqa: PLC0415

    with mlflow.start_run(run_name="registered-for-a-test") as run:
        mlflow.log_metric("test_roc_auc", test_auc)
    if not client.search_registered_models(f"name = '{registry.MODEL_NAME}'"):
        client.create_registered_model(registry.MODEL_NAME)
    created = client.create_model_version(
        registry.MODEL_NAME, source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id
    )
    version = str(created.version)
    registry.promote(client, version, reason="promoted by a test", actor="pytest")
    return version


@contextmanager
def platform_settings(database_url: str, server_url: str, home: Path) -> Iterator[None]:
    """The platform's own settings pointed at ``database_url``, a home folder and throwaway
    Dagster and MLflow databases, as ``retention`` and ``Definitions`` read them."""
    from retention_pipelines.core import database  # noqa: PLC0415
    from retention_pipelines.settings import get_settings  # noqa: PLC0415

    names = {
        "RETENTION_DAGSTER_DATABASE": f"retention_test_dagster_{uuid.uuid4().hex[:8]}",
        "RETENTION_MLFLOW_DATABASE": f"retention_test_mlflow_{uuid.uuid4().hex[:8]}",
    }
    patch = pytest.MonkeyPatch()
    patch.setenv("RETENTION_DATABASE_URL", database_url)
    patch.setenv("RETENTION_HOME_DIR", str(home))
    for key, value in names.items():
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
