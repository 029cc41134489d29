"""Ingestion into real Postgres: every row ends valid or quarantined with its reasons, and a
partition is replaced whole, in one transaction."""

from __future__ import annotations

import codecs
from datetime import date
from pathlib import Path

import pandas as pd
import psycopg
import pytest

from retention_pipelines.core.ingestion import check_landing_file, read_validated_chunks
from retention_pipelines.core.warehouse.raw import (
    IngestionSummary,
    partition_counts,
    replace_snapshot_partition,
)
from retention_pipelines_tests.landing_files import customer, write_rows

DAY = date(2026, 1, 15)


def ingest(
    url: str, path: Path, day: date = DAY, chunk_rows: int = 1_000, **kwargs
) -> IngestionSummary:
    facts = check_landing_file(path, max_bytes=10**9)
    return replace_snapshot_partition(
        url,
        snapshot_date=day,
        facts=facts,
        chunks=read_validated_chunks(path, chunk_rows=chunk_rows),
        **kwargs,
    )


def rejects_by_row(url: str, day: date = DAY) -> dict[int, list[str]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "select row_number, reasons from raw.customer_rejects where snapshot_date = %s",
            (day,),
        ).fetchall()
    return {int(row_number): list(reasons) for row_number, reasons in rows}


def valid_ids(url: str, day: date = DAY) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "select customer_id from raw.customer_snapshots where snapshot_date = %s", (day,)
        ).fetchall()
    return {row[0] for row in rows}


def test_the_real_telco_file_loads_whole_with_blank_total_charges_as_zero(
    database_url: str, telco_csv: Path
) -> None:
    summary = ingest(database_url, telco_csv, chunk_rows=2_000)
    source = pd.read_csv(telco_csv, dtype=str, keep_default_na=False)
    assert (summary.rows_read, summary.rows_valid, summary.rows_rejected) == (5_634, 5_634, 0)
    with psycopg.connect(database_url) as conn:
        zero_totals = conn.execute(
            "select count(*) from raw.customer_snapshots where tenure = 0 and total_charges = 0"
        ).fetchone()
        churn_rate = conn.execute(
            "select avg((churn = 'Yes')::int) from raw.customer_snapshots"
        ).fetchone()
    assert zero_totals == (11,)
    assert float(churn_rate[0]) == pytest.approx((source["Churn"] == "Yes").mean())


def test_each_bad_row_is_quarantined_with_every_reason(database_url: str, tmp_path: Path) -> None:
    rows = [
        customer(1),  # 1 valid
        customer(2, TotalCharges=" ", tenure="5"),  # 2 blank total with tenure > 0
        customer(3, InternetService="Satellite"),  # 3 unknown category
        customer(4, gender="  female ", Partner="YES", Contract="month-to-month"),  # 4 variants
        customer(5, tenure="-3"),  # 5 negative tenure
        customer(6, MonthlyCharges="12,50", TotalCharges="abc"),  # 6 non-numeric charges
        customer(7, Churn="Maybe"),  # 7 bad label
        customer(8, customerID="1234-ABCDE'; DROP TABLE raw.customer_snapshots; --"),  # 8 sql
        customer(9, PaymentMethod='=HYPERLINK("http://x","pay")'),  # 9 formula-looking text
        customer(10, PhoneService="No", MultipleLines="Yes"),  # 10 cross-field rule
        [*customer(11).values(), "surplus"],  # 11 ragged row
        customer(12, TotalCharges="", tenure="0"),  # 12 new customer: total 0, valid
        customer(13, Churn=""),  # 13 label unknown: valid
    ]
    summary = ingest(database_url, write_rows(tmp_path / "bad.csv", rows), chunk_rows=4)
    reasons = rejects_by_row(database_url)
    assert set(reasons) == {2, 3, 5, 6, 7, 8, 9, 10, 11}
    assert reasons[2] == ["TotalCharges: blank but tenure is 5 months (blank is only allowed at 0)"]
    assert reasons[3] == ["InternetService: 'Satellite' is not one of: DSL, Fiber optic, No"]
    assert reasons[5] == ["tenure: -3 is outside the allowed range 0..120"]
    assert sorted(reasons[6]) == [
        "MonthlyCharges: '12,50' is not a number",
        "TotalCharges: 'abc' is not a number",
    ]
    assert reasons[7] == ["Churn: 'Maybe' is not one of: Yes, No"]
    assert reasons[8][0].startswith("customerID: ") and "is not a customer id" in reasons[8][0]
    assert reasons[9][0].startswith("PaymentMethod: '=HYPERLINK")
    assert reasons[10] == [
        "rule broken: MultipleLines is 'No phone service' exactly when PhoneService is No"
    ]
    assert reasons[11] == ["fields: the row has 22 fields; the header has 21"]
    assert valid_ids(database_url) == {customer(n)["customerID"] for n in (1, 4, 12, 13)}
    assert (summary.rows_read, summary.rows_valid, summary.rows_rejected) == (13, 4, 9)
    assert summary.reconciles


def test_case_and_whitespace_variants_are_stored_in_canonical_spelling(
    database_url: str, tmp_path: Path
) -> None:
    row = customer(4, gender="  female ", Partner="YES", Contract="month-to-month",
                   InternetService="fiber  optic", Churn="n")  # fmt: skip
    ingest(database_url, write_rows(tmp_path / "variants.csv", [row]))
    with psycopg.connect(database_url) as conn:
        stored = conn.execute(
            "select gender, partner, contract, internet_service, churn from raw.customer_snapshots"
        ).fetchone()
    assert stored == ("Female", "Yes", "Month-to-month", "Fiber optic", "No")


def test_the_raw_record_is_kept_exactly_as_read(database_url: str, tmp_path: Path) -> None:
    row = customer(5, tenure=" -3 ", gender="femme")
    ingest(database_url, write_rows(tmp_path / "raw.csv", [row]))
    with psycopg.connect(database_url) as conn:
        record = conn.execute("select record from raw.customer_rejects").fetchone()[0]
    assert record == row


def test_exact_duplicates_collapse_and_conflicting_duplicates_are_all_rejected(
    database_url: str, tmp_path: Path
) -> None:
    rows = [
        customer(1),
        customer(1),  # exact duplicate: collapses into row 1
        customer(1, gender=" Female "),  # same after normalization: collapses too
        customer(2, tenure="10"),
        customer(2, tenure="11"),  # conflict: both rows of 0002 rejected
        customer(3),
        customer(3, tenure="-1"),  # one copy invalid: the id conflicts, both rejected
    ]
    summary = ingest(database_url, write_rows(tmp_path / "dups.csv", rows), chunk_rows=2)
    reasons = rejects_by_row(database_url)
    assert valid_ids(database_url) == {customer(1)["customerID"]}
    assert set(reasons) == {4, 5, 6, 7}
    conflict = "appears in more than one row with different values"
    assert all(any(conflict in reason for reason in reasons[row]) for row in (4, 5, 6, 7))
    assert "tenure: -1 is outside the allowed range 0..120" in reasons[7]
    with psycopg.connect(database_url) as conn:
        record = conn.execute("select record from raw.customer_rejects where row_number = 5")
        assert record.fetchone()[0] == customer(2, tenure="11")
    assert (summary.rows_valid, summary.rows_rejected, summary.duplicates_collapsed) == (1, 4, 2)
    assert summary.rows_read == 7 and summary.reconciles


def test_a_bom_file_loads_like_any_other(database_url: str, tmp_path: Path) -> None:
    path = write_rows(tmp_path / "bom.csv", [customer(1), customer(2)])
    path.write_bytes(codecs.BOM_UTF8 + path.read_bytes())
    assert ingest(database_url, path).rows_valid == 2


def test_rerunning_a_partition_replaces_it_and_leaves_other_days_alone(
    database_url: str, tmp_path: Path
) -> None:
    first = write_rows(tmp_path / "a.csv", [customer(n) for n in range(1, 6)])
    second = write_rows(tmp_path / "b.csv", [customer(n) for n in range(10, 13)])
    ingest(database_url, first, day=date(2026, 1, 14))
    ingest(database_url, first)
    ingest(database_url, first)
    assert len(valid_ids(database_url)) == 5
    ingest(database_url, second)
    assert valid_ids(database_url) == {customer(n)["customerID"] for n in range(10, 13)}
    assert len(valid_ids(database_url, date(2026, 1, 14))) == 5
    counts = partition_counts(database_url, DAY)
    assert counts is not None and counts.rows_read == 3 and counts.reconciles


def test_a_failure_before_commit_leaves_the_previous_partition_intact(
    database_url: str, tmp_path: Path
) -> None:
    old = write_rows(tmp_path / "old.csv", [customer(n) for n in range(1, 4)])
    new = write_rows(
        tmp_path / "new.csv", [customer(n) for n in range(20, 30)] + [customer(99, tenure="x")]
    )
    ingest(database_url, old)

    def crash(conn: psycopg.Connection) -> None:
        raise RuntimeError("worker died after the COPY")

    with pytest.raises(RuntimeError, match="worker died"):
        ingest(database_url, new, before_commit=crash)
    assert valid_ids(database_url) == {customer(n)["customerID"] for n in range(1, 4)}
    assert rejects_by_row(database_url) == {}
    counts = partition_counts(database_url, DAY)
    assert counts is not None and counts.rows_read == 3
