"""File-level faults fail fast, naming the file and the rule, before any row is read."""

from __future__ import annotations

import codecs
import gzip
import os
from pathlib import Path

import pytest

from retention_pipelines.core.ingestion import LandingFileError, LandingFormat, check_landing_file
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


def test_cp1252_bytes_are_refused_with_their_line_and_the_likely_encoding(tmp_path: Path) -> None:
    rows = [customer(1), customer(2, gender="Femâle")]
    path = write_rows(tmp_path / "cp1252.csv", rows, encoding="cp1252")
    with pytest.raises(LandingFileError) as raised:
        check_landing_file(path, max_bytes=LIMIT)
    message = str(raised.value)
    assert "not valid UTF-8: undecodable byte b'\\xe2' on line 3" in message
    assert "--encoding cp1252" in message


def test_a_cp1252_file_is_read_in_its_declared_encoding(tmp_path: Path) -> None:
    path = write_rows(tmp_path / "cp1252.csv", [customer(1), customer(2)], encoding="cp1252")
    facts = check_landing_file(path, max_bytes=LIMIT, fmt=LandingFormat(encoding="cp1252"))
    assert facts.data_lines == 2


def test_a_utf8_bom_is_accepted(tmp_path: Path) -> None:
    path = write_rows(tmp_path / "bom.csv", [customer(1)])
    path.write_bytes(codecs.BOM_UTF8 + path.read_bytes())
    facts = check_landing_file(path, max_bytes=LIMIT)
    assert facts.has_bom


def test_a_file_over_the_size_limit_is_refused(tmp_path: Path) -> None:
    path = write_rows(tmp_path / "big.csv", [customer(n) for n in range(50)])
    assert _rule_of(path, max_bytes=1_000) == "file too large"


def test_blank_lines_after_the_header_are_skipped_and_counted(tmp_path: Path) -> None:
    path = write_rows(tmp_path / "blank.csv", [customer(1)])
    header, row = path.read_text().splitlines()
    path.write_text(f"{header}\r\n\r\n   \n\n{row}\n\n")
    facts = check_landing_file(path, max_bytes=LIMIT)
    assert (facts.data_lines, facts.blank_lines) == (1, 4)


def test_a_header_followed_only_by_blank_lines_is_header_only(tmp_path: Path) -> None:
    path = write_rows(tmp_path / "blank.csv", [])
    path.write_text(path.read_text() + "\n\n  \n")
    assert _rule_of(path) == "header only"


def test_header_names_match_without_case_and_spacing(tmp_path: Path) -> None:
    header = [" CustomerId ", *(name.upper() for name in TELCO_COLUMNS[1:])]
    header[5] = "Ten ure"
    rows = [list(customer(1).values())]
    facts = check_landing_file(write_rows(tmp_path / "h.csv", rows, header=header), max_bytes=LIMIT)
    assert facts.data_lines == 1


@pytest.mark.parametrize(("delimiter", "shown"), [(";", "';'"), ("\t", "'\\t'"), ("|", "'|'")])
def test_another_delimiter_is_named_instead_of_every_column_missing(
    tmp_path: Path, delimiter: str, shown: str
) -> None:
    path = tmp_path / "semicolon.csv"
    path.write_text(delimiter.join(TELCO_COLUMNS) + "\n" + delimiter.join(customer(1).values()))
    with pytest.raises(LandingFileError) as raised:
        check_landing_file(path, max_bytes=LIMIT)
    assert raised.value.rule == "wrong delimiter"
    assert f"the file seems to be separated by {shown}" in str(raised.value)
    assert "missing columns" not in str(raised.value)
    facts = check_landing_file(path, max_bytes=LIMIT, fmt=LandingFormat(delimiter=delimiter))
    assert facts.data_lines == 1


def test_a_gzip_file_is_read_whatever_its_name(tmp_path: Path) -> None:
    plain = write_rows(tmp_path / "plain.csv", [customer(n) for n in range(3)])
    for name in ("customers.csv.gz", "gzip_bytes.csv"):
        packed = tmp_path / name
        packed.write_bytes(gzip.compress(plain.read_bytes()))
        facts = check_landing_file(packed, max_bytes=LIMIT)
        assert facts.compressed and facts.data_lines == 3


def test_a_gzip_file_is_bounded_by_its_decompressed_size(tmp_path: Path) -> None:
    plain = write_rows(tmp_path / "plain.csv", [customer(n) for n in range(2_000)])
    packed = tmp_path / "bomb.csv.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    limit = packed.stat().st_size * 2
    assert limit < plain.stat().st_size
    assert _rule_of(packed, max_bytes=limit) == "file too large"


def test_a_truncated_gzip_file_is_refused(tmp_path: Path) -> None:
    plain = write_rows(tmp_path / "plain.csv", [customer(n) for n in range(200)])
    packed = tmp_path / "cut.csv.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes())[:-40])
    assert _rule_of(packed) == "broken gzip file"


def test_a_huge_single_line_gives_a_short_message(tmp_path: Path) -> None:
    path = tmp_path / "one_line.csv"
    path.write_text(",".join(f"column_{n}_" + "x" * 200 for n in range(15_000)))
    with pytest.raises(LandingFileError) as raised:
        check_landing_file(path, max_bytes=LIMIT)
    message = str(raised.value)
    assert len(message) < 3_000 and "none of the first line's 15,000 fields" in message


def test_a_named_pipe_is_not_a_missing_file(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    assert _rule_of(fifo) == "not a regular file"
    assert _rule_of(tmp_path) == "not a regular file"
