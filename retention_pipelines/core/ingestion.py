"""Reading a landing file: file-level checks, then rows read as text, normalized, converted
and validated chunk by chunk.

A landing file is CSV with one record per physical line (no Telco value holds a line break),
in the configured encoding and delimiter, plain or gzip-compressed. Every physical data line
read ends in exactly one place: a valid row or a reject with its reasons (duplicates are
settled later, in the warehouse, across the whole file); blank lines are skipped and counted.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import hashlib
import io
import json
import re
import stat
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import BinaryIO, Final

import numpy as np
import pandas as pd
import pandera.errors

from retention_pipelines.core.schemas import (
    CATEGORIES,
    NUMBER_BOUNDS,
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
GZIP_MAGIC: Final = b"\x1f\x8b"
# Python's csv module refuses fields longer than this; the field limit stays below it.
CSV_FIELD_LIMIT: Final = csv.field_size_limit()
# Delimiters a file is tried with when its header does not split into the Telco columns.
OTHER_DELIMITERS: Final[tuple[str, ...]] = (";", "\t", "|", ",")
# In messages: at most this many names of a header, each cut to this many characters.
SHOWN_NAMES: Final = 10
SHOWN_CHARS: Final = 64
# In a reject's stored record: each field cut to this many characters.
STORED_FIELD_CHARS: Final = 1024
_WHITESPACE_RUN = re.compile(r"\s+")
# Control characters other than tab: never part of a Telco value, and NUL cannot be stored.
CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_LINES_PER_SIZE_CHECK: Final = 10_000


def landing_file_name(snapshot_date: date) -> str:
    """The name a day's landing file has: ``customers_YYYY-MM-DD.csv``."""
    return f"customers_{snapshot_date.isoformat()}.csv"


def landing_file_names(snapshot_date: date) -> tuple[str, str]:
    """The names a day's landing file may have: plain, then gzip-compressed."""
    name = landing_file_name(snapshot_date)
    return name, f"{name}.gz"


def find_landing_file(folder: Path, snapshot_date: date) -> Path:
    """The day's landing file in ``folder``: ``customers_D.csv``, else ``customers_D.csv.gz``
    when only that one exists (the plain name when neither does)."""
    plain, packed = (folder / name for name in landing_file_names(snapshot_date))
    return packed if packed.exists() and not plain.exists() else plain


@dataclass(frozen=True)
class LandingFormat:
    """How landing files are written: their encoding, delimiter and longest field."""

    encoding: str = "utf-8"
    delimiter: str = ","
    max_field_chars: int = 4096

    def __post_init__(self) -> None:
        codecs.lookup(self.encoding)  # an unknown encoding is a LookupError here
        if len(self.delimiter) != 1 or self.delimiter in '"\r\n':
            raise ValueError(
                f"{self.delimiter!r} cannot be a delimiter: one character, not a quote"
            )
        if not 1 <= self.max_field_chars < CSV_FIELD_LIMIT:
            raise ValueError(f"the field limit must be between 1 and {CSV_FIELD_LIMIT - 1:,}")

    @property
    def is_utf8(self) -> bool:
        return codecs.lookup(self.encoding).name == "utf-8"


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
    data_lines: int = 0
    blank_lines: int = 0
    compressed: bool = False
    fmt: LandingFormat = field(default_factory=LandingFormat)


def shown(value: str, limit: int = SHOWN_CHARS) -> str:
    """``value`` as a message shows it: its repr, cut to ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 1]}…"


def shown_names(names: list[str]) -> str:
    """At most ``SHOWN_NAMES`` names, each cut, and how many more there are."""
    listed = ", ".join(shown(name) for name in names[:SHOWN_NAMES])
    more = len(names) - SHOWN_NAMES
    return f"[{listed}{f', and {more:,} more' if more > 0 else ''}]"


def is_gzip(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(2) == GZIP_MAGIC


def _open_binary(path: Path) -> BinaryIO:
    """The file's bytes, decompressed when it is gzip (whatever its name)."""
    if is_gzip(path):
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return path.open("rb")


@contextmanager
def physical_lines(path: Path, fmt: LandingFormat) -> Iterator[Iterator[tuple[int, str]]]:
    """Each line of the file with its number (the header is line 1), without its ending.

    Lines end at ``\\n``, ``\\r\\n`` or ``\\r``; a UTF-8 byte-order mark is dropped.
    """
    with _open_binary(path) as raw:
        yield _text_lines(raw, fmt)


def _text_lines(raw: BinaryIO, fmt: LandingFormat) -> Iterator[tuple[int, str]]:
    encoding = "utf-8-sig" if fmt.is_utf8 else fmt.encoding
    text = io.TextIOWrapper(raw, encoding=encoding, newline="")
    try:
        for number, line in enumerate(text, start=1):
            yield number, line.rstrip("\r\n")
    finally:
        if not raw.closed:
            text.detach()  # the caller closes ``raw``


def canonical_header_name(name: str) -> str:
    """Header names compare without case and whitespace: ``Customer Id`` is ``customerID``."""
    return _WHITESPACE_RUN.sub("", name).lower()


_TELCO_BY_CANONICAL: Final[dict[str, str]] = {
    canonical_header_name(column): column for column in TELCO_COLUMNS
}


class LineSplitError(ValueError):
    """A line that cannot be split into fields."""


def split_line(line: str, delimiter: str, line_number: int) -> list[str]:
    """The fields of one physical line; a quote must close on the line it opens."""
    if '"' not in line:
        return line.split(delimiter)
    try:
        return next(csv.reader([line], delimiter=delimiter, strict=True))
    except csv.Error as error:
        if "end of data" in str(error):
            raise LineSplitError(f"unterminated quote starting at line {line_number}") from error
        if "field limit" in str(error):
            raise LineSplitError(
                f"a field of line {line_number} is over {CSV_FIELD_LIMIT:,} characters"
            ) from error
        raise LineSplitError(f"malformed quoting on line {line_number}: {error}") from error


def check_landing_file(
    path: Path, *, max_bytes: int, fmt: LandingFormat | None = None
) -> LandingFileFacts:
    """Refuse a file that cannot be ingested as a whole, before any row is written.

    It checks the file's kind and size, decodes every line strictly (a UTF-8 BOM is
    accepted; gzip is read through, its decompressed size bounded too), checks the header
    and that a data line follows it; it fingerprints the file and counts its data lines.
    """
    fmt = fmt or LandingFormat()
    _check_kind_and_size(path, max_bytes)
    compressed = is_gzip(path)
    with path.open("rb") as handle:
        digest = hashlib.file_digest(handle, "sha256").hexdigest()
    with _open_binary(path) as raw:
        has_bom = raw.read(len(codecs.BOM_UTF8)) == codecs.BOM_UTF8 and fmt.is_utf8
    try:
        data_lines, blank_lines = _count_lines(path, fmt, max_bytes=max_bytes)
    except UnicodeDecodeError as error:
        encoding = "UTF-8" if fmt.is_utf8 else fmt.encoding
        raise LandingFileError(path, f"not valid {encoding}", _undecodable(path, fmt)) from error
    except (OSError, EOFError, zlib.error) as error:
        if not compressed:
            raise
        raise LandingFileError(
            path, "broken gzip file", str(error) or type(error).__name__
        ) from error
    if data_lines == 0:
        raise LandingFileError(path, "header only", "the file has a header and no data rows")
    return LandingFileFacts(
        path=path,
        size_bytes=path.stat().st_size,
        sha256=digest,
        has_bom=has_bom,
        data_lines=data_lines,
        blank_lines=blank_lines,
        compressed=compressed,
        fmt=fmt,
    )


_FILE_KINDS: Final = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def _check_kind_and_size(path: Path, max_bytes: int) -> None:
    try:
        status = path.stat()
    except FileNotFoundError as error:
        raise LandingFileError(path, "missing file", "no landing file at this path") from error
    except PermissionError as error:
        raise LandingFileError(path, "unreadable file", "permission denied") from error
    for is_kind, kind in _FILE_KINDS:
        if is_kind(status.st_mode):
            raise LandingFileError(path, "not a regular file", f"the path is {kind}")
    size = status.st_size
    if size == 0:
        raise LandingFileError(path, "empty file", "the file has no bytes")
    if size > max_bytes:
        raise LandingFileError(
            path, "file too large", f"{size:,} bytes is over the limit of {max_bytes:,} bytes"
        )


def _count_lines(path: Path, fmt: LandingFormat, *, max_bytes: int) -> tuple[int, int]:
    """Check the header and count the data and blank lines after it."""
    data_lines = blank_lines = 0
    with _open_binary(path) as raw:
        lines = _text_lines(raw, fmt)
        first = next(lines, None)
        check_header(path, first[1] if first else "", fmt)
        for number, line in lines:
            if line.strip():
                data_lines += 1
            else:
                blank_lines += 1
            if number % _LINES_PER_SIZE_CHECK == 0:
                _check_decompressed_size(path, raw, max_bytes)
        _check_decompressed_size(path, raw, max_bytes)
    return data_lines, blank_lines


def _check_decompressed_size(path: Path, raw: BinaryIO, max_bytes: int) -> None:
    if isinstance(raw, gzip.GzipFile) and raw.tell() > max_bytes:
        raise LandingFileError(
            path, "file too large", f"decompressed, it is over the limit of {max_bytes:,} bytes"
        )


def check_header(path: Path, line: str, fmt: LandingFormat) -> list[str]:
    """The header's Telco column names, in file order; a header that does not name each
    Telco column once (in any case and spacing) refuses the file, saying why briefly (and
    without quoting a first line that names no column at all: that is a customer's row)."""
    if not line.strip():
        raise LandingFileError(path, "no header", "the first line is blank")
    try:
        names = split_line(line, fmt.delimiter, 1)
    except LineSplitError as error:
        raise LandingFileError(path, "unreadable header", str(error)) from error
    canonical = [_TELCO_BY_CANONICAL.get(canonical_header_name(name)) for name in names]
    missing = [column for column in TELCO_COLUMNS if column not in canonical]
    if missing:
        _refuse_other_delimiter(path, line, fmt)
    if all(found is None for found in canonical):
        # A data row where the header should be: its fields are a customer's id and
        # attributes, and the message goes to logs and terminals. Say what, not which.
        raise LandingFileError(
            path,
            "header does not match the Telco columns",
            f"none of the first line's {len(names):,} fields names a Telco column: the file "
            "seems to have no header (its first line must name the columns)",
        )
    unexpected = [name for name, found in zip(names, canonical, strict=True) if found is None]
    repeated = sorted({c for c in canonical if c is not None and canonical.count(c) > 1})
    if missing or unexpected or repeated:
        raise LandingFileError(
            path,
            "header does not match the Telco columns",
            f"missing columns: {shown_names(missing) if missing else 'none'}; "
            f"unexpected columns: {shown_names(unexpected) if unexpected else 'none'}"
            + (f"; repeated columns: {shown_names(repeated)}" if repeated else ""),
        )
    return [name for name in canonical if name is not None]


def _refuse_other_delimiter(path: Path, line: str, fmt: LandingFormat) -> None:
    for delimiter in OTHER_DELIMITERS:
        if delimiter == fmt.delimiter or delimiter not in line:
            continue
        try:
            names = split_line(line, delimiter, 1)
        except LineSplitError:
            continue
        found = {_TELCO_BY_CANONICAL.get(canonical_header_name(name)) for name in names}
        if found >= set(TELCO_COLUMNS):
            raise LandingFileError(
                path,
                "wrong delimiter",
                f"the file seems to be separated by {delimiter!r}, not {fmt.delimiter!r}: "
                f"land it with `retention ingest PATH --delimiter {delimiter!r}`",
            )


def _undecodable(path: Path, fmt: LandingFormat) -> str:
    """Where the first undecodable byte is, and a likelier encoding when there is one."""
    with _open_binary(path) as raw:
        for number, line in enumerate(raw, start=1):
            try:
                line.decode(fmt.encoding)
            except UnicodeDecodeError as error:
                byte = line[error.start : error.start + 1]
                hint = ""
                if fmt.is_utf8 and _looks_like_cp1252(line):
                    hint = (
                        "; the bytes look like Windows-1252 (cp1252): land the file with "
                        "`retention ingest PATH --encoding cp1252`"
                    )
                return f"undecodable byte {byte!r} on line {number}, column {error.start + 1}{hint}"
    return "the file ends in the middle of a character"


def _looks_like_cp1252(line: bytes) -> bool:
    try:
        line.decode("cp1252")
    except UnicodeDecodeError:
        return False
    return True


@dataclass
class ValidatedChunk:
    """One chunk of rows after validation: valid rows typed, rejects with their reasons."""

    valid: pd.DataFrame
    rejects: pd.DataFrame  # row_number, customer_id, record (json text), reasons (list[str])
    rows_read: int
    blank_lines: int = 0


@dataclass
class _ChunkText:
    header: list[str]
    row_numbers: list[int] = field(default_factory=list)
    records: list[list[str]] = field(default_factory=list)
    faults: list[_Fault] = field(default_factory=list)
    blank_lines: int = 0

    @property
    def rows_read(self) -> int:
        return len(self.row_numbers) + len(self.faults)


@dataclass(frozen=True)
class _Fault:
    """A line rejected before validation: it cannot be split, or its fields cannot be used."""

    row_number: int
    customer_id: str | None
    record: str
    reasons: list[str]


def read_validated_chunks(
    path: Path, *, chunk_rows: int, fmt: LandingFormat | None = None
) -> Iterator[ValidatedChunk]:
    """Stream the file in chunks of at most ``chunk_rows`` rows, each validated.

    A row's number is its line number minus one: the header is row 0, the first line after
    it row 1. Blank lines are counted, not read as rows.
    """
    for chunk in _read_text_chunks(path, chunk_rows, fmt or LandingFormat()):
        yield validate_text_rows(chunk)


class SuppressionKeyError(RuntimeError):
    """Erased customers are listed and no pseudonym key was given to recognise them."""


# A customer id's shape anywhere in a quarantined row's record, overlapping matches included.
_ID_SHAPE: Final = re.compile(r"(?=(\d{4}-[A-Za-z]{5}))")
_SHA256_BLOCK_BYTES: Final = 64


def pseudonym_digests(customer_ids: Sequence[str], key: bytes) -> list[bytes]:
    """Each id's full pseudonym (``pseudonyms.pseudonym``) as its 32 bytes.

    HMAC-SHA256 written out: the key's two padded blocks are hashed once, and each id costs
    two copies of those states and two short updates, half of what ``hmac.new`` per id
    costs."""
    if len(key) > _SHA256_BLOCK_BYTES:
        key = hashlib.sha256(key).digest()
    padded = key.ljust(_SHA256_BLOCK_BYTES, b"\0")
    inner = hashlib.sha256(bytes(byte ^ 0x36 for byte in padded)).copy
    outer = hashlib.sha256(bytes(byte ^ 0x5C for byte in padded)).copy
    digests: list[bytes] = []
    append = digests.append
    for customer_id in customer_ids:
        first = inner()
        first.update(customer_id.encode("utf-8"))
        second = outer()
        second.update(first.digest())
        append(second.digest())
    return digests


class Suppression:
    """The customers ingestion leaves out: those erased on request, listed by the full
    pseudonym of their id (``ops.erased_customers``), never by id.

    A row is left out when its customer id's pseudonym is listed; a rejected row also when its
    record holds a listed id anywhere (as erasure finds quarantined rows): stored as a reject,
    its record would hold the customer again. An empty list costs nothing: no pseudonym is
    computed, so none needs a key.
    """

    def __init__(self, pseudonyms: frozenset[str] = frozenset(), key: bytes | None = None):
        if pseudonyms and key is None:
            count = len(pseudonyms)
            raise SuppressionKeyError(
                f"the suppression list holds {count:,} erased customer{'s' * (count != 1)} and "
                "no pseudonym key was given: without RETENTION_PSEUDONYM_KEY ingestion cannot "
                "recognise them, and would store them again"
            )
        self._listed = frozenset(bytes.fromhex(pseudonym) for pseudonym in pseudonyms)
        self._key = key or b""

    def __len__(self) -> int:
        return len(self._listed)

    def drop(self, chunk: ValidatedChunk) -> tuple[ValidatedChunk, int]:
        """The chunk without the listed customers' rows, valid or rejected, and how many
        rows went; the chunk itself when none did."""
        if not self._listed:
            return chunk, 0
        valid = self._is_listed(chunk.valid["customer_id"].tolist())
        rejects = np.array(
            [
                self._mentions_listed(customer_id, record)
                for customer_id, record in zip(
                    chunk.rejects["customer_id"], chunk.rejects["record"], strict=True
                )
            ]
            if len(chunk.rejects)
            else [],
            dtype=bool,
        )
        dropped = int(valid.sum() + rejects.sum())
        if not dropped:
            return chunk, 0
        kept = ValidatedChunk(
            valid=chunk.valid[~valid],
            rejects=chunk.rejects[~rejects].reset_index(drop=True),
            rows_read=chunk.rows_read,
            blank_lines=chunk.blank_lines,
        )
        return kept, dropped

    def _is_listed(self, customer_ids: Sequence[str]) -> np.ndarray:
        listed = self._listed
        digests = pseudonym_digests(customer_ids, self._key)
        return np.fromiter((digest in listed for digest in digests), bool, len(digests))

    def _mentions_listed(self, customer_id: object, record: str) -> bool:
        """Whether the reject's parsed id, or an id-shaped text of its record (as written or
        in capitals, the form ids have), is listed."""
        candidates = {customer_id} if isinstance(customer_id, str) else set()
        for found in _ID_SHAPE.findall(record):
            candidates |= {found, found.upper()}
        return bool(candidates) and bool(self._is_listed(sorted(candidates)).any())


@dataclass(frozen=True)
class _Line:
    row_number: int
    fields: list[str] | None  # None: a blank line
    fault: list[str] | None = None  # why the line cannot be validated
    text: str = ""


@contextmanager
def _numbered_lines(
    path: Path, fmt: LandingFormat
) -> Iterator[tuple[list[str], Iterator[tuple[int, str]]]]:
    """The header's Telco names, and each line after it with its number."""
    with physical_lines(path, fmt) as lines:
        first = next(lines, None)
        header = check_header(path, first[1] if first else "", fmt)
        yield header, lines


def _split(number: int, line: str, header: list[str], fmt: LandingFormat) -> _Line:
    """One line split, or with why it cannot be (the careful path, for lines with quotes,
    long or odd content)."""
    row_number = number - 1
    if not line.strip():
        return _Line(row_number, None)
    try:
        fields = split_line(line, fmt.delimiter, number)
    except LineSplitError as fault:
        return _Line(row_number, [], [f"line: {fault}"], line)
    if len(fields) != len(header):
        reason = f"fields: the row has {len(fields)} fields; the header has {len(header)}"
        return _Line(row_number, fields, [reason])
    return _Line(row_number, fields, _field_faults(fields, header, fmt.max_field_chars) or None)


def _field_faults(fields: list[str], header: list[str], limit: int) -> list[str]:
    reasons = []
    for name, value in zip(header, fields, strict=True):
        if len(value) > limit:
            reasons.append(f"{name}: the value has {len(value):,} characters, over {limit:,}")
        found = CONTROL_CHARACTERS.search(value)
        if found:
            reasons.append(f"{name}: control character {found.group()!r} in the field")
    return reasons


def _read_text_chunks(path: Path, chunk_rows: int, fmt: LandingFormat) -> Iterator[_ChunkText]:
    delimiter, limit, has_control = fmt.delimiter, fmt.max_field_chars, CONTROL_CHARACTERS.search
    with _numbered_lines(path, fmt) as (header, lines):
        width = len(header)
        chunk = _ChunkText(header)
        for number, text in lines:
            # Most lines: no quote, nothing odd, as many fields as the header.
            if '"' not in text and len(text) <= limit and not has_control(text):
                fields = text.split(delimiter)
                if len(fields) == width:
                    chunk.row_numbers.append(number - 1)
                    chunk.records.append(fields)
                    if len(chunk.row_numbers) >= chunk_rows:
                        yield chunk
                        chunk = _ChunkText(header)
                    continue
            line = _split(number, text, header, fmt)
            if line.fields is None:
                chunk.blank_lines += 1
                continue
            if line.fault is None:
                chunk.row_numbers.append(line.row_number)
                chunk.records.append(line.fields)
            else:
                chunk.faults.append(_fault(line, header))
            if chunk.rows_read >= chunk_rows:
                yield chunk
                chunk = _ChunkText(header)
        if chunk.rows_read or chunk.blank_lines:
            yield chunk


def _fault(line: _Line, header: list[str]) -> _Fault:
    assert line.fields is not None and line.fault is not None  # noqa: S101
    if not line.fields:
        record: object = {"line": stored_text(line.text)}
    elif len(line.fields) == len(header):
        record = dict(zip(header, map(stored_text, line.fields), strict=True))
    else:
        record = {"fields": [stored_text(value) for value in line.fields]}
    first = line.fields[0] if line.fields else line.text.split(",", 1)[0]
    customer_id = normalize_value(stored_text(first, SHOWN_CHARS))
    return _Fault(line.row_number, customer_id, json.dumps(record, ensure_ascii=False), line.fault)


def stored_text(value: str, limit: int = STORED_FIELD_CHARS) -> str:
    """Text safe to store and show: control characters written as ``\\xNN``, cut to
    ``limit`` characters with the full length said."""
    if CONTROL_CHARACTERS.search(value):
        value = CONTROL_CHARACTERS.sub(lambda found: f"\\x{ord(found.group()):02x}", value)
    if len(value) > limit:
        return f"{value[:limit]}… ({len(value):,} characters)"
    return value


def read_raw_records(
    path: Path, row_numbers: set[int], fmt: LandingFormat | None = None
) -> dict[int, str]:
    """The given rows exactly as read, as JSON objects keyed by the header.

    A second pass over the file, made only when rows must be quarantined after validation
    (conflicting duplicates); it keeps the valid path free of per-row JSON.
    """
    found: dict[int, str] = {}
    fmt = fmt or LandingFormat()
    with _numbered_lines(path, fmt) as (header, lines):
        for number, text in lines:
            if number - 1 not in row_numbers:
                continue
            line = _split(number, text, header, fmt)
            if line.fields:
                record = dict(zip(header, line.fields, strict=False))
                found[line.row_number] = json.dumps(record, ensure_ascii=False)
                if len(found) == len(row_numbers):
                    break
    return found


def validate_text_rows(chunk: _ChunkText) -> ValidatedChunk:
    """Normalize, convert and validate one chunk; every row ends valid or rejected."""
    text = pd.DataFrame(chunk.records, columns=chunk.header, dtype=object)
    text.index = pd.Index(chunk.row_numbers, name="row_number")
    text = text[list(TELCO_COLUMNS)]
    typed, reasons = validate_text_frame(text)
    rejected_rows = sorted(reasons)
    valid = typed.drop(index=rejected_rows)
    rejects = _reject_frame(text, reasons, rejected_rows)
    if chunk.faults:
        rejects = pd.concat([rejects, _fault_rejects(chunk.faults)], ignore_index=True)
    return ValidatedChunk(
        valid=valid, rejects=rejects, rows_read=chunk.rows_read, blank_lines=chunk.blank_lines
    )


def validate_text_frame(text: pd.DataFrame) -> tuple[pd.DataFrame, dict[int, list[str]]]:
    """Normalize, convert and validate rows of text (the Telco columns, one row per record):
    every row typed as the raw table's, and every reason of each row that fails, keyed by the
    frame's index. The one path a landing file's rows and the API's records both take."""
    typed, reasons = convert_text_rows(text)
    _add_schema_failures(typed, reasons)
    return typed, reasons


@dataclass(frozen=True)
class ValidatedRecords:
    """Records validated as a landing file's rows are: the rows that passed and why the others
    failed, each keyed by the record's position in the input."""

    valid: pd.DataFrame  # CustomerSnapshotSchema's columns and types, as ingestion's valid rows
    reasons: dict[int, list[str]]  # position -> every reason, in ingestion's words


_TELCO_KEYS: Final = frozenset(TELCO_COLUMNS)
_TELCO_KEYS_WITHOUT_CHURN: Final = _TELCO_KEYS - {"Churn"}


def validate_records(
    records: Sequence[Mapping[str, object]], *, max_field_chars: int = 4096
) -> ValidatedRecords:
    """Validate customers sent as objects in the landing file's shape (the API's input) by the
    landing file's rules, with its messages, so that a customer the nightly ingestion would
    reject is rejected live for the same reasons.

    Keys match the Telco column names as a landing file's header does, without case and
    whitespace (``Customer Id`` is ``customerID``); an unknown key, or two keys naming one
    column, is a reason of its own, and the record's values are validated all the same. A
    column left out is a missing value, as a blank field is in a file: so Churn may be left
    out, and so may TotalCharges at tenure 0. Each value becomes the text a CSV field would
    carry (None: blank; ``12``: ``"12"``; ``29.85``: ``"29.85"``, never in exponent form;
    ``true``/``false``: ``"true"``/``"false"``, which a file's Yes/No and SeniorCitizen columns
    accept and its number columns refuse), then takes the file's path: field faults (control
    characters, fields over ``max_field_chars``) reject a record with those reasons alone, as
    they reject a line; the other records are normalized, converted and validated together.
    A record that is not a mapping is rejected with one reason.
    """
    text, reasons = _records_as_text(records)
    faults = _record_field_faults(text, max_field_chars)
    typed, value_reasons = validate_text_frame(text.drop(index=list(faults)))
    for position, found in (faults | value_reasons).items():
        reasons.setdefault(position, []).extend(found)
    valid = typed[~typed.index.isin(list(reasons))]
    return ValidatedRecords(valid=valid, reasons=dict(sorted(reasons.items())))


def _records_as_text(
    records: Sequence[Mapping[str, object]],
) -> tuple[pd.DataFrame, dict[int, list[str]]]:
    """The records as a frame of CSV text in the Telco columns (index: position), and the
    reasons found in their keys; a record that is not a mapping has a reason and no row."""
    rows: list[Mapping[str, object]] = []
    positions: list[int] = []
    reasons: dict[int, list[str]] = {}
    for position, record in enumerate(records):
        if type(record) is dict:  # what JSON gives: checked first, isinstance costs more
            row = record
        elif isinstance(record, Mapping):
            row = dict(record)
        else:
            reasons[position] = [
                f"record: {type(record).__name__}, not an object keyed by the Telco columns"
            ]
            continue
        if row.keys() not in (_TELCO_KEYS, _TELCO_KEYS_WITHOUT_CHURN):
            row, key_reasons = _aligned_record(record)
            if key_reasons:
                reasons[position] = key_reasons
        rows.append(row)
        positions.append(position)
    text = pd.DataFrame(rows, columns=list(TELCO_COLUMNS), dtype=object)
    text.index = pd.Index(positions, dtype="int64", name="position")
    for column in TELCO_COLUMNS:
        values = text[column]
        if pd.api.types.infer_dtype(values, skipna=True) not in {"string", "empty"}:
            text[column] = [csv_text(value) for value in values]
    return text, reasons


def _aligned_record(record: Mapping[str, object]) -> tuple[dict[str, object], list[str]]:
    """The record keyed by the Telco names its keys match, and what is wrong with its keys."""
    aligned: dict[str, object] = {}
    named: dict[str, list[str]] = {}
    unknown: list[str] = []
    for key, value in record.items():
        column = _TELCO_BY_CANONICAL.get(canonical_header_name(str(key)))
        if column is None:
            unknown.append(str(key))
            continue
        named.setdefault(column, []).append(str(key))
        aligned.setdefault(column, value)
    reasons = [f"unknown column {shown(key)}" for key in unknown]
    reasons += [
        f"{column}: named more than once, as {shown_names(keys)}"
        for column, keys in named.items()
        if len(keys) > 1
    ]
    return aligned, reasons


def csv_text(value: object) -> str | None:
    """The text a landing file's field would carry for a JSON value."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        # repr is the shortest text that reads back as the same float ("29.85"); "nan" (what
        # pandas fills an absent key with) is a null token, as in a file.
        text = float.__repr__(value)  # numpy's floats repr as np.float64(...)
        return np.format_float_positional(value, trim="-") if "e" in text else text
    if isinstance(value, list | dict):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)  # an int as Python writes it, anything else as it prints


def _record_field_faults(text: pd.DataFrame, limit: int) -> dict[int, list[str]]:
    """The field faults of each record that has any, worded and ordered as a line's are; all
    values are searched at once first, so a clean batch costs no per-record work."""
    every_value = [value for value in text.to_numpy().ravel().tolist() if isinstance(value, str)]
    if (
        not CONTROL_CHARACTERS.search("".join(every_value))
        and max(map(len, every_value), default=0) <= limit
    ):
        return {}  # the usual batch: nothing odd anywhere
    suspects = np.zeros(len(text), dtype=bool)
    for column in TELCO_COLUMNS:
        suspects |= [
            isinstance(value, str)
            and (len(value) > limit or CONTROL_CHARACTERS.search(value) is not None)
            for value in text[column].tolist()
        ]
    header = list(TELCO_COLUMNS)
    faults: dict[int, list[str]] = {}
    for position, *values in text[suspects].itertuples(name=None):
        fields = [value if isinstance(value, str) else "" for value in values]
        faults[int(position)] = _field_faults(fields, header, limit)
    return faults


def _as_json_lines(records: pd.DataFrame) -> list[str]:
    if records.empty:
        return []
    # Only "\n" separates the records: JSON escapes it inside strings, not U+0085 or U+2028.
    text = records.to_json(orient="records", lines=True, force_ascii=False)
    return text.rstrip("\n").split("\n")


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
    """Numbers of a text column; a value that is not a finite number, not whole where an
    integer is due, or outside the column's range becomes missing with its reason."""
    name = TELCO_NAME_OF[column]
    numbers = pd.to_numeric(values, errors="coerce")
    not_a_number = values.notna() & numbers.isna()
    for row_number, value in values[not_a_number].items():
        article = "an" if kind == "integer" else "a"
        reasons.setdefault(int(row_number), []).append(
            f"{name}: {shown(value)} is not {article} {kind}"
        )
    not_finite = numbers.notna() & ~np.isfinite(numbers.fillna(0))
    for row_number, value in values[not_finite].items():
        reasons.setdefault(int(row_number), []).append(
            f"{name}: {shown(value)} is not a finite number"
        )
    low, high = NUMBER_BOUNDS[column]
    outside = numbers.notna() & ~not_finite & ((numbers < low) | (numbers > high))
    for row_number, value in numbers[outside].items():
        reasons.setdefault(int(row_number), []).append(
            f"{name}: {number_text(value)} is outside the allowed range {bounds_text(column)}"
        )
    numbers = numbers.mask(not_finite | outside)
    if kind == "integer":
        fractional = numbers.notna() & (numbers != np.floor(numbers.fillna(0)))
        for row_number, value in values[fractional].items():
            reasons.setdefault(int(row_number), []).append(
                f"{name}: {shown(value)} is not an integer"
            )
        return numbers.mask(fractional).round().astype("Int64")
    return numbers.astype(float)


def number_text(value: float) -> str:
    """A number as a person writes it: whole numbers without a fraction, huge ones short."""
    if abs(value) >= 1e15:
        return f"{value:.6g}"
    return str(int(value)) if float(value).is_integer() else f"{value:.2f}"


def bounds_text(column: str) -> str:
    low, high = NUMBER_BOUNDS[column]
    return f"{number_text(low)}..{number_text(high)}"


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
        return f"{name}: {value} is outside the allowed range {bounds_text(column)}"
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


def _fault_rejects(faults: list[_Fault]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "row_number": [fault.row_number for fault in faults],
            "customer_id": [fault.customer_id for fault in faults],
            "record": [fault.record for fault in faults],
            "reasons": [fault.reasons for fault in faults],
        }
    )
