"""Putting a file into the landing folder as a day's snapshot: checked first, never over
another day's file, converted to the landing format when it was written in another, and
moved into place whole (a reader never sees half a file)."""

from __future__ import annotations

import csv
import os
import re
import shutil
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Final

from retention_pipelines.core.ingestion import (
    LandingFileFacts,
    LandingFormat,
    LineSplitError,
    check_landing_file,
    landing_file_names,
    physical_lines,
    split_line,
)

_ISO_DATE: Final = re.compile(r"\d{4}-\d{2}-\d{2}")


class LandingError(ValueError):
    """Why a file was not landed, in one sentence."""


def parse_snapshot_date(value: str) -> date:
    """A date written ``YYYY-MM-DD``, and nothing else (``20250101`` is refused)."""
    if not _ISO_DATE.fullmatch(value):
        raise LandingError(f"{value[:64]!r} is not a date written YYYY-MM-DD")
    try:
        return date.fromisoformat(value)
    except ValueError as error:
        raise LandingError(f"{value!r} is not a calendar date") from error


def check_snapshot_date(day: date, *, first: date, today: date) -> None:
    """A snapshot date has a partition: from the first partition to tomorrow."""
    last = today + timedelta(days=1)
    if day < first:
        raise LandingError(
            f"{day} is before the first partition, {first} (RETENTION_PARTITIONS_START_DATE)"
        )
    if day > last:
        raise LandingError(f"{day} is in the future: snapshot dates run to tomorrow, {last}")


@dataclass(frozen=True)
class Landed:
    """What landing a file did."""

    target: Path
    facts: LandingFileFacts
    converted: bool
    replaced: tuple[Path, ...]


def land_file(
    source: Path,
    folder: Path,
    day: date,
    *,
    source_format: LandingFormat,
    landing_format: LandingFormat,
    max_bytes: int,
    replace: bool = False,
) -> Landed:
    """Check ``source`` and put it in ``folder`` as the landing file of ``day``.

    A file in another encoding or delimiter than the landing format is converted (each line
    re-written; a line that cannot be split is kept as it was, to be quarantined); a gzip
    file in the landing format is kept compressed. A day that already has a landing file
    keeps it unless ``replace``.
    """
    facts = check_landing_file(source, max_bytes=max_bytes, fmt=source_format)
    convert = (source_format.encoding, source_format.delimiter) != (
        landing_format.encoding,
        landing_format.delimiter,
    )
    plain, packed = (folder / name for name in landing_file_names(day))
    target = packed if facts.compressed and not convert else plain
    existing = tuple(path for path in (plain, packed) if path.exists())
    if any(path.samefile(source) for path in existing):
        raise LandingError(f"{source} is already the landing file of {day}")
    if existing and not replace:
        raise LandingError(
            f"{day} already has a landing file, {existing[0]}: pass --replace to replace it"
        )
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / f".{target.name}.partial"
    try:
        if convert:
            convert_file(source, partial, source_format, landing_format)
        else:
            shutil.copyfile(source, partial)
        for path in existing:
            if path != target:
                path.unlink()
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)
    return Landed(target=target, facts=facts, converted=convert, replaced=existing)


def convert_file(
    source: Path, target: Path, source_format: LandingFormat, fmt: LandingFormat
) -> None:
    """Re-write ``source`` line by line in the encoding and delimiter of ``fmt``."""
    with (
        physical_lines(source, source_format) as lines,
        target.open("w", encoding=fmt.encoding, newline="") as out,
    ):
        writer = csv.writer(out, delimiter=fmt.delimiter, lineterminator="\n")
        for number, line in lines:
            try:
                fields = split_line(line, source_format.delimiter, number) if line.strip() else None
            except LineSplitError:
                fields = None
            if fields is None:
                out.write(f"{line}\n")
            else:
                writer.writerow(fields)
        out.flush()
        os.fsync(out.fileno())
