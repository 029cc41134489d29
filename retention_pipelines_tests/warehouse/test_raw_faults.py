"""Faults inside a landing file's lines: each is one quarantined row with its reason, the
rest of the day is ingested, and every physical data line is accounted for."""

from __future__ import annotations

import itertools
from datetime import date, timedelta
from pathlib import Path

import psycopg
import pytest

from retention_pipelines.core.ingestion import LandingFormat
from retention_pipelines.core.schemas import TELCO_COLUMNS
from retention_pipelines.core.warehouse.raw import IngestionSummary, partition_counts
from retention_pipelines_tests.landing_files import customer, write_rows
from retention_pipelines_tests.warehouse.test_raw import ingest, rejects_by_row, valid_ids

_DAYS = (date(2026, 2, 1) + timedelta(days=offset) for offset in itertools.count())


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def _rewrite(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _ingest(url: str, path: Path, **kwargs: object) -> tuple[date, IngestionSummary]:
    day = next(_DAYS)
    summary = ingest(url, path, day=day, **kwargs)
    counts = partition_counts(url, day)
    assert counts is not None and counts.reconciles and counts.rows_read == summary.rows_read
    return day, summary


def test_a_stray_quote_rejects_its_own_line_and_no_customer_is_folded(
    module_database_url: str, tmp_path: Path
) -> None:
    path = write_rows(tmp_path / "quote.csv", [customer(n) for n in range(1, 101)])
    lines = _lines(path)
    lines[51] = lines[51].replace(",Female,", ',"Female,', 1)  # row 51 opens a quote
    day, summary = _ingest(module_database_url, _rewrite(path, lines))
    assert (summary.rows_read, summary.rows_valid, summary.rows_rejected) == (100, 99, 1)
    assert rejects_by_row(module_database_url, day) == {
        51: ["line: unterminated quote starting at line 52"]
    }
    assert customer(52)["customerID"] in valid_ids(module_database_url, day)


def test_a_field_with_a_line_break_inside_quotes_is_two_rejected_lines(
    module_database_url: str, tmp_path: Path
) -> None:
    rows = [customer(1), customer(2, PaymentMethod="Electronic\ncheck"), customer(3)]
    day, summary = _ingest(module_database_url, write_rows(tmp_path / "break.csv", rows))
    assert (summary.rows_read, summary.rows_valid, summary.rows_rejected) == (4, 2, 2)
    reasons = rejects_by_row(module_database_url, day)
    assert reasons[2] == ["line: unterminated quote starting at line 3"]
    assert reasons[3][0].startswith("fields: the row has")


@pytest.mark.parametrize("value", ["inf", "-Infinity", "1e12", "NaN123", "1e400"])
def test_numbers_out_of_range_or_not_finite_are_row_rejects(
    module_database_url: str, tmp_path: Path, value: str
) -> None:
    rows = [customer(1), customer(2, MonthlyCharges=value), customer(3, TotalCharges=value)]
    day, summary = _ingest(module_database_url, write_rows(tmp_path / "n.csv", rows))
    assert (summary.rows_valid, summary.rows_rejected) == (1, 2)
    reasons = rejects_by_row(module_database_url, day)
    assert reasons[2][0].startswith("MonthlyCharges: ")
    assert reasons[3][0].startswith("TotalCharges: ")


def test_non_finite_and_huge_numbers_say_why(module_database_url: str, tmp_path: Path) -> None:
    rows = [
        customer(1, MonthlyCharges="inf"),
        customer(2, MonthlyCharges="1e12"),
        customer(3, tenure="1e30"),
        customer(4, SeniorCitizen="-1e300"),
    ]
    day, _ = _ingest(module_database_url, write_rows(tmp_path / "n.csv", rows))
    assert rejects_by_row(module_database_url, day) == {
        1: ["MonthlyCharges: 'inf' is not a finite number"],
        2: ["MonthlyCharges: 1000000000000 is outside the allowed range 0..99999999.99"],
        3: ["tenure: 1e+30 is outside the allowed range 0..120"],
        4: ["SeniorCitizen: -1e+300 is outside the allowed range 0..1"],
    }


def test_a_control_character_rejects_its_row_and_is_stored_visibly(
    module_database_url: str, tmp_path: Path
) -> None:
    rows = [customer(1), customer(2, gender="Fe\x00male"), customer(3, Contract="One\x1byear")]
    day, summary = _ingest(module_database_url, write_rows(tmp_path / "nul.csv", rows))
    assert (summary.rows_valid, summary.rows_rejected) == (1, 2)
    assert rejects_by_row(module_database_url, day) == {
        2: ["gender: control character '\\x00' in the field"],
        3: ["Contract: control character '\\x1b' in the field"],
    }
    with psycopg.connect(module_database_url) as conn:
        record = conn.execute(
            "select record from raw.customer_rejects where snapshot_date = %s and row_number = 2",
            (day,),
        ).fetchone()[0]
    assert record["gender"] == "Fe\\x00male"


def test_an_over_long_field_is_a_row_reject_and_the_day_goes_on(
    module_database_url: str, tmp_path: Path
) -> None:
    rows = [
        customer(1),
        customer(2, PaymentMethod="x" * 200_000),
        customer(3, PaymentMethod="x," * 100_000),  # quoted: over the csv module's own limit
        customer(4),
    ]
    day, summary = _ingest(module_database_url, write_rows(tmp_path / "long.csv", rows))
    assert (summary.rows_valid, summary.rows_rejected) == (2, 2)
    assert rejects_by_row(module_database_url, day) == {
        2: ["PaymentMethod: the value has 200,000 characters, over 4,096"],
        3: ["line: a field of line 4 is over 131,072 characters"],
    }
    path = write_rows(tmp_path / "long2.csv", [customer(1), customer(2, gender="y" * 5_000)])
    day, summary = _ingest(module_database_url, path)
    assert rejects_by_row(module_database_url, day) == {
        2: ["gender: the value has 5,000 characters, over 4,096"]
    }
    with psycopg.connect(module_database_url) as conn:
        record = conn.execute(
            "select record from raw.customer_rejects where snapshot_date = %s", (day,)
        ).fetchone()[0]
    assert record["gender"].endswith("… (5,000 characters)") and len(record["gender"]) < 1_100


def test_blank_lines_are_counted_and_row_numbers_are_line_numbers_minus_one(
    module_database_url: str, tmp_path: Path
) -> None:
    path = write_rows(tmp_path / "blank.csv", [customer(1), customer(2, tenure="x")])
    header, first, second = _lines(path)
    day, summary = _ingest(module_database_url, _rewrite(path, [header, "", first, "  ", second]))
    assert (summary.rows_read, summary.blank_lines, summary.rows_rejected) == (2, 2, 1)
    assert list(rejects_by_row(module_database_url, day)) == [4]


def test_a_semicolon_cp1252_gzip_file_loads_with_its_format(
    module_database_url: str, tmp_path: Path
) -> None:
    import gzip  # noqa: PLC0415

    path = tmp_path / "export.csv.gz"
    rows = [customer(1, gender="Female"), customer(2)]
    lines = [";".join(TELCO_COLUMNS), *(";".join(row.values()) for row in rows)]
    path.write_bytes(gzip.compress("\r\n".join(lines).encode("cp1252")))
    fmt = LandingFormat(encoding="cp1252", delimiter=";")
    day = next(_DAYS)
    from retention_pipelines.core.ingestion import (  # noqa: PLC0415
        check_landing_file,
        read_validated_chunks,
    )
    from retention_pipelines.core.warehouse.raw import replace_snapshot_partition  # noqa: PLC0415

    summary = replace_snapshot_partition(
        module_database_url,
        snapshot_date=day,
        facts=check_landing_file(path, max_bytes=10**9, fmt=fmt),
        chunks=read_validated_chunks(path, chunk_rows=10, fmt=fmt),
    )
    assert (summary.rows_read, summary.rows_valid) == (2, 2)
