"""Malformed landing files, generated: each is refused before anything is written, with a
short message, or every physical data line ends valid, rejected or collapsed; a partition
is never left half-written."""

from __future__ import annotations

import codecs
import gzip
import os
import re
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import psycopg
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from retention_pipelines.core.ingestion import (
    LandingFileError,
    LandingFormat,
    check_landing_file,
    read_validated_chunks,
)
from retention_pipelines.core.schemas import TELCO_COLUMNS
from retention_pipelines.core.warehouse.raw import partition_counts, replace_snapshot_partition
from retention_pipelines_tests.landing_files import VALID_ROW, customer

DAY = date(2026, 5, 1)
EXAMPLES = int(os.environ.get("RETENTION_FUZZ_EXAMPLES", "500"))
CHUNK_ROWS = 20  # files have up to 26 lines: one chunk or two
MAX_MESSAGE_LINES = 5
_LINE_END = re.compile(r"\r\n|\r|\n")

# Values at and past every rule: ranges, spellings, nulls, numbers that are not finite.
EDGE_VALUES = (
    "", " ", "NA", "null", "-", "0", "1", "2", "-1", "-0.01", "0.5", "120", "121", "1e12",
    "1e400", "inf", "-Infinity", "NaN", "99999999.99", "100000000", "9999999999.99",
    "10000000000", "0x10", "1,5", "yes", "NO", "Yes", "No", "No internet service",
    "No phone service", "Fiber optic", "fiber  OPTIC", "Month-to-month", "Two year",
    "Electronic check", "Female", "male", "0000-AAAAA", "1234-ABCDE", "12345-ABCDE",
    "'; drop table raw.customer_snapshots; --", "é", "€", "\u2028", "\x00", "\x1b", "\t",
    '"', '""', "a,b", "a;b",
)  # fmt: skip
IDS = [customer(n)["customerID"] for n in range(1, 9)]


@dataclass(frozen=True)
class Landing:
    content: bytes
    fmt: LandingFormat


def _quoted(value: str, delimiter: str) -> str:
    if any(char in value for char in (delimiter, '"', "\n", "\r")):
        return '"' + value.replace('"', '""') + '"'
    return value


@st.composite
def landing_files(draw: st.DrawFn) -> Landing:
    delimiter = draw(st.sampled_from([",", ",", ",", ";", "\t", "|"]))
    declared = draw(st.sampled_from([delimiter] * 4 + [","]))
    header = list(TELCO_COLUMNS)
    if draw(st.integers(0, 9)) == 0:
        header = draw(st.permutations(header))
    if draw(st.integers(0, 9)) == 0:
        header = [name.upper() if draw(st.booleans()) else f" {name} " for name in header]
    if draw(st.integers(0, 14)) == 0:
        header = draw(st.lists(st.sampled_from([*TELCO_COLUMNS, "Notes", ""]), max_size=24))
    lines = [delimiter.join(_quoted(name, delimiter) for name in header)]
    for _ in range(draw(st.integers(0, 25))):
        lines.append(draw(_line(header, delimiter)))
    ends = draw(st.lists(st.sampled_from(["\n", "\r\n", "\r"]), min_size=1, max_size=3))
    text = "".join(line + ends[index % len(ends)] for index, line in enumerate(lines))
    if draw(st.booleans()):
        text = text.rstrip("\r\n")
    encoding = draw(st.sampled_from(["utf-8", "utf-8", "utf-8", "cp1252"]))
    content = text.encode(encoding, errors="replace" if encoding == "cp1252" else "strict")
    if draw(st.integers(0, 9)) == 0:
        content = codecs.BOM_UTF8 + content
    if draw(st.integers(0, 19)) == 0:
        content = content[: draw(st.integers(0, len(content)))]
    if draw(st.integers(0, 9)) == 0:
        content = gzip.compress(content)
    declared_encoding = draw(st.sampled_from([encoding, encoding, "utf-8"]))
    return Landing(content, LandingFormat(encoding=declared_encoding, delimiter=declared))


@st.composite
def _line(draw: st.DrawFn, header: list[str], delimiter: str) -> str:
    kind = draw(st.integers(0, 19))
    if kind == 0:
        return draw(st.sampled_from(["", " ", "\t", delimiter * 3]))
    if kind == 1:
        return draw(st.text(max_size=40))
    row = {**VALID_ROW, "customerID": draw(st.sampled_from(IDS))}
    for _ in range(draw(st.integers(0, 3))):
        column = draw(st.sampled_from(TELCO_COLUMNS))
        row[column] = draw(st.one_of(st.sampled_from(EDGE_VALUES), st.text(max_size=12)))
    fields = [_quoted(row.get(name.strip(), ""), delimiter) for name in header]
    if kind == 2 and fields:
        fields.pop(draw(st.integers(0, len(fields) - 1)))
    if kind == 3:
        fields.append("extra")
    line = delimiter.join(fields)
    if kind == 4 and line:
        at = draw(st.integers(0, len(line)))
        line = f'{line[:at]}"{line[at:]}'
    return line


def _data_lines(landing: Landing) -> int:
    content = landing.content
    if content[:2] == b"\x1f\x8b":
        content = gzip.decompress(content)
    encoding = "utf-8-sig" if landing.fmt.is_utf8 else landing.fmt.encoding
    lines = _LINE_END.split(content.decode(encoding))
    return sum(1 for line in lines[1:] if line.strip())


def _state(url: str) -> tuple[object, ...]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            """
            select (select count(*) from raw.customer_snapshots where snapshot_date = %(d)s),
                   (select count(*) from raw.customer_rejects where snapshot_date = %(d)s),
                   (select file_sha256 from raw.ingestion_runs where snapshot_date = %(d)s)
            """,
            {"d": DAY},
        ).fetchone()


def _row_numbers(url: str) -> list[int]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "select source_row_number from raw.customer_snapshots where snapshot_date = %(d)s"
            " union all select row_number from raw.customer_rejects where snapshot_date = %(d)s",
            {"d": DAY},
        ).fetchall()
    return [row[0] for row in rows]


@pytest.fixture(scope="module")
def landing_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz") / "customers_2026-05-01.csv"


@pytest.mark.slow
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(landing=landing_files())
def test_every_malformed_file_is_refused_briefly_or_fully_accounted_for(
    module_database_url: str, landing_path: Path, landing: Landing
) -> None:
    landing_path.write_bytes(landing.content)
    before = _state(module_database_url)
    try:
        facts = check_landing_file(landing_path, max_bytes=10**7, fmt=landing.fmt)
    except LandingFileError as error:
        event(f"refused: {error.rule}")
        assert len(str(error).splitlines()) <= MAX_MESSAGE_LINES
        assert len(str(error)) < 4_000
        assert _state(module_database_url) == before
        return
    try:
        summary = replace_snapshot_partition(
            module_database_url,
            snapshot_date=DAY,
            facts=facts,
            chunks=read_validated_chunks(landing_path, chunk_rows=CHUNK_ROWS, fmt=landing.fmt),
        )
    except Exception:
        assert _state(module_database_url) == before, "a failed run changed the partition"
        raise
    event("ingested")
    data_lines = _data_lines(landing)
    assert facts.data_lines == summary.rows_read == data_lines
    counts = partition_counts(module_database_url, DAY)
    assert counts is not None and counts.reconciles and counts.rows_read == data_lines
    numbers = _row_numbers(module_database_url)
    assert len(numbers) == len(set(numbers)) == data_lines - counts.duplicates_collapsed
