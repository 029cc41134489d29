"""The raw tables: a landing file's validated rows and rejects, and what each ingestion read.

A partition is replaced whole: rows are copied into temporary tables, duplicates are settled
there across the whole file, then the partition's old rows are deleted and the new ones
inserted before a single commit, under the partition's advisory lock (two ingestions of one
date take turns). A failure anywhere before that commit leaves the previous partition
exactly as it was.

The rows of erased customers (the suppression list, read once in the same transaction) are
dropped from each chunk before it is copied anywhere, and counted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date
from typing import Final

import pandas as pd
import psycopg
from psycopg import sql

from retention_pipelines.core.database import connect
from retention_pipelines.core.erasure import erased_pseudonyms
from retention_pipelines.core.ingestion import (
    LandingFileFacts,
    Suppression,
    ValidatedChunk,
    read_raw_records,
)
from retention_pipelines.core.schemas import RAW_COLUMN_NAMES
from retention_pipelines.core.warehouse.streams import (
    copy_in,
    delete_partition,
    partition_transaction,
    query_frame,
    scalar,
)
from retention_pipelines.core.warehouse.tables import INGESTION_RUNS, RAW_REJECTS, RAW_SNAPSHOTS

logger = logging.getLogger(__name__)

SNAPSHOT_COLUMNS = list(RAW_COLUMN_NAMES.values())
# Temporary tables live in session memory up to temp_buffers; a day's rows should not spill.
_STAGE_DDL = f"""
set local temp_buffers = '512MB';
create temp table stage_snapshots (like {RAW_SNAPSHOTS} including defaults) on commit drop;
create temp table stage_rejects (like {RAW_REJECTS} including defaults) on commit drop;
"""


@dataclass
class IngestionSummary:
    """Where every row read went; ``rows_read`` always equals the sum of the other four."""

    snapshot_date: date
    source: str
    rows_read: int = 0
    rows_valid: int = 0
    rows_rejected: int = 0
    duplicates_collapsed: int = 0
    rows_suppressed: int = 0  # rows of erased customers, left out
    conflicting_duplicate_rows: int = 0
    blank_lines: int = 0
    reject_reasons: dict[str, int] = field(default_factory=dict)

    @property
    def reject_share(self) -> float:
        return self.rows_rejected / self.rows_read if self.rows_read else 0.0

    @property
    def reconciles(self) -> bool:
        return self.rows_read == (
            self.rows_valid + self.rows_rejected + self.duplicates_collapsed + self.rows_suppressed
        )


BeforeCommit = Callable[[psycopg.Connection], None]


def replace_snapshot_partition(
    url: str,
    *,
    snapshot_date: date,
    facts: LandingFileFacts,
    chunks: Iterable[ValidatedChunk],
    on_chunk: Callable[[int], None] | None = None,
    before_commit: BeforeCommit | None = None,
    pseudonym_key: bytes | None = None,
) -> IngestionSummary:
    """Load one landing file as the partition ``snapshot_date`` of the raw tables, without
    the rows of erased customers.

    ``pseudonym_key`` recognises erased customers; without it, an ingestion while the
    suppression list is not empty raises :class:`SuppressionKeyError` before writing
    anything. ``on_chunk`` is told the running count of rows read (progress);
    ``before_commit`` runs inside the transaction just before it commits (tests inject
    failures there).
    """
    source = facts.path.name
    summary = IngestionSummary(snapshot_date=snapshot_date, source=source)
    with partition_transaction(url, RAW_SNAPSHOTS, snapshot_date) as conn:
        suppression = Suppression(erased_pseudonyms(conn), pseudonym_key)
        conn.execute(_STAGE_DDL)
        for validated in chunks:
            chunk, suppressed = suppression.drop(validated)
            summary.rows_read += chunk.rows_read
            summary.rows_suppressed += suppressed
            summary.blank_lines += chunk.blank_lines
            _copy_valid(conn, chunk, snapshot_date, source)
            _copy_rejects(conn, chunk.rejects, snapshot_date, source)
            if on_chunk is not None:
                on_chunk(summary.rows_read)
        conn.execute("analyze stage_snapshots; analyze stage_rejects")
        summary.conflicting_duplicate_rows = _settle_duplicates(conn, summary, facts)
        _replace_partition(conn, snapshot_date)
        summary.rows_valid = _count(conn, RAW_SNAPSHOTS, snapshot_date)
        summary.rows_rejected = _count(conn, RAW_REJECTS, snapshot_date)
        summary.reject_reasons = reject_reason_counts(conn, snapshot_date)
        _record_run(conn, summary, facts)
        if before_commit is not None:
            before_commit(conn)
    return summary


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
    copy_in(conn, "stage_snapshots", frame)


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
    copy_in(conn, "stage_rejects", frame)


def _pg_text_array(values: list[str]) -> str:
    escaped = (value.replace("\\", "\\\\").replace('"', '\\"') for value in values)
    return "{" + ",".join(f'"{value}"' for value in escaped) + "}"


def _settle_duplicates(
    conn: psycopg.Connection, summary: IngestionSummary, facts: LandingFileFacts
) -> int:
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
    moved = _quarantine_conflicting_valid_rows(conn, facts)
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


def _quarantine_conflicting_valid_rows(conn: psycopg.Connection, facts: LandingFileFacts) -> int:
    """Move valid rows of conflicting ids to the rejects, with their records as read."""
    rows = conn.execute(
        "select source_row_number from stage_snapshots"
        " where customer_id in (select customer_id from conflicting_ids)"
    ).fetchall()
    if not rows:
        return 0
    records = read_raw_records(facts.path, {int(row[0]) for row in rows}, facts.fmt)
    conn.execute(
        "create temp table conflict_records (row_number integer, record jsonb) on commit drop"
    )
    copy_in(
        conn,
        "conflict_records",
        pd.DataFrame({"row_number": list(records), "record": list(records.values())}),
    )
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
    delete_partition(conn, RAW_SNAPSHOTS, snapshot_date)
    conn.execute(
        f"insert into {RAW_SNAPSHOTS} ({columns}) select {columns} from stage_snapshots"
        " order by customer_id"  # key order: the primary-key index is built sequentially
    )
    delete_partition(conn, RAW_REJECTS, snapshot_date)
    conn.execute(f"insert into {RAW_REJECTS} select * from stage_rejects")


def _count(conn: psycopg.Connection, table: str, snapshot_date: date) -> int:
    return int(
        scalar(conn, f"select count(*) from {table} where snapshot_date = %s", (snapshot_date,))
        or 0
    )


def reject_reason_counts(conn: psycopg.Connection, snapshot_date: date) -> dict[str, int]:
    """Rejected rows per kind of reason (the reason up to its first colon: the column)."""
    rows = conn.execute(
        f"""
        select split_part(reason, ':', 1) as kind, count(*)
        from {RAW_REJECTS}, unnest(reasons) as reason
        where snapshot_date = %s group by kind order by count(*) desc, kind
        """,
        (snapshot_date,),
    ).fetchall()
    return {str(kind): int(count) for kind, count in rows}


def _record_run(
    conn: psycopg.Connection, summary: IngestionSummary, facts: LandingFileFacts
) -> None:
    conn.execute(
        f"""
        insert into {INGESTION_RUNS} (snapshot_date, source, file_sha256, file_bytes, rows_read,
            rows_valid, rows_rejected, duplicates_collapsed, rows_suppressed)
        values (%s, %s, %s, %s, %s, %s, %s, %s, %s)
        on conflict (snapshot_date) do update set source = excluded.source,
            file_sha256 = excluded.file_sha256, file_bytes = excluded.file_bytes,
            rows_read = excluded.rows_read, rows_valid = excluded.rows_valid,
            rows_rejected = excluded.rows_rejected,
            duplicates_collapsed = excluded.duplicates_collapsed,
            rows_suppressed = excluded.rows_suppressed, ingested_at = now()
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
            summary.rows_suppressed,
        ),
    )


@dataclass(frozen=True)
class PartitionCounts:
    """What the warehouse holds for one partition, read back after the commit."""

    rows_read: int
    rows_valid: int
    rows_rejected: int
    duplicates_collapsed: int
    rows_suppressed: int = 0

    @property
    def reconciles(self) -> bool:
        return self.rows_read == (
            self.rows_valid + self.rows_rejected + self.duplicates_collapsed + self.rows_suppressed
        )


def partition_counts(url: str, snapshot_date: date) -> PartitionCounts | None:
    """Counts read from the tables themselves, against what the ingestion run recorded."""
    with connect(url) as conn:
        run = conn.execute(
            f"select rows_read, duplicates_collapsed, rows_suppressed from {INGESTION_RUNS}"
            " where snapshot_date = %s",
            (snapshot_date,),
        ).fetchone()
        if run is None:
            return None
        return PartitionCounts(
            rows_read=int(run[0]),
            rows_valid=_count(conn, RAW_SNAPSHOTS, snapshot_date),
            rows_rejected=_count(conn, RAW_REJECTS, snapshot_date),
            duplicates_collapsed=int(run[1]),
            rows_suppressed=int(run[2]),
        )


# The columns whose values a partition's profile counts: what tells at a glance that a file
# was read right (each in its place, a plausible mix) and whether it brings churn labels.
PROFILE_COLUMNS: Final[tuple[str, ...]] = (
    "contract",
    "internet_service",
    "payment_method",
    "churn",
)
UNLABELLED: Final = "(not known yet)"


def partition_profile(url: str, snapshot_date: date) -> pd.DataFrame:
    """How a partition's valid rows spread over the values of :data:`PROFILE_COLUMNS`:
    ``column``, ``value``, ``rows`` and their ``share``, in one pass over the partition.

    This, not a sample of rows, is what the asset's metadata shows: a row is a customer's
    personal attributes, and the metadata lives outside the warehouse.
    """
    columns = [sql.Identifier(column) for column in PROFILE_COLUMNS]
    which = sql.SQL(" ").join(
        sql.SQL("when grouping({}) = 0 then {}").format(column, sql.Literal(name))
        for column, name in zip(columns, PROFILE_COLUMNS, strict=True)
    )
    value = sql.SQL(" ").join(
        sql.SQL("when grouping({0}) = 0 then {0}").format(column) for column in columns
    )
    query = sql.SQL(
        'select case {which} end as "column",'
        ' coalesce(case {value} end, {unlabelled}) as "value", count(*) as "rows"'
        " from {table} where snapshot_date = %s"
        " group by grouping sets ({sets}) order by 3 desc, 2"
    ).format(
        which=which,
        value=value,
        unlabelled=sql.Literal(UNLABELLED),
        table=sql.Identifier(*RAW_SNAPSHOTS.split(".")),
        sets=sql.SQL(", ").join(sql.SQL("({})").format(column) for column in columns),
    )
    with connect(url) as conn:
        profile = query_frame(conn, query, (snapshot_date,))
    order = {name: position for position, name in enumerate(PROFILE_COLUMNS)}
    profile = profile.sort_values(
        "column", key=lambda names: names.map(order), kind="stable", ignore_index=True
    )
    totals = profile.groupby("column")["rows"].transform("sum")
    profile["share"] = (profile["rows"] / totals).round(4)
    return profile
