"""What the local stack runs: each service's command, port, health check and what it waits
for, and the config files written for one machine.

The workspace points the webservers and the daemon at the code server over gRPC, as in
compose, instead of each of them loading the code location itself. Prometheus' config is the
compose one (``docker/prometheus/prometheus.yml``) with each scrape target, a compose service
name and the port agreed for it (``api:8000``), rewritten to the loopback address and the port
this machine's settings give that service, the rule files read from ``docker/prometheus/`` by
absolute path, and the scrape and evaluation intervals of ``RETENTION_STACK_SCRAPE_INTERVAL_S``:
the stack runs the project's own rules, not a copy.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import yaml

from retention_pipelines.core.processes import executable
from retention_pipelines.settings import PROJECT_ROOT, RetentionSettings

LOOPBACK: Final = "127.0.0.1"
CODE_LOCATION: Final = "retention_pipelines"
DEFINITIONS_MODULE: Final = "retention_pipelines.definitions"
COMPOSE_PROMETHEUS_DIR: Final = PROJECT_ROOT / "docker" / "prometheus"
# Prometheus of Debian's package (`apt-get install prometheus`), else whatever PATH finds.
PROMETHEUS: Final = "/usr/bin/prometheus"
CODE_SERVER_SHUTDOWN_GRACE_S: Final = 5
CODE_LOCATION_FAILED: Final = (
    "the code location did not load: its error is in logs/user-code.log; fix it and restart "
    "the code server (`make stack-stop`, `make stack`)"
)


@dataclass(frozen=True)
class StackPorts:
    """The port of each service, from the settings (the agreed ports by default)."""

    dagster: int
    dagster_readonly: int
    dagster_grpc: int
    mlflow: int
    api: int
    dashboard: int
    exporter: int
    prometheus: int

    @classmethod
    def from_settings(cls, settings: RetentionSettings) -> StackPorts:
        return cls(
            dagster=settings.dagster_port,
            dagster_readonly=settings.dagster_readonly_port,
            dagster_grpc=settings.dagster_grpc_port,
            mlflow=settings.mlflow_port,
            api=settings.api_port,
            dashboard=settings.dashboard_port,
            exporter=settings.exporter_port,
            prometheus=settings.prometheus_port,
        )

    def by_compose_port(self) -> dict[int, int]:
        """This machine's port of each service, by the port compose gives it (the agreed
        ports): how a compose scrape target such as ``api:8000`` finds its local service."""
        return {
            3000: self.dagster,
            3001: self.dagster_readonly,
            4000: self.dagster_grpc,
            5000: self.mlflow,
            8000: self.api,
            8501: self.dashboard,
            9464: self.exporter,
            9090: self.prometheus,
        }


@dataclass(frozen=True)
class HealthCheck:
    """How to ask a service whether it serves: ``kind`` names the question (see
    :mod:`.health`), ``target`` where to ask it (a URL, or ``host:port`` for gRPC)."""

    kind: str
    target: str = ""


@dataclass(frozen=True)
class StackService:
    """A process of the stack, and what says it serves."""

    name: str
    command: Sequence[str]
    health: HealthCheck
    # What a person opens ("" where there is nothing to open, as for the daemon).
    url: str
    # The port it listens on (None: none), which must be free before it starts.
    port: int | None = None
    # Services that must be healthy before this one starts (compose's health-gated depends_on).
    depends_on: tuple[str, ...] = ()
    cwd: Path | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    what: str = ""
    # What to do when it serves degraded (see .health).
    when_degraded: str = ""


@dataclass(frozen=True)
class StackFiles:
    """Where the stack keeps its files (all under ``settings.stack_dir``)."""

    root: Path

    @property
    def state(self) -> Path:
        return self.root / "state.json"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def workspace(self) -> Path:
        return self.root / "workspace.yaml"

    @property
    def prometheus_config(self) -> Path:
        return self.root / "prometheus.yml"

    @property
    def prometheus_data(self) -> Path:
        return self.root / "prometheus-data"

    def log(self, service: str) -> Path:
        return self.logs / f"{service}.log"


def shown_host(host: str) -> str:
    """The address a person opens for a server bound to ``host`` (any address: loopback)."""
    return LOOPBACK if host in ("0.0.0.0", "", "::") else host  # noqa: S104


def stack_services(settings: RetentionSettings, files: StackFiles) -> list[StackService]:
    """Every process of the stack, in the order they are started and listed."""
    ports = StackPorts.from_settings(settings)
    return [*_dagster_services(settings, ports, files), *_platform_services(settings, ports, files)]


def _dagster_services(
    settings: RetentionSettings, ports: StackPorts, files: StackFiles
) -> list[StackService]:
    """The code server, and the webservers and daemon that load the workspace from it. They
    run in the Dagster home, not the project folder: Dagster's commands load ./.env over the
    environment, and a .env there may name another DAGSTER_HOME."""
    home = settings.dagster_home
    webserver = [executable("dagster-webserver"), "-w", str(files.workspace), "-h", LOOPBACK]
    dagster, readonly = (
        f"http://{LOOPBACK}:{ports.dagster}",
        f"http://{LOOPBACK}:{ports.dagster_readonly}",
    )
    grpc = f"{LOOPBACK}:{ports.dagster_grpc}"
    code = ("user-code",)
    return [
        StackService(
            name="user-code",
            command=code_server_command(ports),
            health=HealthCheck("grpc", grpc),
            url=f"grpc://{grpc}",
            port=ports.dagster_grpc,
            cwd=home,
            # Calls in flight (a sensor's evaluation) get this long once it is asked to stop:
            # Dagster's default of 60 s would outlast the stack's stop.
            env={"DAGSTER_GRPC_SHUTDOWN_GRACE_PERIOD": str(CODE_SERVER_SHUTDOWN_GRACE_S)},
            what="the code location over gRPC, for the webservers, the daemon and runs",
        ),
        StackService(
            name="webserver",
            command=[*webserver, "-p", str(ports.dagster)],
            health=HealthCheck("dagster-webserver", dagster),
            url=dagster,
            port=ports.dagster,
            depends_on=code,
            cwd=home,
            what="the Dagster UI: assets, runs, schedules, sensors",
            when_degraded=CODE_LOCATION_FAILED,
        ),
        StackService(
            name="webserver-readonly",
            command=[*webserver, "-p", str(ports.dagster_readonly), "--read-only"],
            health=HealthCheck("dagster-webserver", readonly),
            url=readonly,
            port=ports.dagster_readonly,
            depends_on=code,
            cwd=home,
            what="the Dagster UI for people who look, with nothing to launch or change",
            when_degraded=CODE_LOCATION_FAILED,
        ),
        StackService(
            name="daemon",
            command=[executable("dagster-daemon"), "run", "-w", str(files.workspace)],
            health=HealthCheck("dagster-daemon"),
            url="",
            depends_on=code,
            cwd=home,
            what="schedules, sensors, the run queue and run monitoring",
        ),
    ]


def _platform_services(
    settings: RetentionSettings, ports: StackPorts, files: StackFiles
) -> list[StackService]:
    retention = executable("retention")
    api = f"http://{shown_host(settings.api_host)}:{ports.api}"
    dashboard = f"http://{shown_host(settings.dashboard_host)}:{ports.dashboard}"
    exporter = f"http://{shown_host(settings.exporter_host)}:{ports.exporter}"
    mlflow = f"http://{LOOPBACK}:{ports.mlflow}"
    prometheus = f"http://{LOOPBACK}:{ports.prometheus}"
    return [
        StackService(
            name="mlflow",
            command=mlflow_command(settings, ports),
            health=HealthCheck("http", f"{mlflow}/health"),
            url=mlflow,
            port=ports.mlflow,
            cwd=files.root,
            # MLflow's server-side jobs (GenAI evaluation, trace archival: a job runner and
            # seven consumer processes) serve nothing the platform's registry uses.
            env={"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
            what="MLflow's UI over the registry: churn-model versions, their runs and artefacts",
        ),
        StackService(
            name="api",
            command=[retention, "serve", "--port", str(ports.api), "--workers", "2"],
            health=HealthCheck("api", api),
            url=api,
            port=ports.api,
            cwd=files.root,
            what="the prediction API (docs at /docs, metrics at /metrics)",
            when_degraded=(
                "the API answers /v1/predict once a champion exists: `retention train` (or "
                "`make demo`) trains one, and the API loads it within "
                f"{settings.api_model_poll_s:g} s (RETENTION_API_MODEL_POLL_S)"
            ),
        ),
        StackService(
            name="dashboard",
            command=[retention, "dashboard", "--port", str(ports.dashboard)],
            health=HealthCheck("http", f"{dashboard}/_stcore/health"),
            url=dashboard,
            port=ports.dashboard,
            cwd=files.root,
            what="the retention team's dashboard: the call list first",
        ),
        StackService(
            name="exporter",
            command=[retention, "exporter", "--port", str(ports.exporter)],
            health=HealthCheck("http", f"{exporter}/metrics"),
            url=f"{exporter}/metrics",
            port=ports.exporter,
            cwd=files.root,
            what="the platform's own health as Prometheus metrics",
        ),
        StackService(
            name="prometheus",
            command=prometheus_command(files, ports),
            health=HealthCheck("http", f"{prometheus}/-/ready"),
            url=prometheus,
            port=ports.prometheus,
            cwd=files.root,
            what="scrapes the API and the exporter, evaluates the alert rules (Alerts tab)",
        ),
    ]


def code_server_command(ports: StackPorts) -> list[str]:
    """``dagster api grpc`` serving the code location on the loopback address."""
    grpc = ["-h", LOOPBACK, "-p", str(ports.dagster_grpc)]
    return [executable("dagster"), "api", "grpc", "-m", DEFINITIONS_MODULE, *grpc]


def mlflow_command(settings: RetentionSettings, ports: StackPorts) -> list[str]:
    """``mlflow server`` on the platform's registry store, as ``make mlflow`` finds it: the
    store's URI (with its password) comes from ``retention model tracking-uri`` through the
    environment, never the process list; the shell then becomes the server. Artefacts are
    read where the platform writes them."""
    script = (
        'store="$("$0" model tracking-uri --show-password)" || exit 1; '
        'MLFLOW_BACKEND_STORE_URI="$store" exec "$@"'
    )
    artifacts = settings.resolved_mlflow_artifact_root.resolve().as_uri()
    return [
        "/bin/sh", "-c", script, executable("retention"),
        executable("mlflow"), "server", "--host", LOOPBACK, "--port", str(ports.mlflow),
        "--workers", "1", "--default-artifact-root", artifacts, "--no-serve-artifacts",
    ]  # fmt: skip


def prometheus_command(files: StackFiles, ports: StackPorts) -> list[str]:
    binary = PROMETHEUS if Path(PROMETHEUS).exists() else executable("prometheus")
    return [
        binary,
        f"--config.file={files.prometheus_config}",
        f"--storage.tsdb.path={files.prometheus_data}",
        f"--web.listen-address={LOOPBACK}:{ports.prometheus}",
    ]


def service_environment(settings: RetentionSettings) -> dict[str, str]:
    """The environment every service starts with: this one, the local Dagster home, and the
    MLflow UI's address (which Dagster links runs to) at the stack's MLflow unless set."""
    environment = {
        **os.environ,
        "DAGSTER_HOME": str(settings.dagster_home.resolve()),
        "PYTHONUNBUFFERED": "1",  # each log line in the log as it is written
    }
    environment.setdefault("RETENTION_MLFLOW_UI_URL", f"http://{LOOPBACK}:{settings.mlflow_port}")
    return environment


# --- generated config ---------------------------------------------------------------------


def workspace_config(ports: StackPorts) -> dict[str, Any]:
    """The workspace of the webservers and the daemon: the code server, over gRPC."""
    grpc = {"host": LOOPBACK, "port": ports.dagster_grpc, "location_name": CODE_LOCATION}
    return {"load_from": [{"grpc_server": grpc}]}


class PrometheusConfigError(ValueError):
    """The compose scrape config names something the local stack cannot map."""


def local_prometheus_config(
    compose: Mapping[str, Any],
    ports: StackPorts,
    *,
    rules_dir: Path,
    interval_s: float,
) -> dict[str, Any]:
    """The compose Prometheus config for this machine (see the module's docstring).

    An alerting section goes: there is no Alertmanager on one machine, and the rules' state
    is on Prometheus' Alerts page."""
    config = copy.deepcopy(dict(compose))
    interval = f"{interval_s:g}s"
    config["global"] = {
        **(config.get("global") or {}),
        "scrape_interval": interval,
        "scrape_timeout": interval,
        "evaluation_interval": interval,
    }
    config["rule_files"] = [
        str(rules_dir.resolve() / Path(name).name) for name in config.get("rule_files") or []
    ]
    config.pop("alerting", None)
    local_ports = ports.by_compose_port()
    for job in config.get("scrape_configs") or []:
        _localize_job(job, local_ports)
    return config


def _localize_job(job: dict[str, Any], local_ports: Mapping[int, int]) -> None:
    """One scrape job with its targets on this machine and the stack's interval."""
    name = job.get("job_name", "?")
    discovery = {key for key in job if key.endswith("_sd_configs")}
    if discovery:
        raise PrometheusConfigError(
            f"scrape job {name}: {', '.join(sorted(discovery))} has no local equivalent; "
            "the local stack maps static_configs targets only"
        )
    job.pop("scrape_interval", None)
    job.pop("scrape_timeout", None)
    for static in job.get("static_configs") or []:
        static["targets"] = [
            _local_target(name, target, local_ports) for target in static.get("targets") or []
        ]


def _local_target(job: str, target: str, local_ports: Mapping[int, int]) -> str:
    _, _, port = target.rpartition(":")
    if not port.isdigit() or int(port) not in local_ports:
        raise PrometheusConfigError(
            f"scrape job {job}: target {target!r} is no service of the stack "
            f"(the ports it knows: {', '.join(map(str, sorted(local_ports)))})"
        )
    return f"{LOOPBACK}:{local_ports[int(port)]}"


def write_configs(settings: RetentionSettings, files: StackFiles) -> None:
    """The workspace and Prometheus' config of this machine's ports, under the stack's folder."""
    ports = StackPorts.from_settings(settings)
    files.root.mkdir(parents=True, exist_ok=True)
    files.workspace.write_text(
        _generated("the Dagster workspace") + yaml.safe_dump(workspace_config(ports)),
        encoding="utf-8",
    )
    compose = yaml.safe_load((COMPOSE_PROMETHEUS_DIR / "prometheus.yml").read_text("utf-8"))
    local = local_prometheus_config(
        compose,
        ports,
        rules_dir=COMPOSE_PROMETHEUS_DIR,
        interval_s=settings.stack_scrape_interval_s,
    )
    files.prometheus_config.write_text(
        _generated("docker/prometheus/prometheus.yml, for this machine")
        + yaml.safe_dump(local, sort_keys=False),
        encoding="utf-8",
    )


def _generated(what: str) -> str:
    return f"# Written by `retention stack up` from the settings: {what}. Edits are overwritten.\n"
