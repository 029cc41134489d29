"""The local Dagster instance: its config, generated under ``.retention/`` for the embedded
server, so runs, events and schedules live in Postgres locally as in production."""

from __future__ import annotations

from pathlib import Path

import yaml

from retention_pipelines.core import database
from retention_pipelines.settings import RetentionSettings

MAX_CONCURRENT_RUNS = 2


def local_instance_config(dagster_database_url: str) -> dict[str, object]:
    """The instance config of a local deployment: Postgres storage, queued runs, monitoring."""
    return {
        "storage": {"postgres": {"postgres_url": dagster_database_url}},
        "run_coordinator": {
            "module": "dagster.core.run_coordinator",
            "class": "QueuedRunCoordinator",
            "config": {"max_concurrent_runs": MAX_CONCURRENT_RUNS},
        },
        "run_monitoring": {"enabled": True, "start_timeout_seconds": 180},
        "telemetry": {"enabled": False},
    }


def write_local_instance(settings: RetentionSettings, warehouse_url: str) -> Path:
    """Create the Dagster database on the warehouse's server and write ``DAGSTER_HOME``."""
    database.ensure_database(warehouse_url, settings.dagster_database)
    dagster_url = database.with_database(warehouse_url, settings.dagster_database)
    home = settings.dagster_home
    home.mkdir(parents=True, exist_ok=True)
    config = local_instance_config(dagster_url)
    (home / "dagster.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return home
