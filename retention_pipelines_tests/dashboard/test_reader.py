"""The dashboard connects as the reader login only, in read-only sessions: whatever the app
does through its own connection factory, it can read ``analytics`` and write nothing."""

import psycopg
import pytest

from retention_pipelines.core import database
from retention_pipelines.dashboard.connection import reader_connection, reader_pool, reader_url
from retention_pipelines.settings import get_settings

WRITES = [
    "create table analytics.dashboard_probe (id int)",
    "create table public.dashboard_probe (id int)",
    "insert into ml.churn_risk_scores (snapshot_date, customer_id) values (current_date, 'X')",
    "create temporary table dashboard_probe (id int)",
]


def test_the_app_logs_in_as_the_reader_never_the_owner(on_empty: str) -> None:
    settings = get_settings()
    url = reader_url(settings)
    assert database.connection_parts(url).user == settings.reader_login
    assert database.connection_parts(url).dbname == database.connection_parts(on_empty).dbname
    with reader_connection(settings) as conn:
        row = conn.execute("select current_user, current_setting('transaction_read_only')")
        assert row.fetchone() == (settings.reader_login, "on")


@pytest.mark.parametrize("statement", WRITES)
def test_the_apps_connection_factory_cannot_write(on_empty: str, statement: str) -> None:
    with reader_connection(get_settings()) as conn:
        # Refused by the read-only session, or first by privileges where Postgres checks
        # them before it looks at the session (a table of ml, which it may not even see).
        with pytest.raises(
            (psycopg.errors.ReadOnlySqlTransaction, psycopg.errors.InsufficientPrivilege)
        ):
            conn.execute(statement)
        # Lifting the session's read-only default leaves the privileges in the way.
        conn.execute("set default_transaction_read_only = off")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(statement)


def test_the_apps_pool_hands_out_read_only_reader_sessions_too(on_empty: str) -> None:
    with reader_pool(reader_url(get_settings()), max_size=1) as pool, pool.connection() as conn:
        assert conn.execute("show transaction_read_only").fetchone() == ("on",)
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.execute(WRITES[0])


def test_without_a_reader_login_the_app_refuses_to_connect(
    on_empty: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RETENTION_READER_LOGIN", "")
    get_settings.cache_clear()
    try:
        with pytest.raises(ValueError, match="RETENTION_READER_LOGIN"):
            reader_url(get_settings())
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
