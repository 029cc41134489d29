"""The platform's Postgres: one embedded server shared by every process, and migrations that
are versioned and safe to repeat."""

import dataclasses
import stat
import subprocess
import sys
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest

from retention_pipelines.core import database

# The embedded server, socket URLs and the roles: what differs on the embedded default.
pytestmark = pytest.mark.embedded

SHOW_SERVER = (
    "import sys, psycopg; from retention_pipelines.core.database import embedded_database_url;"
    "url = embedded_database_url(__import__('pathlib').Path(sys.argv[1]));"
    "print(url, psycopg.connect(url).execute('select pg_postmaster_start_time()').fetchone()[0])"
)


def _start_in_subprocess(pgdata: Path) -> str:
    completed = subprocess.run(
        [sys.executable, "-c", SHOW_SERVER, str(pgdata)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return completed.stdout.strip()


def test_processes_started_together_share_one_embedded_server(tmp_path: Path) -> None:
    pgdata = tmp_path / "pgdata"
    try:
        with ThreadPoolExecutor(max_workers=3) as pool:
            answers = set(pool.map(_start_in_subprocess, [pgdata] * 3))
        assert len(answers) == 1, answers
        # The server outlives the processes that started it: a later one finds it running.
        assert _start_in_subprocess(pgdata) in answers
    finally:
        assert database.stop_embedded_server(pgdata)
    assert not database.stop_embedded_server(pgdata)


def test_migrations_create_the_schemas_once_and_record_their_version(database_url: str) -> None:
    assert database.current_version(database_url) == max(
        migration.version for migration in database.available_migrations()
    )
    assert database.upgrade(database_url) == []
    with psycopg.connect(database_url) as conn:
        schemas = {
            row[0] for row in conn.execute("select schema_name from information_schema.schemata")
        }
    assert {"raw", "staging", "features", "ml", "monitoring", "analytics"} <= schemas


def test_concurrent_upgrades_apply_each_migration_exactly_once(server_url: str) -> None:
    name = "retention_test_concurrent_upgrade"
    database.drop_database(server_url, name)
    database.ensure_database(server_url, name)
    url = database.with_database(server_url, name)
    try:
        with ThreadPoolExecutor(max_workers=4) as pool:
            applied = list(pool.map(database.upgrade, [url] * 4))
        assert sorted(len(migrations) for migrations in applied) == [
            0,
            0,
            0,
            len(database.available_migrations()),
        ]
    finally:
        database.drop_database(server_url, name)


def test_a_socket_url_splits_into_the_parts_dbt_needs() -> None:
    parts = database.connection_parts("postgresql://postgres:@/retention?host=/srv/pg/data")
    assert (parts.host, parts.port, parts.user, parts.dbname) == (
        "/srv/pg/data",
        5432,
        "postgres",
        "retention",
    )
    server = database.connection_parts("postgresql://etl:s%40cret@db.internal:6543/warehouse")
    assert (server.host, server.port, server.user, server.password, server.dbname) == (
        "db.internal",
        6543,
        "etl",
        "s@cret",
        "warehouse",
    )


# ---------- credentials


def test_a_printed_url_shows_no_password() -> None:
    assert (
        database.masked_url("postgresql://etl:s%40cret@db.internal:6543/warehouse")
        == "postgresql://etl:***@db.internal:6543/warehouse"
    )
    assert (
        database.masked_url("postgresql://etl@db/warehouse?sslmode=require&password=s3cret")
        == "postgresql://etl@db/warehouse?sslmode=require&password=***"
    )
    socket_url = "postgresql://postgres:@/retention?host=/srv/pg/data"
    assert database.masked_url(socket_url) == socket_url


def test_a_private_file_is_readable_by_its_owner_only_even_when_it_existed(
    tmp_path: Path,
) -> None:
    existing = tmp_path / ".env"
    existing.write_text("RETENTION_DATABASE_URL=postgresql://etl:old@db/warehouse\n")
    existing.chmod(0o644)
    database.write_private_file(existing, "A=1\n")
    database.write_private_file(tmp_path / "new.yaml", "a: 1\n")
    assert existing.read_text() == "A=1\n"
    assert stat.S_IMODE(existing.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "new.yaml").stat().st_mode) == 0o600


# ---------- the reader group and its logins

READER_CREDENTIAL = "reader-s3cret"


@pytest.fixture
def reader(database_url: str) -> Iterator[database.ReaderRole]:
    """A reader group and shared login of this test's own, prepared on its database; dropped
    afterwards with every login made a member of it."""
    suffix = uuid.uuid4().hex[:8]
    role = database.ReaderRole(
        group=f"retention_test_group_{suffix}",
        connection_limit=2,
        statement_timeout="300ms",
        login=f"retention_test_login_{suffix}",
        password=READER_CREDENTIAL,
    )
    database.ensure_reader_role(database_url, role)
    yield role
    with psycopg.connect(database_url, autocommit=True) as conn:
        members = conn.execute(
            "select member.rolname from pg_auth_members join pg_roles member"
            " on member.oid = pg_auth_members.member where roleid = to_regrole(%s)",
            (role.group,),
        ).fetchall()
        for name in [*(member for (member,) in members), role.group]:
            conn.execute(f"drop owned by {name}; drop role {name}")


def _login_of(reader: database.ReaderRole) -> str:
    assert reader.login is not None
    return reader.login


def _connect_as(url: str, role: str, password: str = READER_CREDENTIAL) -> psycopg.Connection:
    parts = database.connection_parts(url)
    return psycopg.connect(
        host=parts.host,
        port=parts.port,
        dbname=parts.dbname,
        user=role,
        password=password,
        autocommit=True,
    )


def _role_row(url: str, role: str) -> tuple[object, ...]:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "select role.rolcanlogin, role.rolconnlimit, role.rolconfig,"
            " authid.rolpassword is not null from pg_roles role"
            " join pg_authid authid on authid.oid = role.oid where role.rolname = %s",
            (role,),
        ).fetchone()
    assert row is not None, role
    return tuple(row)


def test_the_reader_group_cannot_log_in_and_its_login_carries_the_limits(
    database_url: str, reader: database.ReaderRole
) -> None:
    assert _role_row(database_url, reader.group) == (False, -1, None, False)
    assert _role_row(database_url, _login_of(reader)) == (
        True,
        2,
        ["default_transaction_read_only=on", "statement_timeout=300ms"],
        True,
    )
    with pytest.raises(psycopg.OperationalError, match="not permitted to log in"):
        _connect_as(database_url, reader.group)


def test_a_reader_session_starts_read_only_with_a_statement_timeout(
    database_url: str, reader: database.ReaderRole
) -> None:
    with _connect_as(database_url, _login_of(reader)) as conn:
        settings = conn.execute("select current_setting('statement_timeout'),"
                                " current_setting('transaction_read_only')").fetchone()  # fmt: skip
        assert settings == ("300ms", "on")
        with pytest.raises(psycopg.errors.QueryCanceled):
            conn.execute("select pg_sleep(2)")


def test_a_reader_login_holds_at_most_its_connection_limit(
    database_url: str, reader: database.ReaderRole
) -> None:
    login = _login_of(reader)
    with (
        _connect_as(database_url, login),
        _connect_as(database_url, login),
        pytest.raises(psycopg.OperationalError, match="too many connections for role"),
    ):
        _connect_as(database_url, login)


def test_the_reader_cannot_create_temporary_tables_but_the_platform_can(
    database_url: str, reader: database.ReaderRole
) -> None:
    with _connect_as(database_url, _login_of(reader)) as conn:
        conn.execute("set default_transaction_read_only = off")
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="temporary tables"):
            conn.execute("create temp table reader_scratch (id int)")
    with psycopg.connect(database_url) as conn:
        public_temp = conn.execute(
            "select count(*) from pg_database, aclexplode(datacl)"
            " where datname = current_database() and grantee = 0"
            " and privilege_type = 'TEMPORARY'"
        ).fetchone()
        conn.execute("create temp table platform_scratch (id int)")  # ingestion's staging
    assert public_temp == (0,)


def test_a_reader_can_change_neither_the_group_nor_its_own_limits(
    database_url: str, reader: database.ReaderRole
) -> None:
    refused = [
        f"alter role {reader.group} set default_transaction_read_only = off",
        f"alter role {reader.group} set statement_timeout = 0",
        f"alter role {reader.group} password 'taken-over'",
        f"alter role {reader.group} login",
        f"alter role {reader.login} connection limit 100",
        f"alter role {reader.login} createrole",
    ]
    with _connect_as(database_url, _login_of(reader)) as conn:
        conn.execute("set default_transaction_read_only = off")
        for statement in refused:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)
        if conn.info.server_version >= 160000:
            # A member uses the group's privileges but cannot become it.
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(f"set role {reader.group}")
    assert _role_row(database_url, reader.group) == (False, -1, None, False)


def test_every_upgrade_puts_the_reader_roles_back_as_the_settings_say(
    database_url: str, reader: database.ReaderRole
) -> None:
    """What a login changes of its own defaults, and a group altered by hand, last until the
    next upgrade; a changed limit reaches every login then, those made by hand included."""
    other = f"{reader.group}_alice"
    database.ensure_reader_login(database_url, reader, other, "alice-pw")
    with _connect_as(database_url, other, "alice-pw") as conn:
        conn.execute("set default_transaction_read_only = off")
        conn.execute(f"alter role {other} set statement_timeout = 0")
        conn.execute(f"alter role {other} set default_transaction_read_only = off")
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f"alter role {reader.group} login password 'by-hand'")
        conn.execute(f"grant temporary on database {conn.info.dbname} to public")
    changed = dataclasses.replace(reader, connection_limit=5, statement_timeout="2min")
    database.ensure_reader_role(database_url, changed)
    for login in (other, _login_of(reader)):
        assert _role_row(database_url, login) == (
            True,
            5,
            ["default_transaction_read_only=on", "statement_timeout=2min"],
            True,
        )
    assert _role_row(database_url, reader.group) == (False, -1, None, False)
    with _connect_as(database_url, other, "alice-pw") as conn:
        conn.execute("set default_transaction_read_only = off")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("create temp table reader_scratch (id int)")


def test_a_reader_login_reads_the_analytics_views_and_nothing_behind_them(
    database_url: str, reader: database.ReaderRole
) -> None:
    with psycopg.connect(database_url) as conn:
        conn.execute("create view analytics.reader_probe as select 1 as id")
    alice = f"{reader.group}_alice"
    database.ensure_reader_login(database_url, reader, alice, "alice-pw")
    with _connect_as(database_url, alice, "alice-pw") as conn:
        assert conn.execute("select id from analytics.reader_probe").fetchall() == [(1,)]
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("select count(*) from raw.customer_snapshots")


def test_a_login_of_an_earlier_version_becomes_the_group_without_its_password(
    database_url: str,
) -> None:
    """Earlier versions made the reader role a login with the shared password: an upgrade
    turns it into the group, and the shared password stops working."""
    suffix = uuid.uuid4().hex[:8]
    earlier = database.ReaderRole(
        group=f"retention_test_group_{suffix}", connection_limit=2, statement_timeout="60s"
    )
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f"create role {earlier.group} login password 'shared'")
        conn.execute(f"alter role {earlier.group} set default_transaction_read_only = on")
    try:
        database.ensure_reader_role(database_url, earlier)
        assert _role_row(database_url, earlier.group) == (False, -1, None, False)
    finally:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(f"drop owned by {earlier.group}; drop role {earlier.group}")


def test_a_reader_login_refuses_the_group_name_a_powerful_role_and_a_missing_group(
    database_url: str, reader: database.ReaderRole
) -> None:
    with pytest.raises(ValueError, match="the reader group itself"):
        database.ensure_reader_login(database_url, reader, reader.group, "pw")
    with pytest.raises(ValueError, match="lowercase Postgres identifier"):
        database.ensure_reader_login(database_url, reader, "Alice", "pw")
    powerful = f"{reader.group}_admin"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f"create role {powerful} login createrole")
        conn.execute(f"grant {reader.group} to {powerful}")
    with pytest.raises(RuntimeError, match="must not have"):
        database.ensure_reader_login(database_url, reader, powerful, "pw")
    # An upgrade leaves a powerful member's own settings alone.
    database.ensure_reader_role(database_url, reader)
    assert _role_row(database_url, powerful)[1:3] == (-1, None)
    missing = dataclasses.replace(reader, group=f"{reader.group}_missing")
    with pytest.raises(RuntimeError, match="does not exist yet"):
        database.ensure_reader_login(database_url, missing, f"{reader.group}_bob", "pw")
