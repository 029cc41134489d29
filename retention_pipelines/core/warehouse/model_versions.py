"""``ml.model_versions``: the registry's facts about every version of the churn model, copied
into the warehouse.

Business users' dashboard reads them (through ``analytics.model_versions``) on the read-only
role, which cannot reach MLflow, and dbt joins them to realised performance. The registry stays
the source of truth: each sync reads every version and replaces the model's rows in one
transaction, so the table is never a mix of two registry states and a failed sync leaves the
previous copy. It runs after every promotion gate, promotion and rollback.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final

import psycopg
from mlflow.exceptions import MlflowException
from psycopg import sql

from retention_pipelines.core import registry
from retention_pipelines.core.database import connect
from retention_pipelines.core.warehouse.streams import table_name
from retention_pipelines.core.warehouse.tables import MODEL_VERSIONS

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

logger = logging.getLogger(__name__)

MODEL_VERSION_COLUMNS: Final[tuple[str, ...]] = (
    "model_name",
    "model_version",
    "registered_at",
    "is_champion",
    "is_challenger",
    "promoted_at",
    "promoted_by",
    "promotion_reason",
    "gate_decision",
    "training_snapshots",
    "training_rows",
    "test_roc_auc",
    "test_brier",
    "test_top_decile_lift",
    "baseline_test_roc_auc",
    "synced_at",
)
# The training run's metrics copied per version (logged by core.tracking).
RUN_METRICS: Final[tuple[str, ...]] = (
    "test_roc_auc",
    "test_brier",
    "test_top_decile_lift",
    "baseline_test_roc_auc",
)
# Syncs of one warehouse take turns, so the last one to start is the last one to write.
_SYNC_LOCK_KEY: Final = zlib.crc32(MODEL_VERSIONS.encode()) & 0x7FFF_FFFF


@dataclass(frozen=True)
class RegistryState:
    """What the registry says about one model: its versions and where its aliases point."""

    versions: tuple[ModelVersion, ...]
    aliases: Mapping[str, str]
    run_metrics: Mapping[str, Mapping[str, float]]


def sync_model_versions(url: str, client: MlflowClient) -> int:
    """Replace ``ml.model_versions``'s rows of the churn model with what the registry holds
    now; return how many versions were written (0, and no rows, before the first
    registration)."""
    with connect(url) as conn, conn.transaction():
        conn.execute("select pg_advisory_xact_lock(%s)", (_SYNC_LOCK_KEY,))
        rows = version_rows(read_registry(client), synced_at=datetime.now(UTC))
        replace_model_versions(conn, registry.MODEL_NAME, rows)
    logger.info("ml.model_versions: %d versions of %s synced", len(rows), registry.MODEL_NAME)
    return len(rows)


def read_registry(client: MlflowClient) -> RegistryState:
    """Every version of the churn model, its aliases and its training runs' metrics."""
    try:
        registered = client.get_registered_model(registry.MODEL_NAME)
    except MlflowException as error:
        if error.error_code == "RESOURCE_DOES_NOT_EXIST":
            return RegistryState(versions=(), aliases={}, run_metrics={})
        raise
    versions = tuple(_all_versions(client))
    run_ids = {version.run_id for version in versions if version.run_id}
    return RegistryState(
        versions=versions,
        aliases={alias: str(version) for alias, version in registered.aliases.items()},
        run_metrics={run_id: _run_metrics(client, run_id) for run_id in sorted(run_ids)},
    )


def _all_versions(client: MlflowClient) -> Iterable[ModelVersion]:
    """Every page of the model's versions (the registry answers in pages)."""
    page_token = None
    while True:
        page = client.search_model_versions(
            f"name = '{registry.MODEL_NAME}'", page_token=page_token
        )
        yield from page
        page_token = page.token
        if not page_token:
            return


def _run_metrics(client: MlflowClient, run_id: str) -> Mapping[str, float]:
    """The run's metrics; none when the run is gone (deleted and collected)."""
    try:
        return client.get_run(run_id).data.metrics
    except MlflowException:
        logger.warning("the training run %s of a registered version cannot be read", run_id)
        return {}


def version_rows(state: RegistryState, *, synced_at: datetime) -> list[tuple[object, ...]]:
    """One row of :data:`MODEL_VERSION_COLUMNS` per version. Tags are free text someone may
    have edited in the MLflow UI: a value that does not parse becomes null, not an error."""
    champion = state.aliases.get(registry.CHAMPION)
    challenger = state.aliases.get(registry.CHALLENGER)
    rows = []
    for version in state.versions:
        number, tags = str(version.version), version.tags or {}
        metrics = state.run_metrics.get(version.run_id or "", {})
        rows.append(
            (
                registry.MODEL_NAME,
                number,
                datetime.fromtimestamp(version.creation_timestamp / 1000, tz=UTC),
                number == champion,
                number == challenger,
                _timestamp(tags.get("promoted_at")),
                tags.get("promoted_by"),
                tags.get("promotion_reason"),
                tags.get("gate_decision"),
                tags.get("data_snapshots"),
                _integer(tags.get("training_rows")),
                *(_number(metrics.get(name)) for name in RUN_METRICS),
                synced_at,
            )
        )
    return rows


def _timestamp(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _integer(value: str | None) -> int | None:
    try:
        return int(value) if value else None
    except ValueError:
        return None


def _number(value: float | None) -> float | None:
    return None if value is None else float(value)


def replace_model_versions(
    conn: psycopg.Connection, model_name: str, rows: list[tuple[object, ...]]
) -> None:
    """Delete ``model_name``'s rows and insert ``rows`` (inside the caller's transaction)."""
    table = table_name(MODEL_VERSIONS)
    conn.execute(sql.SQL("delete from {} where model_name = %s").format(table), (model_name,))
    if not rows:
        return
    insert = sql.SQL("insert into {table} ({columns}) values ({values})").format(
        table=table,
        columns=sql.SQL(", ").join(map(sql.Identifier, MODEL_VERSION_COLUMNS)),
        values=sql.SQL(", ").join(sql.Placeholder() * len(MODEL_VERSION_COLUMNS)),
    )
    with conn.cursor() as cursor:
        cursor.executemany(insert, rows)


def read_model_versions(url: str) -> list[dict[str, object]]:
    """The table's rows, newest registration first (for tests and the command line)."""
    columns = sql.SQL(", ").join(map(sql.Identifier, MODEL_VERSION_COLUMNS))
    query = sql.SQL("select {} from {} order by model_name, registered_at desc").format(
        columns, table_name(MODEL_VERSIONS)
    )
    with connect(url) as conn:
        return [dict(zip(MODEL_VERSION_COLUMNS, row, strict=True)) for row in conn.execute(query)]
