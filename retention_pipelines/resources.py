"""Dagster resources: the warehouse and the landing area.

Every field is an optional override: left unset, the value comes from ``settings.py`` (the
``RETENTION_*`` environment) when a run starts, so ``definitions.py`` reads nothing at import.
Tests pass explicit values to point a run at a throwaway database and folder.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from threading import Lock

import dagster as dg
import mlflow
from mlflow import MlflowClient
from pydantic import Field

from retention_pipelines.core import database
from retention_pipelines.core.ingestion import landing_file_name
from retention_pipelines.settings import get_settings

_upgraded: set[str] = set()
_upgrade_lock = Lock()


def prepared_database_url(database_url: str | None = None) -> str:
    """The warehouse URL, migrated and with its reader role ready, once per process."""
    settings = get_settings()
    url = database.resolve_database_url(
        database_url or settings.database_url, settings.embedded_pgdata
    )
    with _upgrade_lock:
        if url not in _upgraded:
            database.upgrade(url)
            database.ensure_reader_role(
                url, settings.reader_role, settings.reader_password.get_secret_value()
            )
            _upgraded.add(url)
    return url


class WarehouseResource(dg.ConfigurableResource):
    """The platform's Postgres: the configured server, or the embedded one."""

    database_url: str | None = Field(
        default=None, description="Postgres URL; unset means RETENTION_DATABASE_URL or embedded."
    )

    def url(self) -> str:
        return prepared_database_url(self.database_url)

    @contextmanager
    def dbt_environment(self) -> Iterator[None]:
        """Expose the connection and the reader role to dbt for the duration of a dbt command.

        ``profiles.yml`` reads the connection; ``dbt_project.yml`` grants the analytics views
        to the role.
        """
        parts = database.connection_parts(self.url())
        values = {
            "RETENTION_DBT_HOST": parts.host,
            "RETENTION_DBT_PORT": str(parts.port),
            "RETENTION_DBT_USER": parts.user,
            "RETENTION_DBT_PASSWORD": parts.password,
            "RETENTION_DBT_DBNAME": parts.dbname,
            "RETENTION_DBT_READER_ROLE": get_settings().reader_role,
        }
        previous = {name: os.environ.get(name) for name in values}
        os.environ.update(values)
        try:
            yield
        finally:
            for name, value in previous.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


class LandingResource(dg.ConfigurableResource):
    """Where landing files arrive, and the limits ingestion applies to them."""

    landing_dir: str | None = Field(default=None, description="Overrides RETENTION_LANDING_DIR.")
    max_file_bytes: int | None = Field(default=None, description="Overrides the size limit.")
    chunk_rows: int | None = Field(default=None, description="Overrides rows per chunk.")
    max_reject_share: float | None = Field(default=None, description="Overrides the threshold.")

    def path_for(self, snapshot_date: date) -> Path:
        folder = Path(self.landing_dir) if self.landing_dir else get_settings().resolved_landing_dir
        return folder / landing_file_name(snapshot_date)

    def file_limit(self) -> int:
        return self.max_file_bytes or get_settings().max_file_bytes

    def rows_per_chunk(self) -> int:
        return self.chunk_rows or get_settings().ingest_chunk_rows

    def reject_threshold(self) -> float:
        if self.max_reject_share is not None:
            return self.max_reject_share
        return get_settings().max_reject_share


def dbt_executable() -> str:
    """dbt from PATH, else the one installed beside this interpreter (a venv not activated)."""
    return shutil.which("dbt") or str(Path(sys.executable).parent / "dbt")


class MlflowResource(dg.ConfigurableResource):
    """MLflow with its backend store on the platform's Postgres and artefacts in a folder."""

    tracking_uri: str | None = Field(
        default=None, description="Overrides the store (default: the mlflow database)."
    )
    artifact_root: str | None = Field(default=None, description="Overrides the artefact folder.")
    experiment: str | None = Field(default=None, description="Overrides the experiment name.")

    def client(self, warehouse: WarehouseResource) -> MlflowClient:
        """Point this process's MLflow at the store and experiment, and return a client."""
        from retention_pipelines.core.registry import mlflow_tracking_uri  # noqa: PLC0415

        settings = get_settings()
        uri = self.tracking_uri or mlflow_tracking_uri(warehouse.url(), settings.mlflow_database)
        mlflow.set_tracking_uri(uri)
        name = self.experiment or settings.mlflow_experiment
        if mlflow.get_experiment_by_name(name) is None:
            root = Path(self.artifact_root or settings.resolved_mlflow_artifact_root)
            root.mkdir(parents=True, exist_ok=True)
            mlflow.create_experiment(name, artifact_location=root.resolve().as_uri())
        mlflow.set_experiment(name)
        return MlflowClient(uri)
