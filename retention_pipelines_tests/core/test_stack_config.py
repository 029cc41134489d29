"""What ``make stack`` runs and the config it writes, without starting it: the compose
topology's services with the same commands, Prometheus' config that real Prometheus accepts
with the project's rules, a workspace that points at the code server, and the checks that
read each service's health from its answers."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.main import get_command

from retention_pipelines.cli import app
from retention_pipelines.settings import PROJECT_ROOT, RetentionSettings
from retention_pipelines.stack import health
from retention_pipelines.stack.control import DatabaseInfo, RunningService, StackState
from retention_pipelines.stack.health import Level
from retention_pipelines.stack.services import (
    COMPOSE_PROMETHEUS_DIR,
    HealthCheck,
    PrometheusConfigError,
    StackFiles,
    StackPorts,
    local_prometheus_config,
    stack_services,
    workspace_config,
    write_configs,
)

COMPOSE = yaml.safe_load((PROJECT_ROOT / "docker" / "compose.yaml").read_text(encoding="utf-8"))
# Compose services the stack does not run as processes: Postgres is prepared by `stack up`
# itself (the configured server or the embedded one), and Grafana has no local binary here.
NOT_PROCESSES = {"postgres", "grafana"}
PORTS = StackPorts(
    dagster=13000, dagster_readonly=13001, dagster_grpc=14000, mlflow=15000, api=18000,
    dashboard=18501, exporter=19464, prometheus=19090,
)  # fmt: skip


def _settings(tmp_path: Path, **changes: Any) -> RetentionSettings:
    fields = {
        "home_dir": tmp_path / "home", "dagster_port": PORTS.dagster,
        "dagster_readonly_port": PORTS.dagster_readonly, "dagster_grpc_port": PORTS.dagster_grpc,
        "mlflow_port": PORTS.mlflow, "api_port": PORTS.api, "dashboard_port": PORTS.dashboard,
        "exporter_port": PORTS.exporter, "prometheus_port": PORTS.prometheus,
    }  # fmt: skip
    return RetentionSettings(**{**fields, **changes})


def _compose_prometheus() -> dict[str, Any]:
    return yaml.safe_load((COMPOSE_PROMETHEUS_DIR / "prometheus.yml").read_text(encoding="utf-8"))


def test_the_stack_runs_every_compose_service_but_postgres_and_grafana_by_the_same_name(
    tmp_path: Path,
) -> None:
    names = [service.name for service in stack_services(_settings(tmp_path), StackFiles(tmp_path))]
    assert sorted(names) == sorted(set(COMPOSE["services"]) - NOT_PROCESSES)
    assert len(names) == len(set(names))


def _words(command: list[str]) -> list[str]:
    """A command's program (its file name) and the subcommands before its first option."""
    words = [Path(command[0]).name]
    for word in command[1:]:
        if word.startswith("-"):
            break
        words.append(word)
    return words


def test_each_service_runs_the_command_compose_runs_with_the_same_options(
    tmp_path: Path,
) -> None:
    """Host, port and file paths are the machine's; the rest is compose's."""
    for service in stack_services(_settings(tmp_path), StackFiles(tmp_path)):
        compose = COMPOSE["services"][service.name]["command"]
        command = list(service.command)
        if service.name == "mlflow":  # the shell that puts the store into its environment
            command = command[command.index("-c") + 3 :]
        elif service.name == "prometheus":
            compose = ["prometheus", *compose]
        assert _words(command) == _words(compose), service.name
        for option in ("--workers", "--read-only"):
            assert (option in command) == (option in compose), (service.name, option)
        if "--workers" in compose and service.name != "mlflow":  # 1 MLflow worker on 2 cores
            count = compose[compose.index("--workers") + 1]
            assert command[command.index("--workers") + 1] == count, service.name


def test_every_command_of_the_stack_exists_here(tmp_path: Path) -> None:
    retention = get_command(app)
    for service in stack_services(_settings(tmp_path), StackFiles(tmp_path)):
        programs = [service.command[0]]
        if service.name == "mlflow":  # /bin/sh -c SCRIPT retention mlflow server ...
            programs += service.command[3:5]
        for program in programs:
            assert Path(program).is_file(), (service.name, program)
        if _words(list(service.command))[0] == "retention":
            subcommand = _words(list(service.command))[1]
            assert subcommand in retention.commands, service.name  # type: ignore[attr-defined]
    tracking_uri = retention.commands["model"].commands["tracking-uri"]  # type: ignore[attr-defined]
    assert any(option.opts == ["--show-password"] for option in tracking_uri.params)


def test_ports_and_urls_come_from_the_settings(tmp_path: Path) -> None:
    services = {
        service.name: service
        for service in stack_services(_settings(tmp_path), StackFiles(tmp_path))
    }
    assert services["webserver"].url == "http://127.0.0.1:13000"
    assert services["webserver-readonly"].url == "http://127.0.0.1:13001"
    assert services["api"].health == HealthCheck("api", "http://127.0.0.1:18000")
    assert services["prometheus"].health.target == "http://127.0.0.1:19090/-/ready"
    assert "14000" in services["user-code"].command
    for name in ("webserver", "webserver-readonly", "daemon"):
        assert services[name].depends_on == ("user-code",)
    ports = {service.port for service in services.values() if service.port is not None}
    assert ports == set(PORTS.by_compose_port().values())


def test_the_workspace_points_the_webservers_and_daemon_at_the_code_server() -> None:
    assert workspace_config(PORTS) == {
        "load_from": [
            {
                "grpc_server": {
                    "host": "127.0.0.1",
                    "port": 14000,
                    "location_name": "retention_pipelines",
                }
            }
        ]
    }


def test_prometheus_scrapes_the_local_ports_with_the_projects_rules(tmp_path: Path) -> None:
    config = local_prometheus_config(
        _compose_prometheus(), PORTS, rules_dir=COMPOSE_PROMETHEUS_DIR, interval_s=2
    )
    targets = {
        job["job_name"]: [
            target for static in job["static_configs"] for target in static["targets"]
        ]
        for job in config["scrape_configs"]
    }
    assert targets == {
        "retention-api": ["127.0.0.1:18000"],
        "retention-exporter": ["127.0.0.1:19464"],
    }
    assert config["rule_files"] == [str((COMPOSE_PROMETHEUS_DIR / "alerts.yml").resolve())]
    assert config["global"]["scrape_interval"] == config["global"]["evaluation_interval"] == "2s"
    assert "alerting" not in config


def test_the_written_prometheus_config_passes_promtool_with_every_rule(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is missing: .ci/run installs Debian's prometheus package")
        pytest.skip("promtool is not installed here (apt-get install prometheus)")
    files = StackFiles(tmp_path / "stack")
    write_configs(_settings(tmp_path, stack_scrape_interval_s=1), files)
    checked = subprocess.run(
        [promtool, "check", "config", str(files.prometheus_config)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr
    rules = yaml.safe_load((COMPOSE_PROMETHEUS_DIR / "alerts.yml").read_text(encoding="utf-8"))
    count = sum(len(group["rules"]) for group in rules["groups"])
    assert f"SUCCESS: {count} rules found" in checked.stdout + checked.stderr
    assert yaml.safe_load(files.workspace.read_text())["load_from"][0]["grpc_server"]["port"] == (
        PORTS.dagster_grpc
    )


def test_a_compose_target_the_stack_does_not_run_is_refused_by_name() -> None:
    compose = _compose_prometheus()
    compose["scrape_configs"].append(
        {"job_name": "grafana", "static_configs": [{"targets": ["grafana:3300"]}]}
    )
    with pytest.raises(PrometheusConfigError, match=r"grafana: target 'grafana:3300'"):
        local_prometheus_config(compose, PORTS, rules_dir=COMPOSE_PROMETHEUS_DIR, interval_s=2)
    discovered = {"job_name": "k8s", "kubernetes_sd_configs": [{"role": "pod"}]}
    with pytest.raises(PrometheusConfigError, match="kubernetes_sd_configs"):
        local_prometheus_config(
            {"scrape_configs": [discovered]}, PORTS, rules_dir=COMPOSE_PROMETHEUS_DIR, interval_s=2
        )


def test_the_state_file_round_trips_without_secrets() -> None:
    state = StackState(
        database=DatabaseInfo("server", "postgresql://app:***@db/retention", "dagster"),
        services={
            "api": RunningService(
                name="api", pid=42, started="1234", host="here", started_at=1.5,
                url="http://127.0.0.1:8000", health=HealthCheck("api", "http://127.0.0.1:8000"),
                log="logs/api.log",
            )
        },
    )  # fmt: skip
    assert StackState.from_json(state.to_json()) == state
    assert "***" in state.to_json()


def test_the_daemon_is_ready_once_it_has_beaten_since_it_started_and_lately() -> None:
    now = time.time()
    started = now - 30
    assert health._heartbeats({}, started).level == Level.STARTING
    old_run = {"SCHEDULER": started - 3600}
    assert health._heartbeats(old_run, started).level == Level.STARTING
    beating = {"SCHEDULER": now - 2, "SENSOR": now - 1, "BACKFILL": started - 3600}
    assert health._heartbeats(beating, started) == health.Health(Level.READY, "2 daemons beating")
    stalled = {"SCHEDULER": now - 200}
    assert health._heartbeats(stalled, now - 300).level == Level.DOWN


def test_a_webserver_is_ready_when_its_code_location_loaded_and_degraded_when_it_failed() -> None:
    loaded = {"name": "retention_pipelines", "loadStatus": "LOADED",
              "locationOrLoadError": {"__typename": "RepositoryLocation"}}  # fmt: skip
    assert health._locations([loaded]).level == Level.READY
    loading = {**loaded, "loadStatus": "LOADING"}
    assert health._locations([loading]).level == Level.STARTING
    error = {"__typename": "PythonError", "message": "ImportError: no xgboost\nTraceback"}
    failed = {**loaded, "locationOrLoadError": error}
    assert health._locations([failed]) == health.Health(
        Level.DEGRADED, "code location retention_pipelines: ImportError: no xgboost"
    )
    assert health._locations([]).level == Level.DEGRADED
