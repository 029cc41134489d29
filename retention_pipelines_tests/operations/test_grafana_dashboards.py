"""The Grafana dashboards and their provisioning: every panel reads the provisioned
Prometheus, every expression (panels and alert rules) parses in a real Prometheus server,
every metric they read is one the platform exports, and each dashboard shows what its
readers look for."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from retention_pipelines_tests.operations.promql import (
    DASHBOARDS_DIR,
    PROJECT_ROOT,
    dashboard_files,
    exported_metric_names,
    instant_query,
    metric_names,
    panel_expressions,
    panels,
    rule_expressions,
    running_prometheus,
)

PROVISIONING = PROJECT_ROOT / "docker" / "grafana" / "provisioning"
GRID_COLUMNS = 24


def _dashboard(name: str) -> dict[str, Any]:
    return json.loads((DASHBOARDS_DIR / name).read_text(encoding="utf-8"))


def _datasource() -> dict[str, Any]:
    (path,) = (PROVISIONING / "datasources").glob("*.yml")
    (datasource,) = yaml.safe_load(path.read_text(encoding="utf-8"))["datasources"]
    return datasource


def _exprs(name: str) -> str:
    """Every expression of a dashboard, one a line."""
    return "\n".join(
        target["expr"] for panel in panels(_dashboard(name)) for target in panel.get("targets", [])
    )


def test_the_provisioned_datasource_is_the_stacks_prometheus_under_a_fixed_uid() -> None:
    datasource = _datasource()
    assert datasource["type"] == "prometheus"
    assert datasource["uid"] == "prometheus"
    assert datasource["url"] == "http://prometheus:9090"
    assert datasource["isDefault"] is True


def test_the_dashboards_are_provisioned_from_the_folder_they_are_mounted_in() -> None:
    (path,) = (PROVISIONING / "dashboards").glob("*.yml")
    (provider,) = yaml.safe_load(path.read_text(encoding="utf-8"))["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
    assert [path.name for path in dashboard_files()] == ["api.json", "pipeline.json"]


def test_every_panel_reads_the_provisioned_prometheus_and_fits_the_grid() -> None:
    uid = _datasource()["uid"]
    uids = set()
    for path in dashboard_files():
        dashboard = json.loads(path.read_text(encoding="utf-8"))
        uids.add(dashboard["uid"])
        ids = [panel["id"] for panel in panels(dashboard)]
        assert len(ids) == len(set(ids)), f"{path.name}: panel ids repeat"
        for panel in panels(dashboard):
            where = f"{path.name}: {panel['title']}"
            grid = panel["gridPos"]
            assert grid["x"] + grid["w"] <= GRID_COLUMNS, where
            if panel["type"] == "row":
                continue
            assert panel["datasource"] == {"type": "prometheus", "uid": uid}, where
            assert panel.get("description"), f"{where}: no description"
            references = [target["refId"] for target in panel["targets"]]
            assert references and len(references) == len(set(references)), where
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == uid, where
                assert target["expr"].strip(), where
    assert len(uids) == len(dashboard_files())


def test_every_metric_a_panel_reads_is_one_the_platform_exports() -> None:
    exported = exported_metric_names()
    unknown = {
        expression.where: sorted(metric_names(expression.expr) - exported)
        for expression in panel_expressions()
        if metric_names(expression.expr) - exported
    }
    assert unknown == {}


def test_the_api_dashboard_shows_rate_latency_errors_model_version_and_the_ab_split() -> None:
    exprs = _exprs("api.json")
    assert "rate(retention_api_requests_total" in exprs
    assert "histogram_quantile(0.5," in exprs and "histogram_quantile(0.99," in exprs
    assert 'sum by (status) (rate(retention_api_requests_total{status=~"[45].."}' in exprs
    assert "retention_api_model_info" in exprs
    assert "sum by (variant) (rate(retention_api_predictions_total" in exprs


def test_the_pipeline_dashboard_shows_the_night_its_figures_the_crm_and_the_purge() -> None:
    read = metric_names(_exprs("pipeline.json"))
    assert {
        "retention_platform_crm_tasks",
        "retention_platform_crm_oldest_pending_seconds",
        "retention_platform_purge_hours_without_success",
        "retention_platform_scored_rows",
        "retention_platform_ingested_rows",
        "retention_platform_reject_share",
        "retention_platform_drift_share",
        "retention_platform_realised_roc_auc",
        "retention_platform_champion_test_roc_auc",
        "retention_platform_nightly_hours_since_success",
        "retention_platform_champion_info",
    } <= read


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_prometheus(Path(tmp_path_factory.mktemp("prometheus"))) as url:
        yield url


def test_every_panel_and_rule_expression_parses_in_a_real_prometheus(prometheus: str) -> None:
    assert instant_query(prometheus, "sum(")["status"] == "error"  # the check can fail
    refused = {}
    for expression in [*panel_expressions(), *rule_expressions()]:
        answer = instant_query(prometheus, expression.expr)
        if answer["status"] != "success":
            refused[expression.where] = answer.get("error")
    assert refused == {}
