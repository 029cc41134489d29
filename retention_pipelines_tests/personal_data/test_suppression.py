"""An erased customer stays erased: the upstream export still holds them, and every ingestion
of it, through the real asset with the real dbt build after it, leaves them out (counted, the
reconciliation intact) until the suppression is lifted. The list holds a full pseudonym, no
id; an empty list costs nothing."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import psycopg
import pytest
from dagster_dbt import DbtCliResource
from psycopg import sql
from typer.testing import CliRunner

from retention_pipelines import cli
from retention_pipelines.assets.features import retention_dbt_models, retention_dbt_project
from retention_pipelines.assets.ingestion import RECONCILE_CHECK, raw_customer_snapshot
from retention_pipelines.core import audit, erasure, pseudonyms
from retention_pipelines.core.ingestion import (
    Suppression,
    SuppressionKeyError,
    ValidatedChunk,
    check_landing_file,
    landing_file_name,
    pseudonym_digests,
    read_validated_chunks,
)
from retention_pipelines.core.warehouse.raw import partition_counts, replace_snapshot_partition
from retention_pipelines.resources import LandingResource, WarehouseResource, dbt_executable
from retention_pipelines.settings import get_settings
from retention_pipelines_tests.helpers import TELCO_DAY
from retention_pipelines_tests.landing_files import customer, write_rows

pytestmark = pytest.mark.slow  # the Telco snapshot ingested and built by dbt three times
DAY = date.fromisoformat(TELCO_DAY)
LATER = DAY + timedelta(days=1)
TEXT_TYPES = ("text", "character varying", "character", "jsonb", "json", "ARRAY")


def _materialize(url: str, landing: Path, day: date, *assets: Any) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        list(assets) or [raw_customer_snapshot, retention_dbt_models],
        partition_key=day.isoformat(),
        resources={
            "warehouse": WarehouseResource(database_url=url),
            "landing": LandingResource(landing_dir=str(landing), max_reject_share=0.5),
            "dbt": DbtCliResource(
                project_dir=retention_dbt_project, dbt_executable=dbt_executable()
            ),
        },
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
    )


def _ingested(result: dg.ExecuteInProcessResult) -> dict[str, Any]:
    """The ingestion's metadata and its reconciliation check's, after a run that passed."""
    assert result.success
    checks = result.get_asset_check_evaluations()
    assert checks and all(check.passed for check in checks), [
        check.check_name for check in checks if not check.passed
    ]
    [reconcile] = [check for check in checks if check.check_name == RECONCILE_CHECK]
    metadata = result.asset_materializations_for_node("raw_customer_snapshot")[0].metadata
    return {
        **{name: value.value for name, value in metadata.items()},
        "check": {name: value.value for name, value in reconcile.metadata.items()},
    }


def _land(source: Path, landing: Path, day: date) -> None:
    landing.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, landing / landing_file_name(day))


def _mentions(url: str, text: str) -> dict[str, int]:
    """Rows of every table and view with a text-like column holding ``text`` (any case)."""
    found: dict[str, int] = {}
    with psycopg.connect(url) as conn:
        columns = conn.execute(
            "select table_schema, table_name, column_name from information_schema.columns"
            " where table_schema not in ('pg_catalog', 'information_schema')"
            " and data_type = any(%s)",
            (list(TEXT_TYPES),),
        ).fetchall()
        for schema, table, column in columns:
            query = sql.SQL("select count(*) from {} where {}::text ilike %s").format(
                sql.Identifier(schema, table), sql.Identifier(column)
            )
            count = int(conn.execute(query, (f"%{text}%",)).fetchone()[0])  # type: ignore[index]
            if count:
                found[f"{schema}.{table}.{column}"] = count
    return found


def _ids(url: str, table: str, day: date) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            sql.SQL("select customer_id from {} where snapshot_date = %s").format(
                sql.Identifier(*table.split("."))
            ),
            (day,),
        )
        return {str(row[0]) for row in rows}


def _listed(url: str) -> list[tuple[str, int]]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "select pseudonym, audit_id from ops.erased_customers order by erased_at"
        ).fetchall()


@pytest.fixture(scope="module")
def landing(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("landing")


@pytest.fixture(scope="module")
def warehouse(module_database_url: str, telco_csv: Path, landing: Path) -> str:
    """The Telco export landed for ``DAY`` and built as the nightly job builds it."""
    _land(telco_csv, landing, DAY)
    assert _ingested(_materialize(module_database_url, landing, DAY))["rows_suppressed"] == 0
    return module_database_url


@pytest.fixture(scope="module")
def telco_ids(telco_csv: Path) -> list[str]:
    return sorted(pd.read_csv(telco_csv, usecols=["customerID"])["customerID"])


@pytest.fixture
def platform_env(warehouse: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[bytes]:
    """``retention`` pointed at the warehouse; yields the pseudonym key it uses."""
    monkeypatch.setenv("RETENTION_DATABASE_URL", warehouse)
    monkeypatch.setattr(cli.console, "_width", 250)
    get_settings.cache_clear()
    yield pseudonyms.pseudonym_key(get_settings())
    get_settings.cache_clear()


def test_an_erased_customer_stays_out_of_the_same_export_and_of_a_later_one(
    warehouse: str, landing: Path, telco_csv: Path, telco_ids: list[str], platform_env: bytes
) -> None:
    url, key, gone = warehouse, platform_env, telco_ids[0]
    forgotten = CliRunner().invoke(cli.app, ["forget", gone, "--reason", "erasure request #1"])
    assert forgotten.exit_code == 0, forgotten.output
    assert "ingestion leaves the customer out" in forgotten.output
    [entry] = audit.entries(url, kind="erasure")
    # The list holds the full pseudonym (not the shown prefix), tied to the erasure's entry.
    assert _listed(url) == [(pseudonyms.pseudonym(gone, key), entry.audit_id)]
    assert entry.subject == pseudonyms.display(gone, key)

    _land(telco_csv, landing, LATER)
    for day in (DAY, LATER):
        ingested = _ingested(_materialize(url, landing, day))  # the dbt build passes too
        assert (ingested["rows_read"], ingested["rows_valid"]) == (5_634, 5_633)
        assert (ingested["rows_rejected"], ingested["rows_suppressed"]) == (0, 1)
        assert ingested["check"]["rows_suppressed"] == 1
        counts = partition_counts(url, day)
        assert counts is not None and counts.reconciles and counts.rows_suppressed == 1
        others = set(telco_ids) - {gone}
        assert _ids(url, "raw.customer_snapshots", day) == others
        assert _ids(url, "features.customer_features", day) == others
    assert _mentions(url, gone) == {}


def test_their_rows_that_fail_validation_are_left_out_too_never_quarantined(
    warehouse: str, landing: Path, telco_ids: list[str], tmp_path: Path
) -> None:
    """A reject stores the record as read: the erased customer's id, in a bad row, in a line
    that cannot be split, or in a wrong case, would be stored again."""
    gone, day = telco_ids[0], DAY + timedelta(days=2)
    rows: list[dict[str, str] | list[str]] = [customer(n) for n in range(1, 6)]
    rows += [
        customer(0, customerID=gone, tenure="many"),
        [gone, "Female", "0"],
        customer(0, customerID=f" {gone.lower()} "),
        customer(7, MonthlyCharges="abc"),  # somebody else's reject: kept
    ]
    write_rows(landing / landing_file_name(day), rows)

    ingested = _ingested(_materialize(warehouse, landing, day, raw_customer_snapshot))

    assert (ingested["rows_read"], ingested["rows_valid"], ingested["rows_rejected"]) == (9, 5, 1)
    assert ingested["rows_suppressed"] == 3
    assert _ids(warehouse, "raw.customer_rejects", day) == {customer(7)["customerID"]}
    assert _mentions(warehouse, gone) == {}


def test_forgetting_again_says_already_erased_and_records_nothing(
    warehouse: str, telco_ids: list[str], platform_env: bytes
) -> None:
    listed, last = _listed(warehouse), audit.entries(warehouse)

    again = CliRunner().invoke(cli.app, ["forget", telco_ids[0], "--reason", "asked twice"])
    unknown = CliRunner().invoke(cli.app, ["forget", "0000-NOONE", "--reason", "typo"])

    assert again.exit_code == 0, again.output
    assert "already erased" in again.output and telco_ids[0] not in again.output
    assert unknown.exit_code == 1 and "no warehouse table holds that customer" in unknown.output
    assert _listed(warehouse) == listed
    assert audit.entries(warehouse) == last


def test_without_the_key_an_ingestion_is_refused_while_customers_are_listed(
    warehouse: str, telco_csv: Path
) -> None:
    before = partition_counts(warehouse, DAY)
    with pytest.raises(
        SuppressionKeyError,
        match="the suppression list holds 1 erased customer and no pseudonym key",
    ):
        replace_snapshot_partition(
            warehouse,
            snapshot_date=DAY,
            facts=check_landing_file(telco_csv, max_bytes=10**9),
            chunks=read_validated_chunks(telco_csv, chunk_rows=10_000),
        )
    assert partition_counts(warehouse, DAY) == before


def test_an_erasure_during_an_ingestion_waits_for_it_and_removes_what_it_wrote(
    warehouse: str, tmp_path: Path
) -> None:
    """The erasure takes the suppression list first, as ingestion does: it cannot slip in
    between the ingestion reading the list and writing the partition."""
    key, who = b"k" * 32, customer(42)["customerID"]
    path = write_rows(tmp_path / "export.csv", [customer(n) for n in range(1, 51)])
    first, second = DAY + timedelta(days=3), DAY + timedelta(days=4)

    def ingest(day: date, on_chunk: Any = None) -> Any:
        return replace_snapshot_partition(
            warehouse,
            snapshot_date=day,
            facts=check_landing_file(path, max_bytes=10**9),
            chunks=read_validated_chunks(path, chunk_rows=10),
            on_chunk=on_chunk,
            pseudonym_key=key,
        )

    ingest(first)
    erased: list[erasure.Erasure] = []
    forget = threading.Thread(
        target=lambda: erased.append(
            erasure.forget_customer(warehouse, who, reason="test", actor="pytest", key=key)
        )
    )

    def erase_midway(rows: int) -> None:
        if rows == 10:
            forget.start()
            _wait_for_a_lock_wait(warehouse)

    assert ingest(second, on_chunk=erase_midway).rows_suppressed == 0  # listed after its read
    forget.join(timeout=30)
    assert erased and erased[0].rows == {"raw.customer_snapshots": 2}
    assert who not in _ids(warehouse, "raw.customer_snapshots", first)
    assert who not in _ids(warehouse, "raw.customer_snapshots", second)
    assert ingest(second).rows_suppressed == 1


def _wait_for_a_lock_wait(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for _ in range(200):
            waiting = conn.execute(
                "select count(*) from pg_stat_activity where datname = current_database()"
                " and wait_event_type = 'Lock' and query ilike 'lock table%erased_customers%'"
            ).fetchone()
            if waiting and waiting[0]:
                return
            time.sleep(0.05)
    pytest.fail("the erasure did not wait for the ingestion's lock on the suppression list")


def test_lifting_the_suppression_lets_the_customer_in_again_and_is_audited(
    warehouse: str, landing: Path, telco_ids: list[str], platform_env: bytes
) -> None:
    url, key, gone = warehouse, platform_env, telco_ids[0]
    [erasure_entry] = [e for e in audit.entries(url, kind="erasure") if e.actor != "pytest"]
    runner = CliRunner()

    lifted = runner.invoke(
        cli.app, ["forget", "--allow-again", gone, "--reason", f"{gone} signed up again"]
    )
    twice = runner.invoke(cli.app, ["forget", "--allow-again", gone, "--reason", "again"])

    assert lifted.exit_code == 0, lifted.output
    assert "off the suppression list" in lifted.output and gone not in lifted.output
    assert twice.exit_code == 1 and "not on the suppression list" in twice.output
    shown = pseudonyms.display(gone, key)
    [entry] = audit.entries(url, kind="erasure_lifted")
    assert (entry.subject, entry.actor) == (shown, audit.cli_actor())
    assert entry.reason == f"[customer {shown}] signed up again"
    assert entry.details["erasure_audit_id"] == erasure_entry.audit_id
    assert pseudonyms.pseudonym(gone, key) not in {row[0] for row in _listed(url)}

    ingested = _ingested(_materialize(url, landing, DAY, raw_customer_snapshot))
    assert (ingested["rows_valid"], ingested["rows_suppressed"]) == (5_634, 0)
    assert gone in _ids(url, "raw.customer_snapshots", DAY)


def test_an_empty_list_computes_no_pseudonym_and_needs_no_key(
    database_url: str, telco_csv: Path
) -> None:
    chunk = next(read_validated_chunks(telco_csv, chunk_rows=100))
    kept, dropped = Suppression().drop(chunk)
    assert kept is chunk and dropped == 0

    summary = replace_snapshot_partition(  # no key: none could be computed
        database_url,
        snapshot_date=DAY,
        facts=check_landing_file(telco_csv, max_bytes=10**9),
        chunks=read_validated_chunks(telco_csv, chunk_rows=10_000),
    )
    assert (summary.rows_valid, summary.rows_suppressed) == (5_634, 0) and summary.reconciles


def test_a_listed_customer_leaves_a_chunk_and_the_others_stay() -> None:
    key = b"k" * 20
    chunk = ValidatedChunk(
        valid=pd.DataFrame({"customer_id": pd.array(["1111-AAAAA", "2222-BBBBB"], "string")}),
        rejects=pd.DataFrame(
            {
                "row_number": [3, 4],
                "customer_id": [None, "3333-CCCCC"],
                "record": ['{"line": "x,1111-aaaaa"}', '{"customerID": "3333-CCCCC"}'],
                "reasons": [["line: bad"], ["tenure: bad"]],
            }
        ),
        rows_read=4,
    )
    kept, dropped = Suppression(frozenset({pseudonyms.pseudonym("1111-AAAAA", key)}), key).drop(
        chunk
    )
    assert dropped == 2 and kept.rows_read == 4
    assert kept.valid["customer_id"].tolist() == ["2222-BBBBB"]
    assert kept.rejects["customer_id"].tolist() == ["3333-CCCCC"]


@pytest.mark.parametrize("length", [16, 64, 65, 200])
def test_the_fast_pseudonyms_are_the_pseudonyms(length: int) -> None:
    key = bytes(range(256))[:length]
    ids = ["7590-VHVEG", "", "ünïcode", "x" * 100]
    assert [digest.hex() for digest in pseudonym_digests(ids, key)] == [
        pseudonyms.pseudonym(customer_id, key) for customer_id in ids
    ]


def test_the_runs_table_refuses_counts_that_do_not_add_up(database_url: str) -> None:
    insert = (
        "insert into raw.ingestion_runs (snapshot_date, source, file_sha256, file_bytes,"
        " rows_read, rows_valid, rows_rejected, duplicates_collapsed, rows_suppressed)"
        " values (%s, 'f.csv', 'x', 1, 10, 7, 1, 1, %s)"
    )
    with psycopg.connect(database_url) as conn:
        conn.execute(insert, (DAY, 1))
    with pytest.raises(psycopg.errors.CheckViolation), psycopg.connect(database_url) as conn:
        conn.execute(insert, (LATER, 0))
