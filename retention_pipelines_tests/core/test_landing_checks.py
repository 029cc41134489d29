"""File-level faults fail fast, naming the file and the rule, before any row is read."""

from __future__ import annotations

import codecs
from pathlib import Path

import pytest

from retention_pipelines.core.ingestion import LandingFileError, check_landing_file
from retention_pipelines.core.schemas import TELCO_COLUMNS
from retention_pipelines_tests.landing_files import customer, write_rows

LIMIT = 10_000_000


def _rule_of(path: Path, *, max_bytes: int = LIMIT) -> str:
    with pytest.raises(LandingFileError) as raised:
        check_landing_file(path, max_bytes=max_bytes)
    assert str(path) in str(raised.value)
    return raised.value.rule


def test_a_missing_file_names_the_expected_path(tmp_path: Path) -> None:
    assert _rule_of(tmp_path / "customers_2026-01-01.csv") == "missing file"


def test_an_empty_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_bytes(b"")
    assert _rule_of(path) == "empty file"


def test_a_header_only_file_is_refused(tmp_path: Path) -> None:
    assert _rule_of(write_rows(tmp_path / "header.csv", [])) == "header only"


def test_missing_and_unexpected_columns_are_both_listed(tmp_path: Path) -> None:
    header = [c for c in TELCO_COLUMNS if c != "Contract"] + ["LoyaltyPoints"]
    path = write_rows(tmp_path / "cols.csv", [customer(1)], header=header)
    with pytest.raises(LandingFileError) as raised:
        check_landing_file(path, max_bytes=LIMIT)
    assert "missing columns: ['Contract']" in str(raised.value)
    assert "unexpected columns: ['LoyaltyPoints']" in str(raised.value)


def test_an_extra_column_alone_is_refused(tmp_path: Path) -> None:
    path = write_rows(tmp_path / "extra.csv", [customer(1)], header=[*TELCO_COLUMNS, "Notes"])
    assert _rule_of(path) == "header does not match the Telco columns"


def test_latin1_bytes_are_refused_with_their_offset(tmp_path: Path) -> None:
    path = write_rows(tmp_path / "latin1.csv", [customer(1, gender="Femâle")], encoding="latin-1")
    with pytest.raises(LandingFileError, match=r"not valid UTF-8: undecodable byte b'\\xe2'"):
        check_landing_file(path, max_bytes=LIMIT)


def test_a_utf8_bom_is_accepted(tmp_path: Path) -> None:
    path = write_rows(tmp_path / "bom.csv", [customer(1)])
    path.write_bytes(codecs.BOM_UTF8 + path.read_bytes())
    facts = check_landing_file(path, max_bytes=LIMIT)
    assert facts.has_bom


def test_a_file_over_the_size_limit_is_refused(tmp_path: Path) -> None:
    path = write_rows(tmp_path / "big.csv", [customer(n) for n in range(50)])
    assert _rule_of(path, max_bytes=1_000) == "file too large"
