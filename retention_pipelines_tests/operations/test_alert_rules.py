"""The alert rules and the scrape config, checked by Prometheus' own tool: every rule's unit
tests pass, every rule has a test that fires it and one where it stays quiet, the tests catch
a broken rule, and every metric a rule reads is one the platform exports."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from retention_pipelines_tests.helpers import debian_program
from retention_pipelines_tests.operations.promql import (
    ALERT_RULES,
    PROMETHEUS_DIR,
    exported_metric_names,
    metric_names,
    rule_expressions,
)

RULE_TESTS = sorted((PROMETHEUS_DIR / "tests").glob("*.yml"))


@pytest.fixture(scope="module")
def promtool() -> str:
    return debian_program("promtool", "prometheus")


def _promtool(promtool: str, *arguments: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool, *map(str, arguments)], capture_output=True, text=True, timeout=120, check=False
    )


def _rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(ALERT_RULES.read_text(encoding="utf-8"))
    return [rule for group in document["groups"] for rule in group["rules"]]


def test_the_rules_unit_tests_pass(promtool: str) -> None:
    assert RULE_TESTS, "no promtool unit tests in docker/prometheus/tests"
    completed = _promtool(promtool, "test", "rules", *RULE_TESTS)
    assert completed.returncode == 0, completed.stdout + completed.stderr


def test_the_rules_and_the_scrape_config_pass_promtools_checks(promtool: str) -> None:
    rules = _promtool(promtool, "check", "rules", ALERT_RULES)
    assert rules.returncode == 0, rules.stdout + rules.stderr
    config = _promtool(promtool, "check", "config", PROMETHEUS_DIR / "prometheus.yml")
    assert config.returncode == 0, config.stdout + config.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in config.stdout + config.stderr


def test_the_scrape_config_scrapes_the_api_and_the_exporter_the_rules_name() -> None:
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text(encoding="utf-8"))
    targets = {
        job["job_name"]: [
            target for static in job["static_configs"] for target in static["targets"]
        ]
        for job in config["scrape_configs"]
    }
    assert targets == {"retention-api": ["api:8000"], "retention-exporter": ["exporter:9464"]}
    assert config["rule_files"] == ["alerts.yml"]
    named = {job for rule in _rules() for job in re.findall(r'job="([^"]+)"', rule["expr"])}
    assert named and named <= set(targets)


def test_every_rule_has_a_unit_test_that_fires_it_and_one_where_it_stays_quiet() -> None:
    fired: set[str] = set()
    quiet: set[str] = set()
    for path in RULE_TESTS:
        for test in yaml.safe_load(path.read_text(encoding="utf-8"))["tests"]:
            for case in test.get("alert_rule_test", []):
                (fired if case.get("exp_alerts") else quiet).add(case["alertname"])
    alerts = {rule["alert"] for rule in _rules()}
    assert alerts - fired == set(), "rules no test shows firing"
    assert alerts - quiet == set(), "rules no test shows quiet"
    assert (fired | quiet) - alerts == set(), "tests of rules that do not exist"


def test_the_unit_tests_catch_a_rule_that_is_off_by_its_boundary(
    promtool: str, tmp_path: Path
) -> None:
    """The ingestion check fails at the reject share itself: a rule firing only above it is
    caught."""
    broken = ALERT_RULES.read_text(encoding="utf-8").replace(
        "retention_platform_reject_share >= retention_platform_reject_share_threshold",
        "retention_platform_reject_share > retention_platform_reject_share_threshold",
    )
    assert broken != ALERT_RULES.read_text(encoding="utf-8")
    (tmp_path / "alerts.yml").write_text(broken, encoding="utf-8")
    (tmp_path / "tests").mkdir()
    for path in RULE_TESTS:
        shutil.copy(path, tmp_path / "tests" / path.name)
    completed = _promtool(promtool, "test", "rules", *sorted((tmp_path / "tests").glob("*.yml")))
    assert completed.returncode != 0
    assert "alertname: RetentionRejectShareHigh" in completed.stdout + completed.stderr


def test_every_metric_a_rule_reads_is_one_the_platform_exports() -> None:
    exported = exported_metric_names()
    unknown = {
        expression.where: sorted(metric_names(expression.expr) - exported)
        for expression in rule_expressions()
        if metric_names(expression.expr) - exported
    }
    assert unknown == {}


def test_the_thresholds_the_rules_compare_against_are_the_exporters_settings() -> None:
    """No threshold of the platform's own is repeated in a rule: the reject share, the AUC
    tolerance and the nightly deadline come from the exporter, which reads the settings."""
    expressions = {rule["alert"]: rule["expr"] for rule in _rules()}
    assert "retention_platform_reject_share_threshold" in expressions["RetentionRejectShareHigh"]
    assert (
        "retention_platform_realised_roc_auc_drop_tolerance"
        in expressions["RetentionRealisedAucDrop"]
    )
    assert (
        "retention_platform_nightly_due_date_timestamp_seconds"
        in expressions["RetentionNightlyScoringLate"]
    )
