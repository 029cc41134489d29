"""Where the Postgres comes from, and the versioned migrations that prepare it.

With ``RETENTION_DATABASE_URL`` set, that server is used. Unset, an embedded PostgreSQL from
the ``pgserver`` package runs with its data under ``.retention/pgdata``. The embedded server is
started with no cleanup handler, so it outlives the process that started it: the webserver,
the daemon, run workers, tests and the CLI all find the running postmaster through its
``postmaster.pid`` and share it. ``pgserver`` serialises start-up with a file lock, so two
processes starting at once still get one server.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
import warnings
from contextlib import suppress
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote, unquote, urlsplit, urlunsplit

import psycopg
from psycopg import sql
from psycopg.rows import TupleRow
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_before_delay,
    wait_exponential_jitter,
)

if TYPE_CHECKING:
    from retention_pipelines.settings import RetentionSettings

logger = logging.getLogger(__name__)

MIGRATIONS_TABLE = "public.retention_schema_migrations"
# A fixed key so that concurrent processes apply migrations one at a time.
MIGRATION_LOCK_KEY = 0x52455445
_MIGRATION_FILE = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.sql$")


def embedded_database_url(pgdata: Path, database: str = "postgres") -> str:
    """Start (or find) the embedded server for ``pgdata`` and return its URL.

    Imported lazily: a production deployment with a server URL never touches pgserver.
    """
    pgserver = _import_pgserver()
    # Created here, race-free: pgserver's own mkdir fails when two processes start together.
    pgdata.mkdir(parents=True, exist_ok=True)
    _wait_while_stopping(pgdata)
    server = pgserver.get_server(pgdata, cleanup_mode=None)
    return server.get_uri(database)


def _wait_while_stopping(pgdata: Path, timeout_s: float = 30.0) -> None:
    """A server that is shutting down cannot be reused: wait for it to finish, or say why.

    A smart shutdown waits for every client to disconnect, so a forgotten webserver or
    daemon can hold it in this state indefinitely.
    """
    from pgserver.utils import PostmasterInfo  # noqa: PLC0415

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            info = PostmasterInfo.read_from_pgdata(pgdata)
        except (AssertionError, ValueError, OSError):
            # Read outside pgserver's lock: initdb or a starting server may be writing the
            # file. That is no shutdown; get_server settles it under the lock.
            return
        if info is None or not info.is_running() or info.status != "stopping":
            return
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"the embedded Postgres in {pgdata} is shutting down and waits for its clients "
                "to disconnect: stop the Dagster webserver, daemon or runs still using it"
            )
        time.sleep(0.5)


def _import_pgserver() -> ModuleType:
    # pgserver asks platformdirs for a runtime folder at import; without XDG_RUNTIME_DIR that
    # warns on every command although the /tmp fallback it takes is fine.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver  # noqa: PLC0415
        import pgserver._commands  # noqa: PLC0415
        import pgserver.utils  # noqa: PLC0415
    return pgserver


def stop_embedded_server(pgdata: Path) -> bool:
    """Stop the embedded server if it runs; True when one was stopped."""
    _import_pgserver()
    from pgserver._commands import pg_ctl  # noqa: PLC0415
    from pgserver.utils import PostmasterInfo  # noqa: PLC0415

    info = PostmasterInfo.read_from_pgdata(pgdata) if pgdata.exists() else None
    if info is None or not info.is_running():
        return False
    user = "pgserver" if _running_as_root() else None
    pg_ctl(["-w", "stop"], pgdata=pgdata, user=user)
    return True


def _running_as_root() -> bool:
    import os  # noqa: PLC0415

    return hasattr(os, "geteuid") and os.geteuid() == 0


EMBEDDED_WAREHOUSE_DATABASE = "retention"


def resolve_database_url(database_url: str | None, pgdata: Path) -> str:
    """The warehouse URL: the configured server, or a database on the embedded one."""
    if database_url:
        return database_url
    url = embedded_database_url(pgdata, EMBEDDED_WAREHOUSE_DATABASE)
    ensure_database(url, EMBEDDED_WAREHOUSE_DATABASE)
    return url


def with_database(url: str, database: str) -> str:
    """The same server URL, pointing at another database."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + database))


@dataclass(frozen=True)
class ConnectionParts:
    """A URL split into the pieces libpq-style clients such as dbt take one by one."""

    host: str
    port: int
    user: str
    password: str
    dbname: str


def connection_parts(url: str) -> ConnectionParts:
    """Split a Postgres URL, taking a Unix-socket directory from ``?host=`` when present."""
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    host = query.get("host", [parts.hostname or "localhost"])[0]
    port = int(query.get("port", [parts.port or 5432])[0])
    return ConnectionParts(
        host=host,
        port=port,
        user=unquote(parts.username or "postgres"),
        password=unquote(parts.password or ""),
        dbname=parts.path.lstrip("/") or "postgres",
    )


def masked_url(url: str) -> str:
    """``url`` fit to print or log: its password (in the authority or a ``password=`` query
    parameter) replaced by ``***``."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password:
        credentials, _, address = netloc.rpartition("@")
        user = credentials.split(":", 1)[0]
        netloc = f"{user}:***@{address}"
    query = "&".join(
        "password=***" if pair.partition("=")[0] == "password" else pair
        for pair in parts.query.split("&")
        if pair
    )
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def write_private_file(path: Path, text: str) -> None:
    """Write a file that holds or may come to hold credentials, readable by its owner only.

    The mode is set before the first byte is written, and an existing file with a wider mode
    is narrowed, so the text is never readable by others, even for a moment.
    """
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        os.fchmod(handle.fileno(), 0o600)
        handle.write(text)


def sqlalchemy_url(url: str) -> str:
    """The URL for SQLAlchemy-based clients (dagster-postgres, MLflow, Optuna): psycopg2."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(scheme="postgresql+psycopg2"))


# How long connect() keeps trying a server it cannot reach (RETENTION_DB_CONNECT_RETRY_S).
_connect_retry_s = 30.0
# A server refusing connections while it starts, stops, recovers or is full says so; any other
# refusal (a wrong password, a missing database or role) will not change by waiting.
_PASSING_REFUSALS = ("the database system is", "too many clients", "remaining connection slots")


def set_connect_retry(seconds: float) -> None:
    """How long :func:`connect` keeps trying, in this process (0: a single attempt)."""
    global _connect_retry_s  # noqa: PLW0603  # one process, one platform, one setting
    _connect_retry_s = max(0.0, seconds)


def connect(
    url: str, *, autocommit: bool = False, retry_s: float | None = None, **options: Any
) -> psycopg.Connection[TupleRow]:
    """A connection to ``url``; while the server cannot be reached (down, restarting, failing
    over, out of connection slots) it is tried again with growing waits, for ``retry_s``
    seconds at most (default: :func:`set_connect_retry`'s).

    Only opening a connection is retried. A statement that fails on an open connection fails
    its transaction, which rolls back whole; whether to run the work again is the caller's
    decision (Dagster's retry policy of the step, for the assets). ``options`` go to
    ``psycopg.connect`` (e.g. ``connect_timeout``).
    """
    window = _connect_retry_s if retry_s is None else retry_s
    retrying = Retrying(
        retry=retry_if_exception(_unreachable),
        stop=stop_before_delay(window),
        wait=wait_exponential_jitter(initial=0.25, max=4.0, jitter=0.25),
        before_sleep=lambda state: _log_retry(url, window, state),
        reraise=True,
    )
    return retrying(psycopg.connect, url, autocommit=autocommit, **options)


def _unreachable(error: BaseException) -> bool:
    if not isinstance(error, psycopg.OperationalError):
        return False
    message = str(error)
    return "FATAL:" not in message or any(text in message for text in _PASSING_REFUSALS)


def _log_retry(url: str, window: float, state: RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome else None
    reason = str(error).strip().splitlines()[0] if error else "no answer"
    parts = connection_parts(url)
    log = logger.warning if state.attempt_number == 1 else logger.debug
    log(
        "cannot reach the database %s at %s:%s (%s): trying again for up to %.0f s",
        parts.dbname,
        parts.host,
        parts.port,
        reason,
        window,
    )


def transient_failure(error: BaseException) -> bool:
    """Whether ``error``, or an error it was raised from, is one a later attempt may not meet:
    a database connection refused or lost, a server shutting down, a deadlock. These are the
    DB-API's ``OperationalError`` (psycopg's, and those of the SQLAlchemy clients MLflow and
    Dagster use); a cancelled statement (a timeout) is one too, but would be cancelled again.
    """
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if not isinstance(current, psycopg.errors.QueryCanceled) and any(
            kind.__name__ == "OperationalError" for kind in type(current).__mro__
        ):
            return True
        current = current.__cause__ or current.__context__
    return False


def ensure_database(url: str, database: str) -> None:
    """Create ``database`` on the server of ``url`` unless it exists."""
    with connect(with_database(url, "postgres"), autocommit=True) as conn:
        exists = conn.execute(
            "select 1 from pg_database where datname = %s", (database,)
        ).fetchone()
        if exists is None:
            # Another process may create it between our check and our create.
            with suppress(psycopg.errors.DuplicateDatabase, psycopg.errors.UniqueViolation):
                conn.execute(sql.SQL("create database {}").format(sql.Identifier(database)))


def drop_database(url: str, database: str) -> None:
    """Drop ``database`` (used by tests for their throwaway databases)."""
    with connect(with_database(url, "postgres"), autocommit=True) as conn:
        conn.execute(
            sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(database))
        )


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str = field(repr=False)


def available_migrations() -> list[Migration]:
    """The migrations shipped with the package, in version order."""
    found = []
    for entry in resources.files("retention_pipelines.core.migrations").iterdir():
        match = _MIGRATION_FILE.match(entry.name)
        if match:
            found.append(
                Migration(int(match["version"]), match["name"], entry.read_text(encoding="utf-8"))
            )
    return sorted(found, key=lambda migration: migration.version)


def upgrade(url: str) -> list[Migration]:
    """Apply every migration not yet applied, in one transaction; return those applied.

    Safe to call from several processes at once: an advisory lock serialises them and the
    second finds nothing left to do. A failing migration leaves the database as it was.
    """
    applied_now: list[Migration] = []
    with connect(url) as conn:
        conn.execute("select pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_KEY,))
        conn.execute(
            f"create table if not exists {MIGRATIONS_TABLE} ("
            " version integer primary key, name text not null,"
            " applied_at timestamptz not null default now())"
        )
        done = {row[0] for row in conn.execute(f"select version from {MIGRATIONS_TABLE}")}
        for migration in available_migrations():
            if migration.version in done:
                continue
            logger.info("applying migration %04d_%s", migration.version, migration.name)
            conn.execute(migration.sql)  # type: ignore[arg-type]  # trusted, shipped SQL
            conn.execute(
                f"insert into {MIGRATIONS_TABLE} (version, name) values (%s, %s)",
                (migration.version, migration.name),
            )
            applied_now.append(migration)
    return applied_now


def current_version(url: str) -> int:
    """The highest applied migration version, 0 when none."""
    with connect(url) as conn:
        exists = conn.execute("select to_regclass(%s)", (MIGRATIONS_TABLE,)).fetchone()
        if exists is None or exists[0] is None:
            return 0
        row = conn.execute(f"select coalesce(max(version), 0) from {MIGRATIONS_TABLE}").fetchone()
        return int(row[0]) if row else 0


# Serialises reader-role setup. Taken in the server's `postgres` database for the roles
# (roles are cluster-wide, advisory locks are per database) and in the warehouse for its grants.
READER_ROLE_LOCK_KEY = 0x52454144
# The schemas the reader must never see, whatever was granted before.
PRIVATE_SCHEMAS = ("raw", "staging", "features", "ml", "monitoring", "ops")
# dbt writes `grant select ... to <role>` unquoted, so the name must need no quoting.
_PLAIN_ROLE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_READER_GRANTS = (
    "grant connect on database {database} to {role}",
    # Temporary tables are the platform's own (ingestion stages its COPY in them), not every
    # role's: the reader, and any other role, may not create them here.
    "revoke temporary on database {database} from public",
    "revoke temporary, create on database {database} from {role}",
    "grant temporary on database {database} to current_user",
    "grant usage on schema analytics to {role}",
    "grant select on all tables in schema analytics to {role}",
    # For objects the current user (the one dbt connects as) creates later: new dbt views.
    "alter default privileges in schema analytics grant select on tables to {role}",
)
# Attributes that are more than reading (of the pg_roles row named by {0}); no reader has any.
_POWERS = (
    "({0}.rolsuper or {0}.rolcreaterole or {0}.rolcreatedb or {0}.rolreplication"
    " or {0}.rolbypassrls)"
)
# Postgres 16 separates using a role's privileges (INHERIT) from becoming it (SET).
_GRANT_OPTIONS_SINCE = 160000


@dataclass(frozen=True)
class ReaderRole:
    """Business users' read-only access to the ``analytics`` views.

    ``group`` is a role that cannot log in and holds the grants (dbt grants its views to
    it). People log in as members of it, each business user with a login of their own
    (``retention db reader-login``), so a password or a setting one of them changes is
    theirs alone and a shared password cannot be changed under everybody. ``login``, when
    set, is one such member kept with ``password`` on every upgrade, for the platform's own
    read-only clients. Every member login gets ``connection_limit`` connections at most, a
    ``statement_timeout`` and sessions that start read-only.
    """

    group: str
    connection_limit: int
    statement_timeout: str
    login: str | None = None
    password: str = field(default="", repr=False)


def reader_role_of(settings: RetentionSettings) -> ReaderRole:
    """The reader role as the settings describe it."""
    return ReaderRole(
        group=settings.reader_role,
        connection_limit=settings.reader_connection_limit,
        statement_timeout=settings.reader_statement_timeout,
        login=settings.reader_login or None,
        password=settings.reader_password.get_secret_value(),
    )


def ensure_reader_role(url: str, reader: ReaderRole) -> None:
    """Make ``reader.group`` the read-only group, put its logins' settings back to what
    ``reader`` says, and let the group read the ``analytics`` schema and nothing else.

    Run on every upgrade, so a changed setting reaches every login, and a group or login
    altered by hand is put back. Role settings take effect where a role logs in, so the
    read-only default and the statement timeout live on each login and the group has none.
    Privileges, not these defaults, keep a reader from writing: a user may lift them in their
    own session, or change their own login's defaults, and nobody else's. Views dbt creates
    later are readable too, through default privileges of the user running this (the one dbt
    connects as). Idempotent and safe with concurrent callers, on one database or on several
    databases of the same server (roles are shared by all of them).
    """
    _check_role_name(reader.group, "reader role")
    if reader.login:
        _check_role_name(reader.login, "reader login")
    with connect(with_database(url, "postgres")) as conn:
        conn.execute("select pg_advisory_xact_lock(%s)", (READER_ROLE_LOCK_KEY,))
        _ensure_group(conn, reader.group)
        if reader.login:
            _ensure_login(conn, reader, reader.login, reader.password)
        for member in _reader_logins(conn, reader.group):
            _assert_login_settings(conn, reader, member)
    _grant_analytics_only(url, reader.group)


def ensure_reader_login(url: str, reader: ReaderRole, name: str, password: str) -> None:
    """Create the login ``name`` as a member of the reader group, or set its password.

    It reads what the group reads, with the connection limit, statement timeout and
    read-only sessions of every reader login. The group must exist (every upgrade makes it).
    """
    _check_role_name(name, "reader login")
    if name == reader.group:
        raise ValueError(f"{name!r} is the reader group itself: a login needs a name of its own")
    with connect(with_database(url, "postgres")) as conn:
        conn.execute("select pg_advisory_xact_lock(%s)", (READER_ROLE_LOCK_KEY,))
        group = conn.execute(
            "select 1 from pg_roles where rolname = %s and not rolcanlogin", (reader.group,)
        ).fetchone()
        if group is None:
            raise RuntimeError(
                f"the reader group {reader.group!r} does not exist yet: run `retention db upgrade`"
            )
        _ensure_login(conn, reader, name, password)


def _check_role_name(role: str, what: str) -> None:
    if not _PLAIN_ROLE_NAME.match(role):
        raise ValueError(
            f"{what} {role!r} must be a lowercase Postgres identifier "
            "(letters, digits, underscores): dbt grants it unquoted"
        )


def _ensure_group(conn: psycopg.Connection, group: str) -> None:
    """Create the group, or turn an existing role (a login of earlier versions) into it."""
    name = sql.Identifier(group)
    found = conn.execute(
        f"select {_POWERS.format('pg_roles')},"
        " exists (select 1 from pg_auth_members where member = pg_roles.oid)"
        " from pg_roles where rolname = %s",
        (group,),
    ).fetchone()
    if found is None:
        conn.execute(sql.SQL("create role {} nologin").format(name))
    elif any(found):
        raise RuntimeError(
            f"the role {group!r} exists with attributes or role memberships a read-only "
            "reader must not have: choose another RETENTION_READER_ROLE"
        )
    conn.execute(sql.SQL("alter role {} nologin password null").format(name))
    conn.execute(sql.SQL("alter role {} reset all").format(name))


def _ensure_login(conn: psycopg.Connection, reader: ReaderRole, login: str, password: str) -> None:
    """Create the login if missing, set its password, make it a member of the group only."""
    name = sql.Identifier(login)
    found = conn.execute(
        f"select {_POWERS.format('pg_roles')}, exists (select 1 from pg_auth_members"
        "  join pg_roles granted on granted.oid = roleid"
        "  where member = pg_roles.oid and granted.rolname <> %s)"
        " from pg_roles where rolname = %s",
        (reader.group, login),
    ).fetchone()
    if found is None:
        conn.execute(sql.SQL("create role {} login").format(name))
    elif any(found):
        raise RuntimeError(
            f"the role {login!r} exists with attributes or role memberships a read-only "
            "reader must not have: choose another name"
        )
    # Hashed here (SCRAM, as the server asks), so no clear-text password reaches its logs.
    verifier = conn.pgconn.encrypt_password(password.encode(), login.encode()).decode()
    conn.execute(
        sql.SQL("alter role {} with login inherit password {}").format(name, sql.Literal(verifier))
    )
    grant = sql.SQL("grant {} to {}").format(sql.Identifier(reader.group), name)
    if conn.info.server_version >= _GRANT_OPTIONS_SINCE:
        # Members use the group's privileges but cannot become it (and so cannot alter it).
        grant = sql.SQL("{} with inherit true, set false").format(grant)
    conn.execute(grant)
    _assert_login_settings(conn, reader, login)


def _reader_logins(conn: psycopg.Connection, group: str) -> list[str]:
    """The group's member logins that hold nothing else; a member with more is left alone."""
    members = conn.execute(
        f"select distinct member.rolname, member.rolcanlogin and not {_POWERS.format('member')}"
        "  and not exists (select 1 from pg_auth_members other"
        "   where other.member = member.oid and other.roleid <> grants.roleid)"
        " from pg_auth_members grants"
        " join pg_roles member on member.oid = grants.member"
        " join pg_roles granted on granted.oid = grants.roleid"
        " where granted.rolname = %s order by 1",
        (group,),
    ).fetchall()
    for name, plain in members:
        if not plain:
            logger.warning(
                "role %s is a member of the reader group %s but holds more than reading: "
                "its settings are left as they are",
                name,
                group,
            )
    return [name for name, plain in members if plain]


def _assert_login_settings(conn: psycopg.Connection, reader: ReaderRole, login: str) -> None:
    name = sql.Identifier(login)
    for statement in (
        sql.SQL("alter role {} connection limit {}").format(
            name, sql.Literal(reader.connection_limit)
        ),
        sql.SQL("alter role {} set default_transaction_read_only = on").format(name),
        sql.SQL("alter role {} set statement_timeout = {}").format(
            name, sql.Literal(reader.statement_timeout)
        ),
    ):
        conn.execute(statement)


def _grant_analytics_only(url: str, role: str) -> None:
    """SELECT on analytics (now and later), CONNECT on this database; nothing on the rest,
    and no temporary tables here for anyone but the platform's own user."""
    name = sql.Identifier(role)
    with connect(url) as conn:
        conn.execute("select pg_advisory_xact_lock(%s)", (READER_ROLE_LOCK_KEY,))
        row = conn.execute("select current_database()").fetchone()
        database = sql.Identifier(row[0] if row else "")
        for statement in _READER_GRANTS:
            conn.execute(sql.SQL(statement).format(database=database, role=name))
        private = conn.execute(
            "select nspname from pg_namespace where nspname = any(%s)", (list(PRIVATE_SCHEMAS),)
        ).fetchall()
        for (schema,) in private:
            for statement in (
                "revoke all on all tables in schema {schema} from {role}",
                "revoke all on schema {schema} from {role}",
            ):
                conn.execute(sql.SQL(statement).format(schema=sql.Identifier(schema), role=name))


# --- the warehouse as a process finds it ---------------------------------------------------

_upgraded: set[str] = set()
_upgrade_lock = threading.Lock()


def prepared_database_url(database_url: str | None, *, home_dir: Path, reader: ReaderRole) -> str:
    """The warehouse URL (``database_url``, or the embedded server under ``home_dir``),
    migrated and with its reader role ready (its settings re-asserted), once per process."""
    url = resolve_database_url(database_url, home_dir / "pgdata")
    with _upgrade_lock:
        if url not in _upgraded:
            upgrade(url)
            ensure_reader_role(url, reader)
            _upgraded.add(url)
    return url


def settings_database_url(settings: RetentionSettings) -> str:
    """:func:`prepared_database_url` of the process's settings (the command line's way)."""
    set_connect_retry(settings.db_connect_retry_s)
    return prepared_database_url(
        settings.database_url,
        home_dir=settings.home_dir,
        reader=reader_role_of(settings),
    )


def with_login(url: str, user: str, password: str) -> str:
    """The same server and database, logged in as ``user`` with ``password``."""
    parts = urlsplit(url)
    address = parts.netloc.rpartition("@")[2]
    credentials = quote(user, safe="") + (":" + quote(password, safe="") if password else "")
    return urlunsplit(parts._replace(netloc=f"{credentials}@{address}"))
