"""How the dashboard reaches the warehouse: as the reader login only, in read-only sessions.

The reader login is a member of the reader group, which may read the ``analytics`` schema and
nothing else; the platform's own (owner) login never reaches this process's queries. Sessions
start read-only as well, so a write fails twice over: by the session and by privileges.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from retention_pipelines.core import database

if TYPE_CHECKING:
    import psycopg
    from psycopg_pool import ConnectionPool

    from retention_pipelines.settings import RetentionSettings

# Options of every dashboard connection: autocommit (each query stands alone, nothing holds a
# transaction open between reruns), read-only sessions, and a name in pg_stat_activity.
CONNECTION_OPTIONS: Final[dict[str, Any]] = {
    "autocommit": True,
    "options": "-c default_transaction_read_only=on",
    "application_name": "retention-dashboard",
}


def reader_url(settings: RetentionSettings) -> str:
    """The warehouse URL logged in as ``settings.reader_login``, never the owner's login.

    With ``RETENTION_DATABASE_URL`` unset the warehouse is the embedded server's database
    (found, or started, without migrating: ``retention dashboard`` prepares it first).
    """
    if not settings.reader_login:
        raise ValueError(
            "the dashboard reads as the reader login: set RETENTION_READER_LOGIN "
            "(and RETENTION_READER_PASSWORD)"
        )
    base = settings.database_url or database.embedded_database_url(
        settings.embedded_pgdata, database.EMBEDDED_WAREHOUSE_DATABASE
    )
    return database.with_login(
        base, settings.reader_login, settings.reader_password.get_secret_value()
    )


def reader_connection(settings: RetentionSettings) -> psycopg.Connection:
    """A read-only connection as the reader login: the app's connection factory."""
    return database.connect(reader_url(settings), **CONNECTION_OPTIONS)


def reader_pool(url: str, *, max_size: int = 4, timeout_s: float = 15.0) -> ConnectionPool:
    """A small pool of read-only connections to the reader ``url`` (see :func:`reader_url`),
    with the options of :func:`reader_connection`; a connection is checked before use, so
    a restarted server costs one reconnect, not an error on the page."""
    from psycopg_pool import ConnectionPool  # noqa: PLC0415

    return ConnectionPool(
        url,
        kwargs=CONNECTION_OPTIONS,
        min_size=1,
        max_size=max_size,
        timeout=timeout_s,
        check=ConnectionPool.check_connection,
        name="retention-dashboard",
        open=True,
    )
