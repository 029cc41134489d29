"""The dbt models (``stg_customers``, ``customer_features``) as Dagster assets.

Each partition run builds its snapshot date only: the date goes to dbt as the var
``snapshot_date`` and ``customer_features`` is incremental (delete+insert on that date).
dbt tests appear as asset checks.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DbtCliResource, DbtProject, dbt_assets

from retention_pipelines.assets.partitions import daily_partitions
from retention_pipelines.resources import WarehouseResource
from retention_pipelines.settings import get_settings

retention_dbt_project = DbtProject(project_dir=get_settings().dbt_project_dir)


def ensure_manifest(project: DbtProject) -> None:
    """Parse the dbt project when no manifest exists yet, so nobody has to run ``dbt parse``.

    Under ``dagster dev`` the manifest is rebuilt on every load to pick up model edits.
    """
    if not project.manifest_path.exists():
        project.preparer.prepare(project)
    else:
        project.prepare_if_dev()


ensure_manifest(retention_dbt_project)


class RetentionDbtTranslator(DagsterDbtTranslator):
    """Groups dbt models by their folder: ``staging`` and ``features``."""

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        fqn = dbt_resource_props.get("fqn", [])
        return fqn[1] if len(fqn) > 2 else "features"  # noqa: PLR2004


def dbt_build_args(partition_key: str) -> list[str]:
    """``dbt build`` for one snapshot date: models and their tests, that day only."""
    return ["build", "--vars", json.dumps({"snapshot_date": partition_key})]


@dbt_assets(
    manifest=retention_dbt_project.manifest_path,
    project=retention_dbt_project,
    partitions_def=daily_partitions,
    dagster_dbt_translator=RetentionDbtTranslator(),
)
def retention_dbt_models(
    context: dg.AssetExecutionContext, dbt: DbtCliResource, warehouse: WarehouseResource
) -> Iterator[Any]:
    """Staging and feature tables for the partition's snapshot date, built and tested by dbt."""
    with warehouse.dbt_environment():
        yield from dbt.cli(dbt_build_args(context.partition_key), context=context).stream()
