"""The ``retention`` command as a person uses it."""

import os
import stat
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pandas as pd
import psycopg
import pytest
from typer.testing import CliRunner

from retention_pipelines.cli import _print_report, app, write_dotenv
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


# ---------- credentials and the reader role

URL_WITH_CREDENTIALS = "postgresql://etl:s3cret-pw@db.invalid:5432/warehouse"


def _with_password(url: str, password: str) -> str:
    """``url`` with a password (a trust-auth server, as the tests' own, ignores it)."""
    parts = urlsplit(url)
    address = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:{password}@{address}"))


def test_db_url_masks_the_password_unless_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RETENTION_DATABASE_URL", URL_WITH_CREDENTIALS)
    get_settings.cache_clear()
    try:
        masked = runner.invoke(app, ["db", "url"])
        shown = runner.invoke(app, ["db", "url", "--show-password"])
    finally:
        get_settings.cache_clear()
    assert masked.exit_code == 0, masked.output
    assert masked.output.strip() == "postgresql://etl:***@db.invalid:5432/warehouse"
    assert shown.output.strip() == URL_WITH_CREDENTIALS


def test_the_demo_report_shows_the_warehouse_without_its_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from retention_pipelines.core.warehouse.raw import PartitionCounts  # noqa: PLC0415
    from retention_pipelines.demo import DemoReport  # noqa: PLC0415

    report = DemoReport(
        snapshot_date=date(2026, 3, 1),
        database_url=URL_WITH_CREDENTIALS,
        dagster_home=tmp_path,
        landing_file=tmp_path / "customers_2026-03-01.csv",
        generated=True,
        run_id="a-run",
        log_path=None,
        seconds=1.0,
        counts=PartitionCounts(3, 3, 0, 0),
        feature_rows=3,
    )
    _print_report(report)
    printed = capsys.readouterr().out
    assert "Warehouse: postgresql://etl:***@db.invalid:5432/warehouse" in printed
    assert "s3cret-pw" not in printed


@pytest.mark.slow
def test_model_tracking_uri_masks_the_password_unless_make_mlflow_asks(
    server_url: str, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"retention_test_mlflow_{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("RETENTION_DATABASE_URL", _with_password(database_url, "s3cret-pw"))
    monkeypatch.setenv("RETENTION_MLFLOW_DATABASE", name)
    get_settings.cache_clear()
    try:
        masked = runner.invoke(app, ["model", "tracking-uri"])
        shown = runner.invoke(app, ["model", "tracking-uri", "--show-password"])
    finally:
        get_settings.cache_clear()
        database.drop_database(server_url, name)
    assert masked.exit_code == 0, masked.output
    assert "s3cret-pw" not in masked.output
    assert f"{urlsplit(database_url).username}:***@" in masked.output
    assert "s3cret-pw" in shown.output  # what `make mlflow` hands to MLflow


def test_the_files_retention_env_writes_are_readable_by_their_owner_only(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RETENTION_DATABASE_URL", _with_password(database_url, "s3cret-pw"))
    monkeypatch.setenv("RETENTION_HOME_DIR", str(tmp_path / "home"))
    get_settings.cache_clear()
    try:
        result = runner.invoke(app, ["env", "--dotenv", str(tmp_path / ".env")])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    instance_config = tmp_path / "home" / "dagster_home" / "dagster.yaml"
    for written in (instance_config, tmp_path / ".env"):
        assert stat.S_IMODE(written.stat().st_mode) == 0o600, written
        assert "s3cret-pw" not in written.read_text()
    assert "env: RETENTION_DATABASE_URL" in instance_config.read_text()


@pytest.fixture
def reader_group(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Settings naming a reader group of this test's own (and no shared login); the group and
    its logins are dropped afterwards."""
    group = f"retention_test_group_{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("RETENTION_DATABASE_URL", database_url)
    monkeypatch.setenv("RETENTION_READER_ROLE", group)
    monkeypatch.setenv("RETENTION_READER_LOGIN", "")
    get_settings.cache_clear()
    yield group
    get_settings.cache_clear()
    with psycopg.connect(database_url, autocommit=True) as conn:
        members = conn.execute(
            "select member.rolname from pg_auth_members join pg_roles member"
            " on member.oid = pg_auth_members.member where roleid = to_regrole(%s)",
            (group,),
        ).fetchall()
        for name in [*(member for (member,) in members), group]:
            conn.execute(f"drop owned by {name}; drop role {name}")


def _connect_as(url: str, role: str, password: str) -> psycopg.Connection:
    parts = database.connection_parts(url)
    return psycopg.connect(host=parts.host, port=parts.port, dbname=parts.dbname, user=role,
                           password=password, autocommit=True)  # fmt: skip


def test_db_reader_login_creates_a_working_read_only_login(
    database_url: str, reader_group: str
) -> None:
    alice = f"{reader_group}_alice"
    result = runner.invoke(
        app, ["db", "reader-login", alice, "--password-stdin"], input="alice-pw\n"
    )
    assert result.exit_code == 0, result.output
    assert f"login {alice}: member of {reader_group}, reads the analytics schema only" in (
        result.output
    )
    assert "alice-pw" not in result.output
    with psycopg.connect(database_url) as conn:
        conn.execute("create view analytics.reader_probe as select 1 as id")
    with _connect_as(database_url, alice, "alice-pw") as conn:
        assert conn.execute("select id from analytics.reader_probe").fetchall() == [(1,)]
        defaults = conn.execute("select current_setting('transaction_read_only'),"
                                " current_setting('statement_timeout')").fetchone()  # fmt: skip
        assert defaults == ("on", "1min")
        conn.execute("set default_transaction_read_only = off")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("create temp table alice_scratch (id int)")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("select count(*) from raw.customer_snapshots")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(f"alter role {reader_group} set default_transaction_read_only = off")


def test_db_reader_login_asks_for_the_password_or_prints_a_generated_one_once(
    database_url: str, reader_group: str
) -> None:
    asked = runner.invoke(
        app, ["db", "reader-login", f"{reader_group}_bob"], input="bob-pw\nbob-pw\n"
    )
    assert asked.exit_code == 0, asked.output
    assert "bob-pw" not in asked.output
    generated = runner.invoke(app, ["db", "reader-login", f"{reader_group}_carol",
                                    "--generate-password"])  # fmt: skip
    assert generated.exit_code == 0, generated.output
    [password] = [line.split(": ", 1)[1] for line in generated.output.splitlines()
                  if line.startswith("password (shown once): ")]  # fmt: skip
    assert len(password) >= 20
    with _connect_as(database_url, f"{reader_group}_carol", password) as conn:
        assert conn.execute("select current_user").fetchone() == (f"{reader_group}_carol",)
    refused = runner.invoke(app, ["db", "reader-login", "Dave", "--generate-password"])
    assert refused.exit_code == 1
    assert "no login created: reader login 'Dave' must be a lowercase" in refused.output
