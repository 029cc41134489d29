"""The PromQL the platform ships, read from its files, and a real Prometheus server to ask.

Every expression of the Grafana dashboards (``docker/grafana/dashboards/*.json``) and of the
alert rules (``docker/prometheus/alerts.yml``) is listed here, so that a test can put each one
to a Prometheus: a throwaway server with no data (does it parse?) or the stack's, with the
platform's data (does it return series?).
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import pytest
import yaml

from retention_pipelines_tests.helpers import debian_program

PROJECT_ROOT: Final = Path(__file__).resolve().parents[2]
DASHBOARDS_DIR: Final = PROJECT_ROOT / "docker" / "grafana" / "dashboards"
PROMETHEUS_DIR: Final = PROJECT_ROOT / "docker" / "prometheus"
ALERT_RULES: Final = PROMETHEUS_DIR / "alerts.yml"
# Grafana's interval variables, as a panel would have them at Prometheus' 15 s scrape interval
# (Prometheus cannot parse them itself): $__rate_interval is four scrape intervals at least.
GRAFANA_VARIABLES: Final = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h"}
# The platform's metric names in an expression (its own prefixes only).
_METRIC_NAME: Final = re.compile(r"\bretention_(?:api|platform)_[a-z0-9_]+\b")


@dataclass(frozen=True)
class Expression:
    """One PromQL expression and where it is written (for a test's message)."""

    where: str
    expr: str


def dashboard_files() -> list[Path]:
    return sorted(DASHBOARDS_DIR.glob("*.json"))


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel of a dashboard, those inside rows included."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def panel_expressions() -> list[Expression]:
    """Every panel target's ``expr``, Grafana's variables replaced by what they stand for."""
    found = []
    for path in dashboard_files():
        for panel in panels(json.loads(path.read_text(encoding="utf-8"))):
            for target in panel.get("targets", []):
                expr = target["expr"]
                for variable, value in GRAFANA_VARIABLES.items():
                    expr = expr.replace(variable, value)
                where = f"{path.name}: {panel['title']} ({target['refId']})"
                found.append(Expression(where, expr))
    return found


def rule_expressions() -> list[Expression]:
    """Every alert rule's ``expr``."""
    rules = yaml.safe_load(ALERT_RULES.read_text(encoding="utf-8"))
    return [
        Expression(f"{ALERT_RULES.name}: {rule['alert']}", rule["expr"])
        for group in rules["groups"]
        for rule in group["rules"]
    ]


def metric_names(expr: str) -> set[str]:
    """The platform's metric names an expression reads (``retention_api_*``,
    ``retention_platform_*``)."""
    return set(_METRIC_NAME.findall(expr))


def instant_query(base_url: str, expr: str, timeout_s: float = 10) -> dict[str, Any]:
    """Prometheus' answer to ``expr`` at the current time (``/api/v1/query``), whether it
    succeeded or not: ``status`` is ``success`` or ``error`` with ``error`` saying why."""
    query = urllib.parse.urlencode({"query": expr})
    request = urllib.request.Request(f"{base_url}/api/v1/query?{query}")  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310
            return json.loads(response.read())
    except urllib.error.HTTPError as error:  # 400/422: the body says why
        return json.loads(error.read())


def prometheus_binary() -> str:
    """Debian's Prometheus server; .ci/run installs the package where it is missing."""
    return debian_program("prometheus", "prometheus")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def running_prometheus(
    folder: Path,
    *,
    targets: dict[str, str] | None = None,
    scrape_interval: str = "15s",
    timeout_s: float = 30,
) -> Iterator[str]:
    """A real Prometheus server scraping ``targets`` (job name to ``host:port``; none: it
    scrapes nothing), its data in ``folder``; yields its URL."""
    config = folder / "prometheus.yml"
    jobs = [
        {"job_name": job, "static_configs": [{"targets": [target]}]}
        for job, target in (targets or {}).items()
    ]
    document = {"global": {"scrape_interval": scrape_interval}, "scrape_configs": jobs}
    config.write_text(yaml.safe_dump(document), encoding="utf-8")
    port = _free_port()
    log = (folder / "prometheus.log").open("w")
    process = subprocess.Popen(
        [prometheus_binary(), f"--config.file={config}", f"--storage.tsdb.path={folder / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, process, timeout_s, folder / "prometheus.log")
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def wait_for_series(base_url: str, expr: str, timeout_s: float = 30) -> list[dict[str, Any]]:
    """The series ``expr`` returns once it returns any (a scrape has happened)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        answer = instant_query(base_url, expr)
        if answer["status"] == "success" and answer["data"]["result"]:
            return answer["data"]["result"]
        time.sleep(0.2)
    pytest.fail(f"Prometheus returned no series for {expr} within {timeout_s:g} s")


def _wait_ready(url: str, process: subprocess.Popen[bytes], timeout_s: float, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as response:  # noqa: S310
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    pytest.fail(f"Prometheus did not get ready (exit {process.poll()}):\n{log.read_text()}")


def exported_metric_names() -> set[str]:
    """Every series name the platform's own /metrics can show: the exporter's gauges and the
    API's counters (``_total``), histograms (``_bucket``, ``_sum``, ``_count``) and gauges."""
    from retention_pipelines.exporter import METRICS, PREFIX  # noqa: PLC0415
    from retention_pipelines.serving.metrics import create_metrics  # noqa: PLC0415

    names = {PREFIX + name for name in METRICS}
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    for family in create_metrics().registry.collect():
        names.update(family.name + suffix for suffix in suffixes[family.type])
    return names
