"""The platform's Postgres: one embedded server shared by every process, and migrations that
are versioned and safe to repeat."""

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg

from retention_pipelines.core import database

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
