"""What business users read, on real Postgres and dbt: the analytics views over hand-made scores
of two snapshot dates, built by the Dagster dbt assets, and the read-only reader role."""

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime

import dagster as dg
import psycopg
import pytest
from dagster_dbt import DbtCliResource
from psycopg.rows import dict_row

from retention_pipelines.assets.features import (
    retention_dbt_analytics,
    retention_dbt_models,
    retention_dbt_project,
)
from retention_pipelines.core import database
from retention_pipelines.resources import WarehouseResource, dbt_executable
from retention_pipelines.settings import get_settings
from retention_pipelines_tests.helpers import TELCO_DAY

pytestmark = [pytest.mark.slow, pytest.mark.embedded]
DAY_1, DAY_2 = date.fromisoformat(TELCO_DAY), date(2026, 1, 16)
# (snapshot date, customer index, probability, band, model version). Customers 0..2 are scored
# on both days (0 rises to the top, 1 falls to low), 3 and 4 on the first day only.
SCORES = [
    (DAY_1, 0, 0.30, "medium", "1"),
    (DAY_1, 1, 0.85, "high", "1"),
    (DAY_1, 2, 0.10, "low", "1"),
    (DAY_1, 3, 0.65, "high", "1"),
    (DAY_1, 4, 0.45, "medium", "1"),
    (DAY_2, 0, 0.90, "high", "2"),
    (DAY_2, 1, 0.20, "low", "2"),
    (DAY_2, 2, 0.55, "medium", "2"),
]


@pytest.fixture(scope="module")
def customers(telco_warehouse: str) -> list[str]:
    """Five Telco customers; the first three come back on DAY_2 on a two-year contract."""
    with psycopg.connect(telco_warehouse) as conn:
        ids = [
            row[0]
            for row in conn.execute(
                "select customer_id from raw.customer_snapshots where snapshot_date = %s"
                " and contract <> 'Two year' order by customer_id limit 5",
                (DAY_1,),
            )
        ]
        conn.execute(
            "insert into raw.customer_snapshots"
            " select %s, customer_id, gender, senior_citizen, partner, dependents, tenure + 1,"
            "  phone_service, multiple_lines, internet_service, online_security, online_backup,"
            "  device_protection, tech_support, streaming_tv, streaming_movies, 'Two year',"
            "  paperless_billing, payment_method, monthly_charges, total_charges, churn, source,"
            "  source_row_number"
            " from raw.customer_snapshots where snapshot_date = %s and customer_id = any(%s)",
            (DAY_2, DAY_1, ids[:3]),
        )
    return ids


@pytest.fixture(scope="module")
def analytics_run(telco_warehouse: str, customers: list[str]) -> dg.ExecuteInProcessResult:
    """DAY_2's features and then the analytics views, materialized by Dagster, with scores in."""
    scored_at = datetime(2026, 1, 16, 2, tzinfo=UTC)
    with psycopg.connect(telco_warehouse) as conn, conn.cursor() as cursor:
        cursor.executemany(
            "insert into ml.churn_risk_scores values"
            " (%s, %s, %s, %s, 'Contract: Month-to-month', 0.8, 'Tenure months', 0.5,"
            "  'Internet service: Fiber optic', 0.3, 'churn-model', %s, %s)",
            [
                (day, customers[i], p, band, version, scored_at)
                for day, i, p, band, version in SCORES
            ],
        )
    return dg.materialize(
        [retention_dbt_models, retention_dbt_analytics],
        partition_key=DAY_2.isoformat(),
        resources={
            "warehouse": WarehouseResource(database_url=telco_warehouse),
            "dbt": DbtCliResource(
                project_dir=retention_dbt_project, dbt_executable=dbt_executable()
            ),
        },
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
    )


def _rows(url: str, query: str) -> list[dict[str, object]]:
    with psycopg.connect(url) as conn, conn.cursor(row_factory=dict_row) as cursor:
        return cursor.execute(query).fetchall()  # type: ignore[arg-type]


def test_the_views_build_and_their_dbt_tests_pass(
    analytics_run: dg.ExecuteInProcessResult,
) -> None:
    assert analytics_run.success
    checks = analytics_run.get_asset_check_evaluations()
    analytics = {"customer_risk_latest", "risk_band_summary"}
    assert sum(check.asset_key.to_user_string() in analytics for check in checks) >= 20
    assert all(check.passed for check in checks), [c.check_name for c in checks if not c.passed]


def test_each_customer_appears_once_with_the_latest_score_and_that_days_profile(
    telco_warehouse: str, customers: list[str], analytics_run: dg.ExecuteInProcessResult
) -> None:
    rows = _rows(telco_warehouse, "select * from analytics.customer_risk_latest")
    by_id = {row["customer_id"]: row for row in rows}
    assert len(rows) == len(by_id) == 5
    latest = {customers[i]: (day, p, band) for day, i, p, band, _ in SCORES}  # later days win
    assert {
        key: (row["snapshot_date"], row["churn_probability"], row["risk_band"])
        for key, row in by_id.items()
    } == latest
    profiles = _rows(
        telco_warehouse,
        "select snapshot_date, customer_id, contract, tenure_months, monthly_charges,"
        " payment_method, internet_service from features.customer_features",
    )
    for profile in profiles:
        row = by_id.get(profile["customer_id"])
        if row is not None and row["snapshot_date"] == profile["snapshot_date"]:
            assert {key: row[key] for key in profile} == profile
    assert [by_id[customers[i]]["contract"] for i in range(3)] == ["Two year"] * 3
    assert all(row["contract"] != "Two year" for row in (by_id[customers[3]], by_id[customers[4]]))
    assert {row["model_version"] for row in rows} == {"1", "2"}


def test_the_latest_scores_are_ordered_for_action_high_band_and_probability_first(
    telco_warehouse: str, customers: list[str], analytics_run: dg.ExecuteInProcessResult
) -> None:
    rows = _rows(telco_warehouse, "select * from analytics.customer_risk_latest")
    assert [row["customer_id"] for row in rows] == [customers[i] for i in (0, 3, 2, 4, 1)]
    assert [row["risk_rank"] for row in rows] == [1, 2, 3, 4, 5]
    assert [row["risk_band"] for row in rows] == ["high", "high", "medium", "medium", "low"]


def test_the_band_summary_counts_each_days_customers(
    telco_warehouse: str, analytics_run: dg.ExecuteInProcessResult
) -> None:
    rows = _rows(
        telco_warehouse,
        "select snapshot_date, risk_band, customers, share_of_customers,"
        " mean_churn_probability, model_versions from analytics.risk_band_summary",
    )
    got = [tuple(round(v, 9) if isinstance(v, float) else v for v in row.values()) for row in rows]
    third = round(1 / 3, 9)
    assert got == [
        (DAY_2, "high", 1, third, 0.90, "2"),
        (DAY_2, "medium", 1, third, 0.55, "2"),
        (DAY_2, "low", 1, third, 0.20, "2"),
        (DAY_1, "high", 2, 0.4, 0.75, "1"),
        (DAY_1, "medium", 2, 0.4, 0.375, "1"),
        (DAY_1, "low", 1, 0.2, 0.10, "1"),
    ]


# ---------- the reader role


def _reader(url: str) -> psycopg.Connection:
    """The same database, as the reader group's shared login (the host may be a socket
    directory: embedded)."""
    settings = get_settings()
    parts = database.connection_parts(url)
    return psycopg.connect(
        host=parts.host,
        port=parts.port,
        dbname=parts.dbname,
        user=settings.reader_login,
        password=settings.reader_password.get_secret_value(),
        autocommit=True,
    )


def test_the_reader_reads_the_analytics_views(
    telco_warehouse: str, analytics_run: dg.ExecuteInProcessResult
) -> None:
    with _reader(telco_warehouse) as conn:
        latest = conn.execute("select count(*) from analytics.customer_risk_latest").fetchone()
        summary = conn.execute("select sum(customers) from analytics.risk_band_summary").fetchone()
        read_only = conn.execute("show transaction_read_only").fetchone()
    assert (latest, summary, read_only) == ((5,), (8,), ("on",))


@pytest.mark.parametrize(
    "table", ["raw.customer_snapshots", "features.customer_features", "ml.churn_risk_scores"]
)
def test_the_reader_cannot_read_what_lies_behind_the_views(
    telco_warehouse: str, analytics_run: dg.ExecuteInProcessResult, table: str
) -> None:
    with _reader(telco_warehouse) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute(f"select count(*) from {table}")


WRITES = [
    "insert into analytics.reader_probe values (2)",
    "update analytics.reader_probe set id = 3",
    "delete from analytics.reader_probe",
    "create table analytics.reader_table (id int)",
    "create table public.reader_table (id int)",
]


@pytest.fixture(scope="module")
def probe_table(telco_warehouse: str, analytics_run: dg.ExecuteInProcessResult) -> str:
    """A table created in analytics after the grants, as dbt creates views: readable by default."""
    with psycopg.connect(telco_warehouse) as conn:
        conn.execute("create table analytics.reader_probe (id int)")
        conn.execute("insert into analytics.reader_probe values (1)")
    return "analytics.reader_probe"


def test_tables_created_later_in_analytics_are_readable_too(
    telco_warehouse: str, probe_table: str
) -> None:
    with _reader(telco_warehouse) as conn:
        assert conn.execute(f"select id from {probe_table}").fetchall() == [(1,)]


@pytest.mark.parametrize("statement", WRITES)
def test_the_reader_can_write_nothing_even_with_read_only_turned_off(
    telco_warehouse: str, probe_table: str, statement: str
) -> None:
    with _reader(telco_warehouse) as conn:
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.execute(statement)
        conn.execute("set default_transaction_read_only = off")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(statement)


@pytest.mark.parametrize(
    "statement",
    [
        "insert into analytics.customer_risk_latest (customer_id) values ('X')",
        "update analytics.customer_risk_latest set churn_probability = 0",
        "delete from analytics.customer_risk_latest",
    ],
)
def test_the_reader_cannot_change_the_call_list(
    telco_warehouse: str, analytics_run: dg.ExecuteInProcessResult, statement: str
) -> None:
    # customer_risk_latest is a table dbt rebuilds: the read-only session refuses first, then
    # the reader's lack of INSERT/UPDATE/DELETE (as on the probe table above).
    with _reader(telco_warehouse) as conn:
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.execute(statement)
        conn.execute("set default_transaction_read_only = off")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(statement)


@pytest.fixture
def throwaway_role(database_url: str) -> Iterator[str]:
    """A reader group of this test's own, dropped with its login (``<group>_login``) and
    everything granted to them."""
    role = f"retention_test_reader_{uuid.uuid4().hex[:8]}"
    yield role
    with psycopg.connect(database_url, autocommit=True) as conn:
        for name in (f"{role}_login", role):
            if conn.execute("select 1 from pg_roles where rolname = %s", (name,)).fetchone():
                conn.execute(f"drop owned by {name}; drop role {name}")


# The reader login's password, which the server must only ever see hashed.
CLEAR_TEXT = "s3cret"


def _reader_role(group: str) -> database.ReaderRole:
    return database.ReaderRole(
        group=group,
        connection_limit=3,
        statement_timeout="30s",
        login=f"{group}_login",
        password=CLEAR_TEXT,
    )


def test_ensure_reader_role_is_idempotent_under_concurrent_callers_and_grants_analytics_only(
    database_url: str, throwaway_role: str
) -> None:
    reader = _reader_role(throwaway_role)
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(lambda _: database.ensure_reader_role(database_url, reader), range(8)))
    attribute_query = (
        "select rolcanlogin, rolsuper, rolcreatedb, rolcreaterole, rolconfig"
        " from pg_roles where rolname = %s"
    )
    with psycopg.connect(database_url) as conn:
        attributes = conn.execute(attribute_query, (throwaway_role,)).fetchone()
        login_attributes = conn.execute(attribute_query, (reader.login,)).fetchone()
        stored_password = conn.execute(
            "select rolpassword from pg_authid where rolname = %s", (reader.login,)
        ).fetchone()
        schemas = {
            name: (usage, create)
            for name, usage, create in conn.execute(
                "select nspname, has_schema_privilege(%(role)s, oid, 'usage'),"
                " has_schema_privilege(%(role)s, oid, 'create')"
                " from pg_namespace where nspname = any(%(schemas)s)",
                {"role": throwaway_role, "schemas": ["analytics", *database.PRIVATE_SCHEMAS]},
            )
        }
        private_relations_with_any_privilege = conn.execute(
            "select count(*) from pg_class join pg_namespace on pg_namespace.oid = relnamespace"
            " where nspname = any(%s) and relkind in ('r', 'v', 'm', 'p')"
            " and has_table_privilege(%s, pg_class.oid,"
            "  'select, insert, update, delete, truncate, references, trigger')",
            (list(database.PRIVATE_SCHEMAS), throwaway_role),
        ).fetchone()
    assert attributes == (False, False, False, False, None)
    assert login_attributes == (
        True,
        False,
        False,
        False,
        ["default_transaction_read_only=on", "statement_timeout=30s"],
    )
    assert schemas == {"analytics": (True, False)} | dict.fromkeys(
        database.PRIVATE_SCHEMAS, (False, False)
    )
    assert private_relations_with_any_privilege == (0,)
    assert stored_password is not None
    assert stored_password[0].startswith(("SCRAM-SHA-256$", "md5"))  # hashed by the client
    assert CLEAR_TEXT not in stored_password[0]


def test_ensure_reader_role_refuses_a_name_dbt_would_have_to_quote() -> None:
    with pytest.raises(ValueError, match="lowercase Postgres identifier"):
        database.ensure_reader_role(
            "postgresql://unused", _reader_role('Reader"; drop table x; --')
        )


def test_ensure_reader_role_refuses_an_existing_role_with_more_power(
    database_url: str, throwaway_role: str
) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f"create role {throwaway_role} login createdb")
    with pytest.raises(RuntimeError, match="must not have"):
        database.ensure_reader_role(database_url, _reader_role(throwaway_role))
