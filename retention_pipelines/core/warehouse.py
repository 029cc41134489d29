"""Warehouse writes: COPY into staging tables, then replace a partition in one transaction.

A partition is replaced whole: rows are copied into temporary tables, duplicates are settled
there across the whole file, then the partition's old rows are deleted and the new ones
inserted before a single commit. A failure anywhere before that commit leaves the previous
partition exactly as it was.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import pandas as pd
import psycopg
import pyarrow as pa
import pyarrow.csv as pa_csv

from retention_pipelines.core.ingestion import (
    LandingFileFacts,
    ValidatedChunk,
    read_raw_records,
)
from retention_pipelines.core.schemas import RAW_COLUMN_NAMES

logger = logging.getLogger(__name__)

SNAPSHOT_COLUMNS = list(RAW_COLUMN_NAMES.values())
# Temporary tables live in session memory up to temp_buffers; a day's rows should not spill.
_STAGE_DDL = """
set local temp_buffers = '512MB';
create temp table stage_snapshots (like raw.customer_snapshots including defaults) on commit drop;
create temp table stage_rejects (like raw.customer_rejects including defaults) on commit drop;
"""


@dataclass
class IngestionSummary:
    """Where every row read went; ``rows_read`` always equals the sum of the other three."""

    snapshot_date: date
    source: str
    rows_read: int = 0
    rows_valid: int = 0
    rows_rejected: int = 0
    duplicates_collapsed: int = 0
    conflicting_duplicate_rows: int = 0
    reject_reasons: dict[str, int] = field(default_factory=dict)

    @property
    def reject_share(self) -> float:
        return self.rows_rejected / self.rows_read if self.rows_read else 0.0

    @property
    def reconciles(self) -> bool:
        return self.rows_read == self.rows_valid + self.rows_rejected + self.duplicates_collapsed


BeforeCommit = Callable[[psycopg.Connection], None]


def replace_snapshot_partition(
    url: str,
    *,
    snapshot_date: date,
    facts: LandingFileFacts,
    chunks: Iterable[ValidatedChunk],
    on_chunk: Callable[[int], None] | None = None,
    before_commit: BeforeCommit | None = None,
) -> IngestionSummary:
    """Load one landing file as the partition ``snapshot_date`` of the raw tables.

    ``on_chunk`` is told the running count of rows read (progress); ``before_commit`` runs
    inside the transaction just before it commits (tests inject failures there).
    """
    source = facts.path.name
    summary = IngestionSummary(snapshot_date=snapshot_date, source=source)
    with psycopg.connect(url) as conn, conn.transaction():
        conn.execute(_STAGE_DDL)
        for chunk in chunks:
            summary.rows_read += chunk.rows_read
            _copy_valid(conn, chunk, snapshot_date, source)
            _copy_rejects(conn, chunk.rejects, snapshot_date, source)
            if on_chunk is not None:
                on_chunk(summary.rows_read)
        conn.execute("analyze stage_snapshots; analyze stage_rejects")
        summary.conflicting_duplicate_rows = _settle_duplicates(conn, summary, facts.path)
        _replace_partition(conn, snapshot_date)
        summary.rows_valid = _count(conn, "raw.customer_snapshots", snapshot_date)
        summary.rows_rejected = _count(conn, "raw.customer_rejects", snapshot_date)
        summary.reject_reasons = reject_reason_counts(conn, snapshot_date)
        _record_run(conn, summary, facts)
        if before_commit is not None:
            before_commit(conn)
    return summary


def copy_frame(
    conn: psycopg.Connection, table: str, columns: list[str], frame: pd.DataFrame
) -> None:
    """COPY a frame in CSV form. Arrow's writer quotes every string, so an empty string stays
    an empty string and only a missing value (written unquoted, empty) becomes NULL."""
    if frame.empty:
        return
    buffer = pa.BufferOutputStream()
    pa_csv.write_csv(
        pa.Table.from_pandas(frame, preserve_index=False),
        buffer,
        pa_csv.WriteOptions(include_header=False),
    )
    column_list = ", ".join(columns)
    with conn.cursor().copy(f"copy {table} ({column_list}) from stdin with (format csv)") as copy:
        copy.write(buffer.getvalue().to_pybytes())


def _copy_valid(
    conn: psycopg.Connection, chunk: ValidatedChunk, snapshot_date: date, source: str
) -> None:
    valid = chunk.valid
    if valid.empty:
        return
    frame = valid[SNAPSHOT_COLUMNS].copy()
    frame["snapshot_date"] = snapshot_date.isoformat()
    frame["source"] = source
    frame["source_row_number"] = valid.index.to_numpy()
    copy_frame(conn, "stage_snapshots", list(frame.columns), frame)


def _copy_rejects(
    conn: psycopg.Connection, rejects: pd.DataFrame, snapshot_date: date, source: str
) -> None:
    if rejects.empty:
        return
    frame = pd.DataFrame(
        {
            "snapshot_date": snapshot_date.isoformat(),
            "source": source,
            "row_number": rejects["row_number"],
            "customer_id": rejects["customer_id"],
            "record": rejects["record"],
            "reasons": [_pg_text_array(reasons) for reasons in rejects["reasons"]],
        }
    )
    copy_frame(conn, "stage_rejects", list(frame.columns), frame)


def _pg_text_array(values: list[str]) -> str:
    escaped = (value.replace("\\", "\\\\").replace('"', '\\"') for value in values)
    return "{" + ",".join(f'"{value}"' for value in escaped) + "}"


def _settle_duplicates(conn: psycopg.Connection, summary: IngestionSummary, path: Path) -> int:
    """Collapse exact duplicates to their first row; reject every row of a conflicting id.

    An id is conflicting when it appears with different values, including when one of its
    rows was itself rejected: which one is right cannot be known, so none is kept.
    """
    conn.execute(
        """
        create temp table duplicate_ids on commit drop as
        select customer_id from stage_snapshots group by customer_id having count(*) > 1;
        analyze duplicate_ids;
        """
    )
    conn.execute(
        f"""
        create temp table conflicting_ids on commit drop as
        select customer_id from stage_snapshots
        where customer_id in (select customer_id from duplicate_ids)
        group by customer_id having count(distinct ({", ".join(SNAPSHOT_COLUMNS)})) > 1
        union
        select distinct s.customer_id from stage_snapshots s
        join stage_rejects r on r.customer_id = s.customer_id;
        analyze conflicting_ids;
        """
    )
    conn.execute(
        f"""
        update stage_rejects r set reasons = r.reasons || format({_CONFLICT_REASON}, r.customer_id)
        where r.customer_id in (select customer_id from conflicting_ids)
        """
    )
    moved = _quarantine_conflicting_valid_rows(conn, path)
    collapsed = conn.execute(
        """
        delete from stage_snapshots later using stage_snapshots first
        where later.customer_id in (select customer_id from duplicate_ids)
          and later.customer_id = first.customer_id
          and later.source_row_number > first.source_row_number
        """
    ).rowcount
    summary.duplicates_collapsed = collapsed
    return moved


_CONFLICT_REASON = "'customerID: %s appears in more than one row with different values'"


def _quarantine_conflicting_valid_rows(conn: psycopg.Connection, path: Path) -> int:
    """Move valid rows of conflicting ids to the rejects, with their records as read."""
    rows = conn.execute(
        "select source_row_number from stage_snapshots"
        " where customer_id in (select customer_id from conflicting_ids)"
    ).fetchall()
    if not rows:
        return 0
    records = read_raw_records(path, {int(row[0]) for row in rows})
    conn.execute(
        "create temp table conflict_records (row_number integer, record jsonb) on commit drop"
    )
    with conn.cursor().copy("copy conflict_records (row_number, record) from stdin") as copy:
        for row_number, record in records.items():
            copy.write_row((row_number, record))
    conn.execute(
        f"""
        insert into stage_rejects (snapshot_date, source, row_number, customer_id, record, reasons)
        select s.snapshot_date, s.source, s.source_row_number, s.customer_id, c.record,
               array[format({_CONFLICT_REASON}, s.customer_id)]
        from stage_snapshots s join conflict_records c on c.row_number = s.source_row_number
        where s.customer_id in (select customer_id from conflicting_ids)
        """
    )
    conn.execute(
        "delete from stage_snapshots where customer_id in (select customer_id from conflicting_ids)"
    )
    return len(rows)


def _replace_partition(conn: psycopg.Connection, snapshot_date: date) -> None:
    columns = ", ".join(["snapshot_date", *SNAPSHOT_COLUMNS, "source", "source_row_number"])
    conn.execute("delete from raw.customer_snapshots where snapshot_date = %s", (snapshot_date,))
    conn.execute(
        f"insert into raw.customer_snapshots ({columns}) select {columns} from stage_snapshots"
        " order by customer_id"  # key order: the primary-key index is built sequentially
    )
    conn.execute("delete from raw.customer_rejects where snapshot_date = %s", (snapshot_date,))
    conn.execute("insert into raw.customer_rejects select * from stage_rejects")


def _count(conn: psycopg.Connection, table: str, snapshot_date: date) -> int:
    row = conn.execute(
        f"select count(*) from {table} where snapshot_date = %s", (snapshot_date,)
    ).fetchone()
    return int(row[0]) if row else 0


def reject_reason_counts(conn: psycopg.Connection, snapshot_date: date) -> dict[str, int]:
    """Rejected rows per kind of reason (the reason up to its first colon: the column)."""
    rows = conn.execute(
        """
        select split_part(reason, ':', 1) as kind, count(*)
        from raw.customer_rejects, unnest(reasons) as reason
        where snapshot_date = %s group by kind order by count(*) desc, kind
        """,
        (snapshot_date,),
    ).fetchall()
    return {str(kind): int(count) for kind, count in rows}


def _record_run(
    conn: psycopg.Connection, summary: IngestionSummary, facts: LandingFileFacts
) -> None:
    conn.execute(
        """
        insert into raw.ingestion_runs (snapshot_date, source, file_sha256, file_bytes, rows_read,
            rows_valid, rows_rejected, duplicates_collapsed)
        values (%s, %s, %s, %s, %s, %s, %s, %s)
        on conflict (snapshot_date) do update set source = excluded.source,
            file_sha256 = excluded.file_sha256, file_bytes = excluded.file_bytes,
            rows_read = excluded.rows_read, rows_valid = excluded.rows_valid,
            rows_rejected = excluded.rows_rejected,
            duplicates_collapsed = excluded.duplicates_collapsed, ingested_at = now()
        """,
        (
            summary.snapshot_date,
            summary.source,
            facts.sha256,
            facts.size_bytes,
            summary.rows_read,
            summary.rows_valid,
            summary.rows_rejected,
            summary.duplicates_collapsed,
        ),
    )


@dataclass(frozen=True)
class PartitionCounts:
    """What the warehouse holds for one partition, read back after the commit."""

    rows_read: int
    rows_valid: int
    rows_rejected: int
    duplicates_collapsed: int

    @property
    def reconciles(self) -> bool:
        return self.rows_read == self.rows_valid + self.rows_rejected + self.duplicates_collapsed


def partition_counts(url: str, snapshot_date: date) -> PartitionCounts | None:
    """Counts read from the tables themselves, against what the ingestion run recorded."""
    with psycopg.connect(url) as conn:
        run = conn.execute(
            "select rows_read, duplicates_collapsed from raw.ingestion_runs"
            " where snapshot_date = %s",
            (snapshot_date,),
        ).fetchone()
        if run is None:
            return None
        return PartitionCounts(
            rows_read=int(run[0]),
            rows_valid=_count(conn, "raw.customer_snapshots", snapshot_date),
            rows_rejected=_count(conn, "raw.customer_rejects", snapshot_date),
            duplicates_collapsed=int(run[1]),
        )


def preview_partition(url: str, snapshot_date: date, limit: int = 5) -> str:
    """The first valid rows of a partition as a Markdown table, for the asset's metadata."""
    columns = ["customer_id", "tenure", "contract", "internet_service", "monthly_charges", "churn"]
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            f"select {', '.join(columns)} from raw.customer_snapshots where snapshot_date = %s"
            " order by source_row_number limit %s",
            (snapshot_date, limit),
        ).fetchall()
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    lines += [
        "| " + " | ".join("" if value is None else str(value) for value in row) + " |"
        for row in rows
    ]
    return "\n".join(lines)


def read_labelled_features(url: str, snapshots: int) -> tuple[pd.DataFrame, list[date]]:
    """Labelled rows of the latest ``snapshots`` labelled snapshot dates, one row per customer
    (its latest), and the dates used."""
    with psycopg.connect(url) as conn:
        dates = [
            row[0]
            for row in conn.execute(
                "select snapshot_date from features.customer_features where churned is not null"
                " group by snapshot_date order by snapshot_date desc limit %s",
                (snapshots,),
            ).fetchall()
        ]
        cursor = conn.execute(
            "select distinct on (customer_id) * from features.customer_features"
            " where snapshot_date = any(%s) and churned is not null"
            " order by customer_id, snapshot_date desc",
            (dates,),
        )
        frame = pd.DataFrame(
            cursor.fetchall(), columns=[column.name for column in cursor.description]
        )
    return frame, sorted(dates)
