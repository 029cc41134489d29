"""Reading a landing file: file-level checks, then rows read as text, normalized, converted
and validated chunk by chunk.

Every data row read ends in exactly one place: a valid row or a reject with its reasons
(duplicates are settled later, in the warehouse, across the whole file).
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Final

import numpy as np
import pandas as pd
import pandera.errors

from retention_pipelines.core.schemas import (
    CATEGORIES,
    MAX_TENURE_MONTHS,
    RAW_COLUMN_NAMES,
    TELCO_COLUMNS,
    TELCO_NAME_OF,
    YES_NO,
    CustomerSnapshotSchema,
)

# Text that means "no value" in landing files, compared after trimming and lower-casing.
NULL_TOKENS: Final[frozenset[str]] = frozenset(
    {"", "na", "n/a", "nan", "null", "none", "nil", "-", "?"}
)
# Accepted spellings of the two answers of a Yes/No column, lower-cased.
YES_SPELLINGS: Final[frozenset[str]] = frozenset({"yes", "y", "true", "t"})
NO_SPELLINGS: Final[frozenset[str]] = frozenset({"no", "n", "false", "f"})
_READ_BLOCK_BYTES: Final = 1 << 20
_WHITESPACE_RUN = re.compile(r"\s+")


def landing_file_name(snapshot_date: date) -> str:
    """The name a day's landing file has: ``customers_YYYY-MM-DD.csv``."""
    return f"customers_{snapshot_date.isoformat()}.csv"


class LandingFileError(ValueError):
    """A fault of the whole file: nothing of it is ingested."""

    def __init__(self, path: Path, rule: str, detail: str) -> None:
        self.path = path
        self.rule = rule
        super().__init__(f"{path}: {rule}: {detail}")


@dataclass(frozen=True)
class LandingFileFacts:
    """What the file-level checks learned, recorded with the partition."""

    path: Path
    size_bytes: int
    sha256: str
    has_bom: bool


def check_landing_file(path: Path, *, max_bytes: int) -> LandingFileFacts:
    """Refuse a file that cannot be ingested as a whole, before any row is written.

    One streaming pass checks the size, strict UTF-8 (a BOM is accepted), the header and that
    at least one data row follows it; it also fingerprints the file.
    """
    if not path.is_file():
        raise LandingFileError(path, "missing file", "no landing file at this path")
    size = path.stat().st_size
    if size == 0:
        raise LandingFileError(path, "empty file", "the file has no bytes")
    if size > max_bytes:
        raise LandingFileError(
            path, "file too large", f"{size:,} bytes is over the limit of {max_bytes:,} bytes"
        )
    digest, has_bom, first_lines = _scan_utf8(path)
    header = _parse_header(path, first_lines[0] if first_lines else "")
    missing = [column for column in TELCO_COLUMNS if column not in header]
    unexpected = [column for column in header if column not in TELCO_COLUMNS]
    duplicated = sorted({column for column in header if header.count(column) > 1})
    if missing or unexpected or duplicated:
        raise LandingFileError(
            path,
            "header does not match the Telco columns",
            f"missing columns: {missing or 'none'}; unexpected columns: {unexpected or 'none'}"
            + (f"; repeated columns: {duplicated}" if duplicated else ""),
        )
    if not any(line.strip() for line in first_lines[1:]):
        raise LandingFileError(path, "header only", "the file has a header and no data rows")
    return LandingFileFacts(path=path, size_bytes=size, sha256=digest, has_bom=has_bom)


def _scan_utf8(path: Path) -> tuple[str, bool, list[str]]:
    """Decode the whole file strictly, block by block; return its hash, BOM flag, first lines."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="strict")
    digest = hashlib.sha256()
    offset = 0
    head = ""
    has_bom = False
    with path.open("rb") as handle:
        while True:
            block = handle.read(_READ_BLOCK_BYTES)
            digest.update(block)
            if offset == 0 and block.startswith(codecs.BOM_UTF8):
                has_bom = True
                block, offset = block[len(codecs.BOM_UTF8) :], len(codecs.BOM_UTF8)
            try:
                text = decoder.decode(block, final=not block)
            except UnicodeDecodeError as error:
                raise LandingFileError(
                    path,
                    "not valid UTF-8",
                    f"undecodable byte {block[error.start : error.start + 1]!r} "
                    f"at byte offset {offset + error.start}",
                ) from error
            if len(head) < _READ_BLOCK_BYTES:
                head += text
            if not block:
                break
            offset += len(block)
    return digest.hexdigest(), has_bom, head.splitlines()[:3]


def _parse_header(path: Path, line: str) -> list[str]:
    if not line.strip():
        raise LandingFileError(path, "no header", "the first line is blank")
    return [name.strip() for name in next(csv.reader([line]))]


@dataclass
class ValidatedChunk:
    """One chunk of rows after validation: valid rows typed, rejects with their reasons."""

    valid: pd.DataFrame
    rejects: pd.DataFrame  # row_number, customer_id, record (json text), reasons (list[str])
    rows_read: int


@dataclass
class _ChunkText:
    header: list[str]
    row_numbers: list[int] = field(default_factory=list)
    records: list[list[str]] = field(default_factory=list)
    ragged_row_numbers: list[int] = field(default_factory=list)
    ragged_records: list[list[str]] = field(default_factory=list)

    @property
    def rows_read(self) -> int:
        return len(self.row_numbers) + len(self.ragged_row_numbers)


def read_validated_chunks(path: Path, *, chunk_rows: int) -> Iterator[ValidatedChunk]:
    """Stream the file in chunks of at most ``chunk_rows`` rows, each validated.

    Row numbers count data records from 1 (the header is row 0). Blank lines are not rows.
    """
    for chunk in _read_text_chunks(path, chunk_rows):
        yield validate_text_rows(chunk)


def _numbered_records(path: Path) -> tuple[list[str], Iterator[tuple[int, list[str]]]]:
    """The header, and each data record with its row number (blank lines are skipped)."""
    handle = path.open(encoding="utf-8-sig", newline="")
    reader = csv.reader(handle)
    header = [name.strip() for name in next(reader)]

    def records() -> Iterator[tuple[int, list[str]]]:
        with handle:
            row_number = 0
            for record in reader:
                if not record or (len(record) == 1 and not record[0].strip()):
                    continue
                row_number += 1
                yield row_number, record

    return header, records()


def _read_text_chunks(path: Path, chunk_rows: int) -> Iterator[_ChunkText]:
    header, records = _numbered_records(path)
    width = len(header)
    chunk = _ChunkText(header)
    in_chunk = 0
    for row_number, record in records:
        if len(record) == width:
            chunk.row_numbers.append(row_number)
            chunk.records.append(record)
        else:
            chunk.ragged_row_numbers.append(row_number)
            chunk.ragged_records.append(record)
        in_chunk += 1
        if in_chunk >= chunk_rows:
            yield chunk
            chunk, in_chunk = _ChunkText(header), 0
    if in_chunk:
        yield chunk


def read_raw_records(path: Path, row_numbers: set[int]) -> dict[int, str]:
    """The given rows exactly as read, as JSON objects keyed by the header.

    A second pass over the file, made only when rows must be quarantined after validation
    (conflicting duplicates); it keeps the valid path free of per-row JSON.
    """
    header, records = _numbered_records(path)
    found: dict[int, str] = {}
    for row_number, record in records:
        if row_number in row_numbers:
            found[row_number] = json.dumps(
                dict(zip(header, record, strict=False)), ensure_ascii=False
            )
            if len(found) == len(row_numbers):
                break
    return found


def validate_text_rows(chunk: _ChunkText) -> ValidatedChunk:
    """Normalize, convert and validate one chunk; every row ends valid or rejected."""
    text = pd.DataFrame(chunk.records, columns=chunk.header, dtype=object)
    text.index = pd.Index(chunk.row_numbers, name="row_number")
    text = text[list(TELCO_COLUMNS)]
    typed, reasons = convert_text_rows(text)
    _add_schema_failures(typed, reasons)
    rejected_rows = sorted(reasons)
    valid = typed.drop(index=rejected_rows)
    rejects = _reject_frame(text, reasons, rejected_rows)
    if chunk.ragged_row_numbers:
        rejects = pd.concat([rejects, _ragged_rejects(chunk)], ignore_index=True)
    return ValidatedChunk(valid=valid, rejects=rejects, rows_read=chunk.rows_read)


def _as_json_lines(records: pd.DataFrame) -> list[str]:
    if records.empty:
        return []
    return records.to_json(orient="records", lines=True, force_ascii=False).splitlines()


def normalize_value(value: str | None) -> str | None:
    """Trim, collapse inner whitespace runs, and turn a null token into None."""
    if value is None:
        return None
    cleaned = value.strip()
    if "  " in cleaned or "\t" in cleaned or "\n" in cleaned or "\r" in cleaned:
        cleaned = _WHITESPACE_RUN.sub(" ", cleaned)
    return None if cleaned.lower() in NULL_TOKENS else cleaned


def category_spellings(allowed: tuple[str, ...]) -> dict[str, str]:
    """Lower-cased spellings accepted for each canonical value (Yes/No have synonyms)."""
    mapping = {value.lower(): value for value in allowed}
    if "Yes" in allowed:
        mapping |= dict.fromkeys(YES_SPELLINGS, "Yes") | dict.fromkeys(NO_SPELLINGS, "No")
    return mapping


def _map_distinct(values: pd.Series, function: Callable[[str | None], str | None]) -> pd.Series:
    """Apply ``function`` once per distinct value: a column holds few distinct spellings."""
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    mapped = np.array([function(value) for value in uniques] + [None], dtype=object)
    return pd.Series(mapped[codes], index=values.index, dtype=object)


def normalize_column(values: pd.Series, allowed: tuple[str, ...] | None = None) -> pd.Series:
    """Normalize a column of text; with ``allowed``, map case variants to the canonical value.

    A value that matches no allowed spelling is kept as read, for validation to report.
    """
    if allowed is None:
        return _map_distinct(values, normalize_value)
    spellings = category_spellings(allowed)

    def canonical(value: str | None) -> str | None:
        cleaned = normalize_value(value)
        return None if cleaned is None else spellings.get(cleaned.lower(), cleaned)

    return _map_distinct(values, canonical)


def convert_text_rows(text: pd.DataFrame) -> tuple[pd.DataFrame, dict[int, list[str]]]:
    """Convert normalized text to the raw table's types, recording every conversion failure.

    A value that cannot be converted becomes missing here and gets its own reason, so that
    schema validation reports the remaining rules without an exception.
    """
    reasons: dict[int, list[str]] = {}
    typed = pd.DataFrame(index=text.index)
    for telco_name, raw_name in RAW_COLUMN_NAMES.items():
        typed[raw_name] = normalize_column(text[telco_name], CATEGORIES.get(raw_name))
    # SeniorCitizen is 0/1 in the Telco data; Yes/No spellings mean the same.
    senior_spellings = {"Yes": "1", "No": "0"}
    senior_words = category_spellings(YES_NO)
    typed["senior_citizen"] = _map_distinct(
        typed["senior_citizen"],
        lambda value: (
            None
            if value is None
            else senior_spellings.get(senior_words.get(value.lower(), ""), value)
        ),
    )
    blank_total = typed["total_charges"].isna()
    for column, kind in (
        ("senior_citizen", "integer"),
        ("tenure", "integer"),
        ("monthly_charges", "number"),
        ("total_charges", "number"),
    ):
        typed[column] = _to_number(typed[column], column, kind, reasons)
    _apply_total_charges_rule(typed, blank_total, reasons)
    typed["customer_id"] = typed["customer_id"].fillna("")
    text_columns = [column for column in typed.columns if typed[column].dtype == object]
    typed[text_columns] = typed[text_columns].astype("string")
    return typed, reasons


def _to_number(
    values: pd.Series, column: str, kind: str, reasons: dict[int, list[str]]
) -> pd.Series:
    numbers = pd.to_numeric(values, errors="coerce")
    not_a_number = values.notna() & numbers.isna()
    if kind == "integer":
        fractional = numbers.notna() & (numbers != np.floor(numbers.fillna(0)))
        not_a_number |= fractional
        numbers = numbers.mask(fractional)
    for row_number, value in values[not_a_number].items():
        reasons.setdefault(int(row_number), []).append(
            f"{TELCO_NAME_OF[column]}: {value!r} is not {'an' if kind == 'integer' else 'a'} {kind}"
        )
    if kind == "integer":
        return numbers.round().astype("Int64")
    return numbers.astype(float)


def _apply_total_charges_rule(
    typed: pd.DataFrame, blank: pd.Series, reasons: dict[int, list[str]]
) -> None:
    """Blank TotalCharges means no bill yet: 0 for a new customer, an error otherwise."""
    new_customer = typed["tenure"].fillna(-1).eq(0)
    typed.loc[blank & new_customer, "total_charges"] = 0.0
    for row_number in typed.index[blank & ~new_customer & typed["tenure"].notna()]:
        tenure = typed.at[row_number, "tenure"]
        reasons.setdefault(int(row_number), []).append(
            f"TotalCharges: blank but tenure is {tenure} months (blank is only allowed at 0)"
        )


def _add_schema_failures(typed: pd.DataFrame, reasons: dict[int, list[str]]) -> None:
    """Validate lazily and turn every failure case into a reason on its row."""
    try:
        CustomerSnapshotSchema.validate(typed, lazy=True)
    except pandera.errors.SchemaErrors as errors:
        cases = errors.failure_cases
        cases = cases[cases["index"].notna()]
        for case in cases.itertuples(index=False):
            row_number = int(case.index)
            row_reasons = reasons.setdefault(row_number, [])
            if case.schema_context != "Column":
                # A rule across columns is reported once per column; say it once per row.
                rule = f"rule broken: {case.check}"
                if rule not in row_reasons:
                    row_reasons.append(rule)
                continue
            reason = describe_failure(str(case.column), str(case.check), case.failure_case)
            column_label = f"{TELCO_NAME_OF.get(str(case.column), '')}:"
            already_explained = any(existing.startswith(column_label) for existing in row_reasons)
            if reason is not None and not (already_explained and "null" in str(case.check)):
                row_reasons.append(reason)
        for row_number in [row for row, found in reasons.items() if not found]:
            del reasons[row_number]


def describe_failure(column: str, check: str, value: object) -> str | None:
    """A sentence a data engineer understands, naming the landing column and the value."""
    name = TELCO_NAME_OF.get(column, column)
    if check.startswith("dtype("):
        return None  # a conversion reason already names the value
    if check == "not_nullable":
        return f"{name}: missing value"
    if check.startswith("isin("):
        allowed = ", ".join(CATEGORIES.get(column, ()))
        return f"{name}: {value!r} is not one of: {allowed}"
    if check.startswith("str_matches("):
        return f"{name}: {value!r} is not a customer id like 1234-ABCDE"
    if check.startswith(("greater_than_or_equal_to", "less_than_or_equal_to")):
        bounds = f"0..{MAX_TENURE_MONTHS}" if column == "tenure" else ">= 0"
        return f"{name}: {value} is outside the allowed range {bounds}"
    return f"{name}: {value!r} fails {check}"


def _reject_frame(
    text: pd.DataFrame, reasons: dict[int, list[str]], rejected_rows: list[int]
) -> pd.DataFrame:
    records = text.loc[rejected_rows]
    return pd.DataFrame(
        {
            "row_number": rejected_rows,
            "customer_id": normalize_column(records["customerID"]).tolist(),
            "record": _as_json_lines(records),
            "reasons": [reasons[row] for row in rejected_rows],
        }
    )


def _ragged_rejects(chunk: _ChunkText) -> pd.DataFrame:
    width = len(chunk.header)
    return pd.DataFrame(
        {
            "row_number": chunk.ragged_row_numbers,
            "customer_id": [
                record[0].strip() or None if record else None for record in chunk.ragged_records
            ],
            "record": [
                json.dumps({"fields": record}, ensure_ascii=False)
                for record in chunk.ragged_records
            ],
            "reasons": [
                [f"fields: the row has {len(record)} fields; the header has {width}"]
                for record in chunk.ragged_records
            ],
        }
    )
