"""``make stack`` as a person runs it, and what it leaves when stopped: nothing.

The fast tests drive the stack's lifecycle (start in order, wait, status, stop) on small HTTP
servers standing in for the services, one of which leaves a process behind in a group of its
own after its first process was killed. The slow test runs the real stack with ``retention
stack up`` on a throwaway warehouse and free ports, drives the API, reads every Grafana
panel's and alert rule's PromQL from the stack's own Prometheus, and stops it all with
``retention stack down``.
"""

from __future__ import annotations

import io
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections import Counter
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from rich.console import Console

from retention_pipelines.core.processes import (
    ProcessName,
    command_line,
    is_gone,
    process_name,
    service_processes,
)
from retention_pipelines.settings import RetentionSettings
from retention_pipelines.stack import control
from retention_pipelines.stack.control import DatabaseInfo, StackState
from retention_pipelines.stack.services import HealthCheck, StackFiles, StackService
from retention_pipelines_tests.churn_models import constant_churn_model
from retention_pipelines_tests.helpers import throwaway_database
from retention_pipelines_tests.operations.promql import (
    instant_query,
    panel_expressions,
    prometheus_binary,
    rule_expressions,
)
from retention_pipelines_tests.serving import api
from retention_pipelines_tests.serving.processes import free_port, serve_environment

pytestmark = pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds processes in /proc")

# An HTTP server that first starts a child in a process group of its own and passes SIGTERM
# on to it (what `retention dashboard` does with Streamlit), and says the child's pid; it
# answers after ``delay`` seconds.
SERVER = textwrap.dedent(
    """
    import http.server, signal, subprocess, sys, time
    port, delay = int(sys.argv[1]), float(sys.argv[2])
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"],
                             process_group=0)
    def stop(number, frame):
        child.terminate()
        child.wait()
        sys.exit(0)
    signal.signal(signal.SIGTERM, stop)
    print("child", child.pid, flush=True)
    time.sleep(delay)
    handler = http.server.SimpleHTTPRequestHandler
    http.server.HTTPServer(("127.0.0.1", port), handler).serve_forever()
    """
)


def _server(name: str, *, delay_s: float = 0.0, depends_on: tuple[str, ...] = ()) -> StackService:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    return StackService(
        name=name,
        command=[sys.executable, "-c", SERVER, str(port), str(delay_s)],
        health=HealthCheck("http", f"{url}/"),
        url=url,
        port=port,
        depends_on=depends_on,
    )


def _exits(name: str, code: int) -> StackService:
    return StackService(
        name=name,
        command=[sys.executable, "-c", f"print('giving up', flush=True); raise SystemExit({code})"],
        health=HealthCheck("http", "http://127.0.0.1:1/"),
        url="",
    )


def _output() -> tuple[Console, io.StringIO]:
    text = io.StringIO()
    return Console(file=text, width=200), text


@pytest.fixture
def stack_settings(tmp_path: Path, server_url: str) -> RetentionSettings:
    return RetentionSettings(
        home_dir=tmp_path / "home", database_url=server_url, stack_ready_timeout_s=30
    )


def _state(server_url: str) -> StackState:
    return StackState(database=DatabaseInfo("server", "the test server", "dagster"))


def _processes_of(leaders: dict[str, ProcessName]) -> set[ProcessName]:
    """Every process of the services ``leaders`` started: their sessions, groups, children."""
    return {process_name(pid) for leader in leaders.values() for pid in service_processes(leader)}


def _child_of(log: str) -> ProcessName:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if found := re.search(r"^child (\d+)$", Path(log).read_text(), re.MULTILINE):
            return process_name(int(found[1]))
        time.sleep(0.05)
    raise AssertionError(f"no child in {log}")


def test_up_starts_each_service_once_what_it_depends_on_answers_and_down_leaves_nothing(
    stack_settings: RetentionSettings, server_url: str
) -> None:
    files = StackFiles(stack_settings.stack_dir)
    first = _server("first", delay_s=1.0)
    second = _server("second", depends_on=("first",))
    console, printed = _output()

    code = control.start_and_wait(
        stack_settings, files, _state(server_url), [first, second], console
    )
    assert code == 0, printed.getvalue()
    state = control.read_state(files)
    assert state is not None and list(state.services) == ["first", "second"]
    # `second` was started only once `first` answered, a second after its start.
    assert state.services["second"].started_at - state.services["first"].started_at >= 1.0
    text = printed.getvalue()
    assert first.url in text and second.url in text and "ready" in text
    assert "logs/<service>.log" in text
    processes = _processes_of({name: run.process for name, run in state.services.items()})
    assert len(processes) == 4  # each server and its child

    console, printed = _output()
    assert control.status(stack_settings, console) == 0, printed.getvalue()
    assert str(state.services["first"].pid) in printed.getvalue()

    console, printed = _output()
    began = time.monotonic()
    assert control.down(stack_settings, console) == 0, printed.getvalue()
    assert time.monotonic() - began < control.STOP_TIMEOUT_S
    assert all(is_gone(process) for process in processes)
    assert "first: 2 processes stopped; second: 2 processes stopped" in printed.getvalue()
    assert not files.state.exists()
    console, printed = _output()
    assert control.status(stack_settings, console) == 1
    assert "not running" in printed.getvalue()


def test_a_service_whose_first_process_died_is_down_and_down_still_stops_what_it_left(
    stack_settings: RetentionSettings, server_url: str
) -> None:
    files = StackFiles(stack_settings.stack_dir)
    console, printed = _output()
    code = control.start_and_wait(
        stack_settings, files, _state(server_url), [_server("crashing")], console
    )
    assert code == 0, printed.getvalue()
    running = control.read_state(files).services["crashing"]  # type: ignore[union-attr]
    orphan = _child_of(running.log)  # in a group of its own, outliving its parent
    os.kill(running.pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while not is_gone(running.process) and time.monotonic() < deadline:
        time.sleep(0.05)

    console, printed = _output()
    assert control.status(stack_settings, console) == 1
    assert "down: not running" in printed.getvalue()
    assert not is_gone(orphan)

    console, printed = _output()
    assert control.down(stack_settings, console) == 0, printed.getvalue()
    assert is_gone(orphan)
    assert "crashing: 1 process stopped" in printed.getvalue()


def test_a_service_that_exits_while_starting_fails_up_with_its_log(
    stack_settings: RetentionSettings, server_url: str
) -> None:
    files = StackFiles(stack_settings.stack_dir)
    serving = _server("serving")
    console, printed = _output()
    code = control.start_and_wait(
        stack_settings, files, _state(server_url), [serving, _exits("broken", 3)], console
    )
    text = printed.getvalue()
    assert code == 1
    assert f"broken exited with code 3 (log: {files.log('broken')})" in text
    assert "giving up" in text  # the log's tail
    assert "make stack-stop" in text
    console, printed = _output()
    assert control.down(stack_settings, console) == 0
    assert "serving: 2 processes stopped" in printed.getvalue()


def test_up_refuses_a_port_another_program_holds_before_starting_anything(
    stack_settings: RetentionSettings,
) -> None:
    taken = _server("api")
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", taken.port or 0))
        holder.listen()
        with pytest.raises(control.StackError, match=rf"api \({taken.port}\)"):
            control._refuse_busy_ports([_server("free"), taken])


def test_up_refuses_a_program_that_is_not_installed_before_starting_anything(
    tmp_path: Path,
) -> None:
    missing = StackService(
        name="prometheus", command=[str(tmp_path / "prometheus")],
        health=HealthCheck("http", "http://127.0.0.1:1/"), url="",
    )  # fmt: skip
    with pytest.raises(control.StackError, match=r"prometheus \(for prometheus\).*apt-get"):
        control._refuse_missing_programs([_server("here"), missing])


def test_the_commands_say_when_no_stack_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner  # noqa: PLC0415

    from retention_pipelines.cli import app  # noqa: PLC0415
    from retention_pipelines.settings import get_settings  # noqa: PLC0415

    monkeypatch.setenv("RETENTION_HOME_DIR", str(tmp_path))
    get_settings.cache_clear()
    try:
        status = CliRunner().invoke(app, ["stack", "status"])
        down = CliRunner().invoke(app, ["stack", "down"])
    finally:
        get_settings.cache_clear()
    assert status.exit_code == 1 and "the stack is not running" in status.output
    assert down.exit_code == 0 and "nothing to stop" in down.output


# ---------- the real stack, as `make stack` runs it

RETENTION = str(Path(sys.executable).parent / "retention")
UP_TIMEOUT_S = 240
SERVICES = (
    "user-code", "webserver", "webserver-readonly", "daemon", "mlflow", "api", "dashboard",
    "exporter", "prometheus",
)  # fmt: skip
PORT_SETTINGS = (
    "RETENTION_DAGSTER_PORT", "RETENTION_DAGSTER_READONLY_PORT", "RETENTION_DAGSTER_GRPC_PORT",
    "RETENTION_MLFLOW_PORT", "RETENTION_API_PORT", "RETENTION_DASHBOARD_PORT",
    "RETENTION_EXPORTER_PORT", "RETENTION_PROMETHEUS_PORT",
)  # fmt: skip
# Panels of failures a healthy stack has none of (5xx answers, models that failed to load,
# prediction-log rows dropped): Grafana shows "No data" there; they must still parse.
QUIET_WHEN_HEALTHY = ('status=~"5.."', "model_load_failures_total", "rows_dropped_total")
REQUESTS = 300

# What a few nights leave in the warehouse for the exporter to read (the registry's versions
# come from MLflow itself): yesterday scored, ingested with rejects, drift and data quality
# reported, and the champion judged on labels that arrived.
NIGHTS = """
insert into ml.churn_risk_scores
select current_date - 1, 'C-' || customer, 0.3, 'medium', 'Contract: Month-to-month', 0.4,
       'Tenure: 2 months', 0.2, 'Fiber optic', 0.1, 'churn-model', %(champion)s, now()
from generate_series(1, 120) as customer;
insert into raw.ingestion_runs (snapshot_date, source, file_sha256, file_bytes, rows_read,
                                rows_valid, rows_rejected, duplicates_collapsed)
values (current_date - 1, 'customers.csv', 'a', 10, 130, 120, 8, 2);
insert into monitoring.drift_reports (snapshot_date, reference_model_version,
    reference_snapshots, reference_rows, current_rows, dataset_drift, drift_share,
    drift_share_threshold, drifted_columns, column_results, findings, report_path)
values (current_date - 1, %(champion)s, current_date - 30, 100, 120, false, 0.05, 0.2,
        '[]', '[]', '[]', 'report.html');
insert into monitoring.data_quality (snapshot_date, success, expectations, failed, results)
values (current_date - 1, true, 30, 0, '[]');
insert into monitoring.model_performance (evaluated_on, score_date, model_version, customers,
    churned, roc_auc, brier, mean_probability, churn_rate, calibration)
values (current_date - 1, current_date - 20, %(champion)s, 50, 10, 0.8, 0.1, 0.2, 0.2, '[]');
"""


def _nightly_run(server_url: str, dagster_database: str, day: str) -> None:
    """A successful run of the nightly job for ``day`` in the stack's run storage, as the
    schedule leaves one (a stand-in asset: the exporter reads the run, not its work)."""
    from datetime import date, timedelta  # noqa: PLC0415

    import dagster as dg  # noqa: PLC0415

    from retention_pipelines.core import database  # noqa: PLC0415
    from retention_pipelines.exporter import NIGHTLY_JOB  # noqa: PLC0415

    start = (date.fromisoformat(day) - timedelta(days=3)).isoformat()

    @dg.asset(partitions_def=dg.DailyPartitionsDefinition(start_date=start, end_offset=1))
    def night() -> None:
        """The night's work."""

    database.ensure_database(server_url, dagster_database)
    storage = {"postgres": {"postgres_url": database.with_database(server_url, dagster_database)}}
    definitions = dg.Definitions(assets=[night], jobs=[dg.define_asset_job(NIGHTLY_JOB, [night])])
    with dg.instance_for_test(overrides={"storage": storage}) as instance:
        result = definitions.resolve_job_def(NIGHTLY_JOB).execute_in_process(
            instance=instance, partition_key=day
        )
    assert result.success


def _log_test_auc(platform: api.ServingPlatform, version: str, auc: float) -> None:
    """The test ROC AUC training logs on a version's run (the exporter's reference)."""
    client = platform.client
    run_id = client.get_model_version("churn-model", version).run_id
    client.log_metric(run_id, "test_roc_auc", auc)


def _unused_ports(count: int) -> list[int]:
    """Ports nothing listens on, below Linux's ephemeral range: a port the kernel hands out
    for outgoing connections (as ``free_port`` gets one) may be some client's by the time a
    service that starts late binds it."""
    generator = random.Random()  # noqa: S311  # ports, not secrets
    ports: list[int] = []
    while len(ports) < count:
        port = generator.randrange(20_000, 32_000)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        if port not in ports:
            ports.append(port)
    return ports


def _stack_environment(bytecode_cache: Path) -> dict[str, str]:
    """The platform's settings of this test (its warehouse, stores and home), free ports, a
    Prometheus that scrapes every second, and an API that answers half its customers with the
    challenger and shadows the rest with it."""
    settings = {name: value for name, value in os.environ.items() if name.startswith("RETENTION_")}
    settings |= dict(zip(PORT_SETTINGS, map(str, _unused_ports(len(PORT_SETTINGS))), strict=True))
    settings |= {
        "RETENTION_STACK_SCRAPE_INTERVAL_S": "1",
        "RETENTION_STACK_READY_TIMEOUT_S": str(UP_TIMEOUT_S),
        "RETENTION_API_MODEL_POLL_S": "1",
        "RETENTION_API_CHALLENGER_SHARE": "0.5",
        "RETENTION_API_SHADOW": "true",
        "RETENTION_API_LOG_FLUSH_S": "0.2",
        "RETENTION_EXPORTER_CACHE_S": "1",
        "COLUMNS": "200",
    }
    return serve_environment(settings, bytecode_cache)


def _retention(
    *arguments: str, env: dict[str, str], timeout_s: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [RETENTION, *arguments], env=env, capture_output=True, text=True, timeout=timeout_s,
        check=False, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def _logs(home: Path) -> str:
    """The last lines of every service's log, for a failure's message."""
    parts = []
    for log in sorted((home / "stack" / "logs").glob("*.log")):
        lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
        parts.append(f"--- {log.name}\n" + "\n".join(lines[-20:]))
    return "\n".join(parts)


def _drive_api(url: str, key: api.IssuedKey) -> Counter[int]:
    """A few hundred requests as callers send them: single customers, batches, some invalid
    (422) and some without a key (401), once both variants are loaded."""
    with httpx.Client(base_url=url, headers=key.headers, timeout=30) as client:

        def both_loaded() -> bool:
            health = client.get("/health").json()
            return set(health.get("models", {})) == {"champion", "challenger"}

        api.wait_for(both_loaded, timeout_s=60, interval_s=0.5)
        statuses: Counter[int] = Counter()
        for i in range(REQUESTS):
            if i % 10 == 0:
                response = client.post("/v1/predict", json={"customerID": f"{i:04d}-STACK"})
            elif i % 10 == 1:
                response = httpx.post(f"{url}/v1/predict", json=api.customer(f"{i:04d}-STACK"))
            elif i % 10 == 2:
                batch = [api.customer(f"{i:04d}-{j}-STACK") for j in range(5)]
                response = client.post("/v1/predict/batch", json={"customers": batch})
            else:
                response = client.post("/v1/predict", json=api.customer(f"{i:04d}-STACK"))
            statuses[response.status_code] += 1
    return statuses


def _prometheus_json(url: str, path: str) -> dict[str, Any]:
    return httpx.get(f"{url}{path}", timeout=10).json()


def _scraped_requests(prometheus: str) -> float:
    answer = instant_query(prometheus, "sum(retention_api_requests_total)")
    result = answer["data"]["result"] if answer["status"] == "success" else []
    return float(result[0]["value"][1]) if result else 0.0


def _empty_or_failing(prometheus: str) -> dict[str, str]:
    """Each panel expression that fails, or returns no series where it should; each rule
    expression that fails."""
    found = {}
    for expression in panel_expressions():
        answer = instant_query(prometheus, expression.expr)
        if answer["status"] != "success":
            found[expression.where] = answer.get("error", "failed")
        elif not answer["data"]["result"] and not any(
            quiet in expression.expr for quiet in QUIET_WHEN_HEALTHY
        ):
            found[expression.where] = "no series"
    for expression in rule_expressions():
        answer = instant_query(prometheus, expression.expr)
        if answer["status"] != "success":
            found[expression.where] = answer.get("error", "failed")
    return found


def _check_prometheus(prometheus: str) -> None:
    """Prometheus scraped the API and the exporter, loaded and evaluated every rule, and every
    panel of the dashboards has its series."""
    api.wait_for(lambda: _scraped_requests(prometheus) >= REQUESTS, timeout_s=30, interval_s=0.5)
    targets = _prometheus_json(prometheus, "/api/v1/targets")["data"]["activeTargets"]
    assert {target["labels"]["job"]: target["health"] for target in targets} == {
        "retention-api": "up",
        "retention-exporter": "up",
    }, targets
    names = {expression.where.split(": ", 1)[1] for expression in rule_expressions()}

    def evaluated() -> list[dict[str, Any]] | None:
        groups = _prometheus_json(prometheus, "/api/v1/rules")["data"]["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        done = all(rule["lastEvaluation"] > "2000" for rule in rules)
        return rules if done and {rule["name"] for rule in rules} == names else None

    rules = api.wait_for(evaluated, timeout_s=30, interval_s=0.5)
    assert {rule["name"]: rule["health"] for rule in rules} == dict.fromkeys(names, "ok")
    # The rate windows of the panels want two scrapes of the counters as they are now.
    time.sleep(2.5)
    assert _empty_or_failing(prometheus) == {}


@pytest.fixture
def stack_home() -> Iterator[Path]:
    """A home of its own, outside pytest's numbered folders (which another pytest on the
    machine may clean up while the stack runs)."""
    home = Path(tempfile.mkdtemp(prefix="retention-stack-test-"))
    try:
        yield home
    finally:
        shutil.rmtree(home, ignore_errors=True)


def _seed_platform(platform: api.ServingPlatform) -> api.IssuedKey:
    """What the platform holds after a few nights, written as its own writers write it: a
    champion and a challenger in the registry (copied to ``ml.model_versions``), the nights'
    rows in the warehouse; and a key for the API."""
    from retention_pipelines.core.warehouse.model_versions import (  # noqa: PLC0415
        sync_model_versions,
    )

    champion = api.register_model(platform, constant_churn_model(0.3))
    _log_test_auc(platform, champion, 0.84)
    api.promote(platform, champion)
    api.register_model(platform, constant_churn_model(0.7))  # the challenger
    sync_model_versions(platform.url, platform.client)
    with psycopg.connect(platform.url) as conn:
        for statement in filter(str.strip, NIGHTS.split(";")):
            conn.execute(statement, {"champion": champion})  # type: ignore[call-overload]
    return api.create_key(platform)


def _stop_leaving_nothing(
    files: StackFiles, environment: dict[str, str], leaders: dict[str, ProcessName]
) -> float:
    """``retention stack down``; nothing of the stack left running. The seconds it took."""
    state = control.read_state(files)
    if state is not None:  # services up started before it failed, too
        leaders = leaders | {name: running.process for name, running in state.services.items()}
    processes = _processes_of(leaders)
    began = time.monotonic()
    down = _retention("stack", "down", env=environment)
    seconds = time.monotonic() - began
    assert down.returncode == 0, down.stdout + down.stderr
    left = {process for process in processes | _processes_of(leaders) if not is_gone(process)}
    assert left == set(), {process.pid: command_line(process.pid) for process in left}
    assert not files.state.exists()
    return seconds


@pytest.mark.slow
def test_make_stack_comes_up_green_feeds_every_panel_and_rule_and_stops_leaving_nothing(
    server_url: str, stack_home: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The stack starts while the platform's data is written (the API finds its models by
    polling the registry, the exporter reads the warehouse again after its cache)."""
    prometheus_binary()  # Debian's package: a skip where it is missing, a failure in CI
    bytecode_cache = tmp_path_factory.getbasetemp().parent / "serve-bytecode"
    with (
        throwaway_database(server_url) as warehouse,
        api.serving_platform(warehouse, server_url, stack_home) as platform,
    ):
        # First: the stack's Dagster instance then finds its run storage made.
        yesterday = (date.today() - timedelta(days=1)).isoformat()
        _nightly_run(server_url, platform.settings.dagster_database, yesterday)
        environment = _stack_environment(bytecode_cache)
        files = StackFiles(stack_home / "stack")
        leaders: dict[str, ProcessName] = {}
        began = time.monotonic()
        up = subprocess.Popen(
            [RETENTION, "stack", "up"], env=environment, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        try:
            key = _seed_platform(platform)
            printed, _ = up.communicate(timeout=UP_TIMEOUT_S + 30)
            up_seconds = time.monotonic() - began
            assert up.returncode == 0, printed + _logs(stack_home)
            state = control.read_state(files)
            assert state is not None and set(state.services) == set(SERVICES)
            leaders = {name: running.process for name, running in state.services.items()}
            assert all(name in printed for name in SERVICES), printed

            status = _retention("stack", "status", env=environment)
            assert status.returncode == 0, status.stdout + status.stderr
            assert all(name in status.stdout for name in ("postgres", *SERVICES)), status.stdout

            statuses = _drive_api(f"http://127.0.0.1:{environment['RETENTION_API_PORT']}", key)
            assert statuses == {200: 240, 422: 30, 401: 30}, statuses
            _check_prometheus(f"http://127.0.0.1:{environment['RETENTION_PROMETHEUS_PORT']}")
        except BaseException:
            if up.poll() is None:  # `down` waits for no `up`
                up.kill()
                up.wait()
            _retention("stack", "down", env=environment)  # what started, stopped; then why
            raise
        down_seconds = _stop_leaving_nothing(files, environment, leaders)
    print(f"stack up {up_seconds:.0f} s, down {down_seconds:.0f} s")  # noqa: T201
