"""The local Dagster instance: runs, events and schedules in Postgres, as in production.

Its config lives in ``$RETENTION_HOME_DIR/dagster_home/dagster.yaml``. The storage is the
Dagster database (``RETENTION_DAGSTER_DATABASE``) on the platform's server, found when an
instance is opened rather than when the file is written: the embedded server is started on
demand by whichever process opens the instance first (the webserver, the daemon, a run,
``dagster job list``), and a configured server is read from ``RETENTION_DATABASE_URL`` then,
so no password is written to the file and writing it needs no database.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from dagster import Field, StringSource
from dagster_postgres import DagsterPostgresStorage

from retention_pipelines.core import database
from retention_pipelines.settings import RetentionSettings

if TYPE_CHECKING:
    from dagster._serdes import ConfigurableClassData

MAX_CONCURRENT_RUNS = 2


class LocalPostgresStorage(DagsterPostgresStorage):
    """Dagster's Postgres storage on the platform's server: ``server_url``, or the embedded
    server of ``pgdata`` (started if it is not running); the database created if missing."""

    @classmethod
    def config_type(cls) -> dict[str, Field]:
        return {
            "database": Field(StringSource, is_required=True),
            "server_url": Field(StringSource, is_required=False),
            "pgdata": Field(StringSource, is_required=False),
        }

    @classmethod
    def from_config_value(  # type: ignore[override]
        cls, inst_data: ConfigurableClassData | None, config_value: dict[str, Any]
    ) -> LocalPostgresStorage:
        server = config_value.get("server_url") or database.embedded_database_url(
            Path(config_value["pgdata"])
        )
        database.ensure_database(server, config_value["database"])
        return cls(
            postgres_url=database.with_database(server, config_value["database"]),
            inst_data=inst_data,
        )


def local_instance_config(settings: RetentionSettings) -> dict[str, object]:
    """The instance config of a local deployment: Postgres storage, queued runs, monitoring."""
    where: dict[str, object] = (
        {"server_url": {"env": "RETENTION_DATABASE_URL"}}
        if settings.database_url
        else {"pgdata": str(settings.embedded_pgdata.resolve())}
    )
    return {
        "storage": {
            "custom": {
                "module": __name__,
                "class": LocalPostgresStorage.__name__,
                "config": {"database": settings.dagster_database, **where},
            }
        },
        "run_coordinator": {
            "module": "dagster.core.run_coordinator",
            "class": "QueuedRunCoordinator",
            "config": {"max_concurrent_runs": MAX_CONCURRENT_RUNS},
        },
        "run_monitoring": {"enabled": True, "start_timeout_seconds": 180},
        "telemetry": {"enabled": False},
    }


def write_local_instance(settings: RetentionSettings) -> Path:
    """Write ``DAGSTER_HOME``'s ``dagster.yaml`` (no database is touched); return the folder.

    The file names the server's URL by its variable only; it is still written readable by
    its owner alone, as an instance config may come to hold credentials.
    """
    home = settings.dagster_home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    config = yaml.safe_dump(local_instance_config(settings), sort_keys=False)
    database.write_private_file(home / "dagster.yaml", config)
    return home
