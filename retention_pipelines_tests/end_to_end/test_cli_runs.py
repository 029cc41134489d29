"""What ``retention`` says and leaves behind when things go wrong: an unreachable database,
a failing run, and a command killed or stopped in the middle of its run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import mlflow
import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from retention_pipelines.cli import app
from retention_pipelines.core.registry import mlflow_tracking_uri
from retention_pipelines.instance import write_local_instance
from retention_pipelines.settings import get_settings
from retention_pipelines_tests.helpers import platform_settings, register_champion

pytestmark = pytest.mark.slow
RETENTION = str(Path(sys.executable).parent / "retention")
UNREACHABLE = "postgresql://postgres:secret@127.0.0.1:1/x"


def _lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.strip()]


def _retention_unreachable(*arguments: str) -> subprocess.CompletedProcess[str]:
    environment = {
        **os.environ,
        "RETENTION_DATABASE_URL": UNREACHABLE,
        "RETENTION_DB_CONNECT_RETRY_S": "0",
    }
    return subprocess.run(
        [RETENTION, *arguments], env=environment, capture_output=True, text=True, timeout=300,
        check=False,
    )  # fmt: skip


def test_an_unreachable_database_is_one_sentence_with_its_password_masked() -> None:
    completed = _retention_unreachable("score", "--date", "2026-02-01")
    assert completed.returncode == 1
    output = completed.stdout + completed.stderr
    assert "Traceback" not in output and "secret" not in output
    assert len(_lines(output)) <= 2, output
    assert (
        "cannot reach the database at postgresql://postgres:***@127.0.0.1:1/x: "
        "connection refused" in _lines(completed.stdout)
    )


def test_debug_shows_the_traceback_of_an_unreachable_database() -> None:
    completed = _retention_unreachable("--debug", "score", "--date", "2026-02-01")
    assert completed.returncode == 1
    assert "Traceback" in completed.stderr
    assert "Connection refused" in completed.stderr


@pytest.fixture
def platform(database_url: str, server_url: str, tmp_path: Path) -> Iterator[Path]:
    """The platform's settings on throwaway databases and a home folder of this test."""
    home = tmp_path / "home"
    with platform_settings(database_url, server_url, home):
        yield home


def _instance() -> dg.DagsterInstance:
    return dg.DagsterInstance.from_config(str(write_local_instance(get_settings())))


def test_a_failing_run_names_its_step_and_what_its_error_says_first_then_the_log(
    platform: Path, server_url: str
) -> None:
    """``retention score`` for a date whose landing file never came, with a champion."""
    uri = mlflow_tracking_uri(server_url, get_settings().mlflow_database)
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        register_champion(MlflowClient(uri), 0.8)
    finally:
        mlflow.set_tracking_uri(previous)

    result = CliRunner().invoke(app, ["score", "--date", "2026-02-09"])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    failure, log, run = _lines(result.output)
    assert failure.startswith(
        "step raw_customer_snapshot failed: No landing file for 2026-02-09: expected "
    )
    assert log.startswith("log: ") and Path(log.removeprefix("log: ")).exists()
    assert run.startswith("run ") and run.endswith("in the Dagster UI (make dev) under Runs")


def _retention_demo() -> subprocess.Popen[str]:
    """``retention demo`` without the UI: today's snapshot through the daily job, the
    cheapest run of the platform (300 customers, ingestion and dbt)."""
    return subprocess.Popen(
        [RETENTION, "demo", "--no-serve", "--customers", "300"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def _started_run(instance: dg.DagsterInstance, process: subprocess.Popen[str]) -> dg.DagsterRun:
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        runs = instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
        if runs:
            return runs[0]
        time.sleep(0.1)
    pytest.fail(f"no run started (the command exited {process.poll()})")


def _processes_of(home: Path) -> list[tuple[int, str]]:
    """The processes whose environment names this test's home folder, with their command."""
    marker = f"RETENTION_HOME_DIR={home}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if (
                entry.name.isdigit()
                and int(entry.name) != os.getpid()
                and marker in (entry / "environ").read_bytes().split(b"\0")
            ):
                found.append((int(entry.name), (entry / "cmdline").read_bytes().decode()))
        except OSError:
            continue
    return found


def _dbt_running(home: Path, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        if any("dbt" in command for _, command in _processes_of(home)):
            return
        time.sleep(0.1)
    pytest.fail(f"dbt never started (the command exited {process.poll()})")


@pytest.fixture
def leftovers(platform: Path) -> Iterator[Path]:
    """Kills, at the end, what the test's commands left running (a killed command's dbt)."""
    yield platform
    for pid, _ in _processes_of(platform):
        os.kill(pid, signal.SIGKILL)


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the test's processes in /proc")
def test_a_run_whose_command_was_killed_is_marked_failed_by_the_next_command(
    leftovers: Path,
) -> None:
    instance = _instance()
    command = _retention_demo()
    run = _started_run(instance, command)
    command.send_signal(signal.SIGKILL)
    command.wait(timeout=30)
    assert run.tags["retention/pid"] == str(command.pid)
    assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.STARTED  # type: ignore[union-attr]

    result = CliRunner().invoke(app, ["score"])  # any command that opens the instance

    assert _lines(result.output)[0] == (
        f"run {run.run_id} (daily_snapshot_job) marked failed: "
        f"the process that ran it (pid {command.pid}) is gone"
    )
    after = instance.get_run_by_id(run.run_id)
    assert after is not None and after.status == dg.DagsterRunStatus.FAILURE
    [failure] = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
    assert failure.dagster_event is not None
    assert failure.dagster_event.message == (f"the process that ran it (pid {command.pid}) is gone")
    again = CliRunner().invoke(app, ["score"])
    assert "marked failed" not in again.output  # once


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the test's processes in /proc")
def test_sigterm_cancels_the_run_stops_its_dbt_process_and_says_so_in_one_line(
    leftovers: Path,
) -> None:
    instance = _instance()
    command = _retention_demo()
    run = _started_run(instance, command)
    _dbt_running(leftovers, command)
    command.send_signal(signal.SIGTERM)
    output, _ = command.communicate(timeout=60)

    assert command.returncode == 143
    assert _lines(output) == [f"run {run.run_id} cancelled by SIGTERM (log: {_log(output)})"]
    after = instance.get_run_by_id(run.run_id)
    assert after is not None and after.status == dg.DagsterRunStatus.CANCELED
    [canceled] = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.RUN_CANCELED)
    assert canceled.dagster_event is not None
    assert canceled.dagster_event.message == "cancelled by SIGTERM"
    assert _processes_of(leftovers) == []  # dbt stopped with it


def _log(output: str) -> str:
    return output.rsplit("(log: ", 1)[-1].split(")", 1)[0]
