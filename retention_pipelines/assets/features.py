"""The dbt models as Dagster assets, in two sets: the feature tables (``stg_customers``,
``customer_features``) and the analytics views business users read (``customer_risk_latest``,
``risk_band_summary``), which also wait for the nightly scores.

Each partition run builds its snapshot date only: the date goes to dbt as the var
``snapshot_date`` and ``customer_features`` is incremental (delete+insert on that date).
dbt tests appear as asset checks.
"""

import json
import subprocess
from collections.abc import Iterator, Mapping
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DbtCliResource, DbtProject, dbt_assets

from retention_pipelines.assets.partitions import daily_partitions, one_partition_per_run
from retention_pipelines.resources import WarehouseResource, dbt_executable
from retention_pipelines.settings import get_settings

retention_dbt_project = DbtProject(project_dir=get_settings().dbt_project_dir)


def ensure_manifest(project: DbtProject) -> None:
    """Parse the dbt project when no manifest exists yet, so nobody has to run ``dbt parse``.

    Under ``dagster dev`` the manifest is rebuilt on every load to pick up model edits.
    """
    if project.manifest_path.exists():
        project.prepare_if_dev()
        return
    subprocess.run(  # noqa: S603  # our own dbt, our own project
        [
            dbt_executable(),
            "parse",
            "--quiet",
            "--project-dir",
            str(project.project_dir),
            "--profiles-dir",
            str(project.profiles_dir),
        ],
        check=True,
    )


ensure_manifest(retention_dbt_project)


class RetentionDbtTranslator(DagsterDbtTranslator):
    """Names dbt models as DESIGN.md does (``customer_features``), grouped by their folder."""

    def get_asset_key(self, dbt_resource_props: Mapping[str, Any]) -> dg.AssetKey:
        if dbt_resource_props["resource_type"] == "source":
            return super().get_asset_key(dbt_resource_props)
        return dg.AssetKey(dbt_resource_props["name"])

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        fqn = dbt_resource_props.get("fqn", [])
        return fqn[1] if len(fqn) > 2 else "features"


def dbt_build_args(partition_key: str) -> list[str]:
    """``dbt build`` for one snapshot date: models and their tests, that day only."""
    return ["build", "--vars", json.dumps({"snapshot_date": partition_key})]


ANALYTICS_MODELS = "path:models/analytics"
# Both model sets: one run per date, the date's partition built and tested.
_DBT_ASSETS = {
    "manifest": retention_dbt_project.manifest_path,
    "project": retention_dbt_project,
    "partitions_def": daily_partitions,
    "backfill_policy": one_partition_per_run,
    "dagster_dbt_translator": RetentionDbtTranslator(),
}


def _build_partition(
    context: dg.AssetExecutionContext, dbt: DbtCliResource, warehouse: WarehouseResource
) -> Iterator[Any]:
    with warehouse.dbt_environment():
        yield from dbt.cli(dbt_build_args(context.partition_key), context=context).stream()


@dbt_assets(exclude=ANALYTICS_MODELS, **_DBT_ASSETS)
def retention_dbt_models(
    context: dg.AssetExecutionContext, dbt: DbtCliResource, warehouse: WarehouseResource
) -> Iterator[Any]:
    """Staging and feature tables for the partition's snapshot date, built and tested by dbt."""
    yield from _build_partition(context, dbt, warehouse)


@dbt_assets(select=ANALYTICS_MODELS, **_DBT_ASSETS)
def retention_dbt_analytics(
    context: dg.AssetExecutionContext, dbt: DbtCliResource, warehouse: WarehouseResource
) -> Iterator[Any]:
    """The analytics views over the scores, built, granted to the reader role and tested."""
    yield from _build_partition(context, dbt, warehouse)
