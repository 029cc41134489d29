"""Erasure on a warehouse built from the Telco data by the real dbt project, with scores, the
call list, an answer of the API, a CRM task and quarantined rows of one customer: afterwards
no column of any table or view in the warehouse holds their id, the other customers are as
they were, and the audit log names the erasure by pseudonym."""

from __future__ import annotations

import csv
import json
import stat
import uuid
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import dagster as dg
import psycopg
import pytest
from dagster_dbt import DbtCliResource
from psycopg import sql
from typer.testing import CliRunner

from retention_pipelines import cli
from retention_pipelines.assets.features import retention_dbt_analytics, retention_dbt_project
from retention_pipelines.core import audit, crm, erasure, pseudonyms
from retention_pipelines.resources import WarehouseResource, dbt_executable
from retention_pipelines.settings import get_settings
from retention_pipelines_tests.helpers import TELCO_DAY

pytestmark = pytest.mark.slow  # the Telco snapshot and the analytics tables through dbt
DAY = date.fromisoformat(TELCO_DAY)
# Every column type that can hold text, searched for the id after the erasure.
TEXT_TYPES = ("text", "character varying", "character", "jsonb", "json", "ARRAY")


def _build_analytics(url: str) -> None:
    result = dg.materialize(
        [retention_dbt_analytics],
        partition_key=TELCO_DAY,
        resources={
            "warehouse": WarehouseResource(database_url=url),
            "dbt": DbtCliResource(
                project_dir=retention_dbt_project, dbt_executable=dbt_executable()
            ),
        },
        instance=dg.DagsterInstance.ephemeral(),
    )
    assert result.success


@pytest.fixture(scope="module")
def customers(telco_warehouse: str) -> tuple[str, str]:
    """The customer to erase and another one, with every customer scored, the call list
    built, and the first one also in the prediction log, the CRM outbox and quarantine
    (parsed, unparsed inside a raw line, and in another case inside a list of fields)."""
    url = telco_warehouse
    with psycopg.connect(url) as conn:
        gone, kept = [
            row[0]
            for row in conn.execute(
                "select customer_id from features.customer_features order by customer_id limit 2"
            )
        ]
        conn.execute(
            "insert into ml.churn_risk_scores select snapshot_date, customer_id, 0.7, 'high',"
            " 'Contract: Month-to-month', 0.8, 'Tenure: 2 months', 0.5,"
            " 'Internet service: Fiber optic', 0.3, 'churn-model', '1', now()"
            " from features.customer_features"
        )
        for who in (gone, kept):
            conn.execute(
                "insert into ml.prediction_log values (%s, 0, now(), %s, 'champion', true,"
                " 'churn-model', '1', 0.7, 'high', 3.0, null)",
                (uuid.uuid4(), who),
            )
            conn.execute(
                "insert into ml.crm_outbox (snapshot_date, customer_id, idempotency_key,"
                " handoff_reason, churn_probability, risk_band, monthly_charges,"
                " revenue_at_risk, priority, talking_points, model_name, model_version)"
                " values (%s, %s, %s, 'entered_high', 0.7, 'high', 50, 35, 1,"
                " '[\"Contract: Month-to-month\"]', 'churn-model', '1')",
                (DAY, who, f"{DAY}/{who}"),
            )
        rejects = [
            (who, {"customerID": who, "tenure": "-1"}, [f"tenure: -1 is below 0 for {who}"])
            for who in (gone, kept)
        ] + [
            (None, {"line": f"{gone},Female,0,Yes"}, ["the line has 4 fields, not 21"]),
            (None, {"fields": [f" {gone.lower()} ", "Male"]}, ["customerID: not an id"]),
        ]
        for number, (who, record, reasons) in enumerate(rejects, start=9001):
            conn.execute(
                "insert into raw.customer_rejects (snapshot_date, source, row_number,"
                " customer_id, record, reasons) values (%s, 'customers.csv', %s, %s, %s, %s)",
                (DAY, number, who, json.dumps(record), reasons),
            )
    _build_analytics(url)
    return gone, kept


def _mentions(url: str, customer_id: str) -> dict[str, int]:
    """Rows of every table and view of every schema with a text-like column holding the id."""
    found: dict[str, int] = {}
    with psycopg.connect(url) as conn:
        columns = conn.execute(
            "select table_schema, table_name, column_name from information_schema.columns"
            " where table_schema not in ('pg_catalog', 'information_schema')"
            " and data_type = any(%s) order by 1, 2, 3",
            (list(TEXT_TYPES),),
        ).fetchall()
        assert len({(schema, table) for schema, table, _ in columns}) > 15
        for schema, table, column in columns:
            query = sql.SQL("select count(*) from {} where {}::text ilike %s").format(
                sql.Identifier(schema, table), sql.Identifier(column)
            )
            count = conn.execute(query, (f"%{customer_id}%",)).fetchone()
            if count and count[0]:
                found[f"{schema}.{table}.{column}"] = int(count[0])
    return found


def _rows_of_others(url: str, customer_id: str) -> dict[str, int]:
    """Rows per table that are not the customer's (a quarantined row is theirs when its
    record mentions them)."""
    counts = {}
    with psycopg.connect(url) as conn:
        for table in erasure.customer_tables(conn):
            query = sql.SQL(
                "select count(*) from {} where customer_id is distinct from %(id)s"
            ).format(sql.Identifier(*table.split(".")))
            if table == "raw.customer_rejects":
                query += sql.SQL(" and record::text not ilike %(pattern)s")
            row = conn.execute(query, {"id": customer_id, "pattern": f"%{customer_id}%"})
            counts[table] = int(row.fetchone()[0])  # type: ignore[index]
    return counts


@pytest.fixture
def platform_env(telco_warehouse: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("RETENTION_DATABASE_URL", telco_warehouse)
    monkeypatch.setattr(cli.console, "_width", 250)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_forget_removes_the_customer_from_every_table_in_one_go_and_records_a_pseudonym(
    telco_warehouse: str, customers: tuple[str, str], platform_env: None
) -> None:
    url, (gone, kept) = telco_warehouse, customers
    shown = pseudonyms.display(gone, pseudonyms.pseudonym_key(get_settings()))
    before = _mentions(url, gone)
    others = _rows_of_others(url, gone)
    last = audit.entries(url)
    reason = f"GDPR request of {gone} by e-mail"

    result = CliRunner().invoke(cli.app, ["forget", gone, "--reason", reason])

    assert result.exit_code == 0, result.output
    assert gone not in result.output and shown in result.output
    # It was everywhere: raw, quarantine, features, scores, the call list and its views.
    for where in (
        "raw.customer_snapshots.customer_id",
        "raw.customer_rejects.record",
        "raw.customer_rejects.reasons",
        "staging.stg_customers.customer_id",
        "features.customer_features.customer_id",
        "ml.churn_risk_scores.customer_id",
        "ml.prediction_log.customer_id",
        "ml.crm_outbox.idempotency_key",
        "analytics.customer_risk_latest.customer_id",
        "analytics.customer_score_history.customer_id",
    ):
        assert before.get(where), where
    assert _mentions(url, gone) == {}
    assert _rows_of_others(url, gone) == others
    assert _mentions(url, kept)["analytics.customer_risk_latest.customer_id"] == 1

    [entry] = [e for e in audit.entries(url) if e not in last]
    assert (entry.kind, entry.subject, entry.actor) == ("erasure", shown, audit.cli_actor())
    assert entry.reason == f"GDPR request of [customer {shown}] by e-mail"
    assert entry.details["rows"]["raw.customer_rejects"] == 3  # parsed, in a line, in fields
    assert entry.details["rows"]["analytics.customer_risk_latest"] == 1
    assert set(entry.details["rows"]) == {
        "raw.customer_snapshots",
        "raw.customer_rejects",
        "features.customer_features",
        "ml.churn_risk_scores",
        "ml.prediction_log",
        "ml.crm_outbox",
        "analytics.customer_risk_latest",
    }
    assert entry.details["total"] == sum(entry.details["rows"].values())


def test_a_later_build_of_the_call_list_does_not_bring_them_back(
    telco_warehouse: str, customers: tuple[str, str]
) -> None:
    _build_analytics(telco_warehouse)
    assert _mentions(telco_warehouse, customers[0]) == {}


def test_an_unknown_or_already_erased_id_erases_nothing_says_so_and_records_nothing(
    telco_warehouse: str, customers: tuple[str, str], platform_env: None
) -> None:
    last = audit.entries(telco_warehouse)
    never_held = "0000-NOONE"
    unknown = CliRunner().invoke(cli.app, ["forget", never_held, "--reason", "typo"])
    blank = CliRunner().invoke(cli.app, ["forget", "  ", "--reason", "typo"])
    again = CliRunner().invoke(cli.app, ["forget", customers[0], "--reason", "twice"])

    assert unknown.exit_code == blank.exit_code == 1
    assert "no warehouse table holds that customer" in unknown.output
    assert never_held not in unknown.output
    assert "the customer id is empty" in blank.output
    # Erased before: on the suppression list, in no table. Nothing to do, and said so.
    assert again.exit_code == 0, again.output
    assert "already erased" in again.output and customers[0] not in again.output
    assert audit.entries(telco_warehouse) == last


def test_a_short_id_of_another_form_takes_only_rejects_that_hold_it_whole(
    telco_warehouse: str, customers: tuple[str, str]
) -> None:
    """An id unlike the platform's is no substring search of quarantine: "7" would match
    nearly every raw line."""
    with psycopg.connect(telco_warehouse) as conn:
        for number, record in enumerate(
            [{"customerID": " 7 "}, {"customerID": "17", "tenure": "7x"}], start=9101
        ):
            conn.execute(
                "insert into raw.customer_rejects (snapshot_date, source, row_number, record,"
                " reasons) values (%s, 'customers.csv', %s, %s, '{bad}')",
                (DAY, number, json.dumps(record)),
            )
    erased = erasure.forget_customer(
        telco_warehouse, "7", reason="test", actor="pytest", key=b"k" * 16
    )
    assert erased.rows == {"raw.customer_rejects": 1}
    with psycopg.connect(telco_warehouse) as conn:
        left = conn.execute(
            "select record from raw.customer_rejects where row_number >= 9101"
        ).fetchall()
    assert left == [({"customerID": "17", "tenure": "7x"},)]


def test_forget_rewrites_the_crm_hand_off_files_that_name_the_customer(
    telco_warehouse: str,
    platform_env: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with psycopg.connect(telco_warehouse) as conn:
        gone, kept = [
            row[0]
            for row in conn.execute(
                "select customer_id from features.customer_features"
                " order by customer_id offset 5 limit 2"
            )
        ]
    monkeypatch.setenv("RETENTION_REPORTS_DIR", str(tmp_path))
    get_settings.cache_clear()
    folder = tmp_path / "crm"
    folder.mkdir()
    position = crm.CSV_COLUMNS.index("customer_id")

    def task(customer: str) -> list[str]:
        return [customer if index == position else "x" for index in range(len(crm.CSV_COLUMNS))]

    naming = folder / "retention_tasks_2026-01-04.csv"
    other = folder / "retention_tasks_2026-01-05.csv"
    for path, rows in ((naming, [task(kept), task(gone)]), (other, [task(kept)])):
        with path.open("w", encoding="utf-8", newline="") as handle:
            csv.writer(handle).writerows([list(crm.CSV_COLUMNS), *rows])
    untouched = other.stat().st_mtime_ns

    result = CliRunner().invoke(cli.app, ["forget", gone, "--reason", "erasure request"])

    assert result.exit_code == 0, result.output
    assert naming.name in result.output and gone not in result.output
    with naming.open(encoding="utf-8", newline="") as handle:
        assert list(csv.reader(handle)) == [list(crm.CSV_COLUMNS), task(kept)]
    assert stat.S_IMODE(naming.stat().st_mode) == 0o600
    assert other.stat().st_mtime_ns == untouched
