"""The ``retention`` command as a person uses it."""

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from retention_pipelines.cli import app, write_dotenv
from retention_pipelines.core import database
from retention_pipelines.core.schemas import TELCO_COLUMNS
from retention_pipelines.settings import get_settings
from retention_pipelines_tests.helpers import platform_settings
from retention_pipelines_tests.landing_files import customer, write_rows

runner = CliRunner()


def test_generate_writes_a_dated_landing_file_with_the_telco_header(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        ["generate", "--customers", "500", "--date", "2026-03-01", "--seed", "3",
         "--unlabelled", "--out", str(tmp_path)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(tmp_path / "customers_2026-03-01.csv", dtype=str, keep_default_na=False)
    assert tuple(frame.columns) == TELCO_COLUMNS
    assert len(frame) == 500
    assert (frame["Churn"] == "").all()


def test_ingest_copies_a_csv_into_landing_for_its_date(tmp_path: Path) -> None:
    source = write_rows(tmp_path / "export.csv", [customer(1), customer(2)])
    result = runner.invoke(app, ["ingest", str(source), "--date", "2026-03-02"])
    assert result.exit_code == 0, result.output
    landed = get_settings().resolved_landing_dir / "customers_2026-03-02.csv"
    assert landed.read_bytes() == source.read_bytes()


def test_ingest_refuses_a_broken_file_before_landing_it(tmp_path: Path) -> None:
    source = write_rows(tmp_path / "broken.csv", [customer(1)], header=["customerID", "gender"])
    result = runner.invoke(app, ["ingest", str(source), "--date", "2026-03-03"])
    assert result.exit_code == 1
    [line] = [text for text in result.output.splitlines() if text.strip()]
    assert line.startswith("not landed: ") and "missing columns" in line
    assert not (get_settings().resolved_landing_dir / "customers_2026-03-03.csv").exists()


def test_a_bad_date_is_a_clear_usage_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["generate", "--date", "26/11/2026", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "is not a date like" in result.output


def test_model_rollback_without_a_champion_says_why_and_fails(
    server_url: str, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"retention_test_mlflow_{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("RETENTION_DATABASE_URL", database_url)
    monkeypatch.setenv("RETENTION_MLFLOW_DATABASE", name)
    get_settings.cache_clear()
    try:
        result = runner.invoke(app, ["model", "rollback", "--reason", "a test"])
    finally:
        get_settings.cache_clear()
        database.drop_database(server_url, name)
    assert result.exit_code == 1
    assert "cannot roll back: churn-model has no champion" in result.output


def test_db_upgrade_migrates_and_prepares_the_reader_role(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RETENTION_DATABASE_URL", database_url)
    get_settings.cache_clear()
    try:
        result = runner.invoke(app, ["db", "upgrade"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    latest = database.available_migrations()[-1].version
    assert f"database at migration {latest}" in result.output
    assert "read-only role retention_reader" in result.output
    assert database.current_version(database_url) == latest


def _dagster_job_list(folder: Path) -> subprocess.CompletedProcess[str]:
    """``dagster job list`` typed in ``folder``, without DAGSTER_HOME in the environment."""
    environment = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    return subprocess.run(
        [str(Path(sys.executable).parent / "dagster"), "job", "list",
         "-m", "retention_pipelines.definitions"],
        cwd=folder, env=environment, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


JOBS = {"daily_snapshot_job", "nightly_scoring_job", "retrain_job"}


@pytest.mark.slow
def test_after_retention_env_dagsters_own_commands_use_the_local_instance(
    database_url: str, server_url: str, tmp_path: Path
) -> None:
    """``retention env --dotenv .env`` puts DAGSTER_HOME where Dagster's command line reads
    it, so ``dagster job list`` typed in that folder opens the local Postgres instance."""
    home = tmp_path / "home"
    with platform_settings(database_url, server_url, home):
        result = runner.invoke(app, ["env", "--dotenv", str(tmp_path / ".env")])
        assert result.exit_code == 0, result.output
        assert result.output.strip() == f"export DAGSTER_HOME={home / 'dagster_home'}"
        assert (tmp_path / ".env").read_text() == f"DAGSTER_HOME={home / 'dagster_home'}\n"
        assert "RETENTION_DATABASE_URL" in (home / "dagster_home" / "dagster.yaml").read_text()
        completed = _dagster_job_list(tmp_path)
    assert completed.returncode == 0, completed.stderr
    assert set(completed.stdout.split()) >= JOBS


@pytest.mark.slow
@pytest.mark.embedded
def test_a_fresh_home_gets_a_local_instance_whose_embedded_server_starts_on_demand(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What ``make install`` leaves: the instance's config and ``.env`` written without any
    database; Dagster's command then starts the embedded server itself."""
    home = tmp_path / "home"
    monkeypatch.delenv("RETENTION_DATABASE_URL", raising=False)
    monkeypatch.setenv("RETENTION_HOME_DIR", str(home))
    get_settings.cache_clear()
    try:
        result = runner.invoke(app, ["env", "--dotenv", str(tmp_path / ".env"), "--keep-existing"])
        assert result.exit_code == 0, result.output
        assert not (home / "pgdata").exists()  # nothing started yet
        completed = _dagster_job_list(tmp_path)
    finally:
        get_settings.cache_clear()
        database.stop_embedded_server(home / "pgdata")
    assert completed.returncode == 0, completed.stderr
    assert set(completed.stdout.split()) >= JOBS
    assert (home / "pgdata" / "PG_VERSION").exists()


def test_write_dotenv_replaces_its_variable_and_keeps_the_other_lines(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text("A=1\nDAGSTER_HOME=/old\n# a comment\n")
    write_dotenv(dotenv, "DAGSTER_HOME", "/kept", replace=False)
    assert dotenv.read_text() == "A=1\nDAGSTER_HOME=/old\n# a comment\n"
    write_dotenv(dotenv, "DAGSTER_HOME", "/new")
    assert dotenv.read_text() == "A=1\n# a comment\nDAGSTER_HOME=/new\n"
