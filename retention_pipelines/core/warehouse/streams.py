"""How rows move between Postgres and Python: one streaming reader (``COPY ... TO STDOUT``
parsed by Arrow a chunk at a time), one writer (``COPY ... FROM STDIN`` of a frame), and one
way to replace a partition in one transaction.

Memory follows the chunk size, never the row count: the reader holds at most one chunk of
CSV text and yields a frame per chunk; the writer takes one frame at a time.
"""

from __future__ import annotations

import io
import logging
import math
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import date

import numpy as np
import pandas as pd
import psycopg
import pyarrow as pa
import pyarrow.csv as pa_csv
from psycopg import sql

from retention_pipelines.core.database import connect

logger = logging.getLogger(__name__)

# Postgres' CSV: booleans are t/f, NULL is an unquoted empty field.
_TRUE, _FALSE = ["t"], ["f"]
# A sample keeps a customer when this many low bits of a seeded hash of its id fall under a cut.
_SAMPLE_BUCKETS = 1_048_576
SAMPLE_SEED = 20_240_101
# The warehouse's lock of steps that create or replace relations (dbt); fixed, like the
# migrations' own, and distinct from it.
DDL_LOCK_KEY = 0x52455444


def copy_tables(
    conn: psycopg.Connection,
    select: sql.Composable,
    columns: Sequence[str],
    *,
    types: Mapping[str, pa.DataType],
    chunk_rows: int,
) -> Iterator[pa.Table]:
    """The rows of ``select`` as Arrow tables of ``chunk_rows`` rows (the last one shorter).

    One COPY streams the rows out as CSV; the stream is cut at line ends into chunks that
    Arrow parses with ``types`` (columns not named are inferred). ``columns`` name the
    query's columns in order. A value holding a line break would split a row: the callers'
    columns cannot hold one (validated ids, categories, flags and numbers), and a chunk that
    parses to another row count fails loudly rather than misread.
    """
    query = sql.SQL("copy ({select}) to stdout with (format csv)").format(select=select)
    pending, lines = bytearray(), 0
    with conn.cursor().copy(query) as copy:
        for block in copy:
            pending += block
            lines += bytes(block).count(b"\n")
            if lines < chunk_rows:
                continue
            ends = np.flatnonzero(np.frombuffer(pending, dtype=np.uint8) == ord("\n"))
            while lines >= chunk_rows:
                cut = int(ends[chunk_rows - 1]) + 1
                yield _parse(bytes(pending[:cut]), columns, types, chunk_rows)
                del pending[:cut]
                ends = ends[chunk_rows:] - cut
                lines -= chunk_rows
    if pending:
        yield _parse(bytes(pending), columns, types, lines)


def copy_out(
    conn: psycopg.Connection,
    select: sql.Composable,
    columns: Sequence[str],
    *,
    types: Mapping[str, pa.DataType],
    chunk_rows: int,
) -> Iterator[pd.DataFrame]:
    """The rows of ``select`` as frames of ``chunk_rows`` rows (see :func:`copy_tables`)."""
    for table in copy_tables(conn, select, columns, types=types, chunk_rows=chunk_rows):
        yield table.to_pandas(split_blocks=True, self_destruct=True)


def read_frame(
    conn: psycopg.Connection,
    select: sql.Composable,
    columns: Sequence[str],
    *,
    types: Mapping[str, pa.DataType],
    chunk_rows: int,
) -> pd.DataFrame:
    """All the rows of ``select`` as one frame, for a reader that needs them together: the
    chunks are joined as Arrow tables (dictionaries unified, so a dictionary column becomes
    one pandas categorical) and converted once. No row: an empty frame with ``columns``."""
    tables = list(copy_tables(conn, select, columns, types=types, chunk_rows=chunk_rows))
    if not tables:
        return pd.DataFrame({column: pd.Series(dtype="object") for column in columns})
    joined = pa.concat_tables(tables).unify_dictionaries()
    tables.clear()
    return joined.to_pandas(split_blocks=True, self_destruct=True)


def _parse(
    data: bytes, columns: Sequence[str], types: Mapping[str, pa.DataType], rows: int
) -> pa.Table:
    table = pa_csv.read_csv(
        io.BytesIO(data),
        read_options=pa_csv.ReadOptions(column_names=list(columns)),
        convert_options=pa_csv.ConvertOptions(
            column_types=dict(types),
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,
            true_values=_TRUE,
            false_values=_FALSE,
        ),
    )
    if table.num_rows != rows:
        raise ValueError(f"a chunk of {rows} lines parsed to {table.num_rows} rows")
    return table


def copy_in(
    conn: psycopg.Connection, table: str, frame: pd.DataFrame, columns: Sequence[str] | None = None
) -> int:
    """COPY a frame into ``table`` (its columns, or ``columns`` in the frame's order); return
    the rows copied. Arrow's CSV writer quotes every string, so an empty string stays an
    empty string and only a missing value (written unquoted, empty) becomes NULL."""
    if frame.empty:
        return 0
    buffer = pa.BufferOutputStream()
    pa_csv.write_csv(
        pa.Table.from_pandas(frame, preserve_index=False),
        buffer,
        pa_csv.WriteOptions(include_header=False),
    )
    names = sql.SQL(", ").join(map(sql.Identifier, columns or list(frame.columns)))
    statement = sql.SQL("copy {table} ({names}) from stdin with (format csv)").format(
        table=table_name(table), names=names
    )
    with conn.cursor().copy(statement) as copy:
        copy.write(buffer.getvalue().to_pybytes())
    return len(frame)


def table_name(table: str) -> sql.Identifier:
    """``schema.table`` as a quoted identifier."""
    return sql.Identifier(*table.split("."))


@contextmanager
def partition_transaction(url: str, table: str, key: date) -> Iterator[psycopg.Connection]:
    """A transaction holding the advisory lock of ``table``'s partition ``key``.

    Two writers of one partition take turns; readers see the previous rows until the
    commit, and an exception anywhere inside rolls everything back.
    """
    with connect(url) as conn, conn.transaction():
        lock_partition(conn, table, key)
        yield conn


def lock_partition(conn: psycopg.Connection, table: str, key: date) -> None:
    """The advisory lock of one partition, held until the transaction ends."""
    namespace = zlib.crc32(table.encode()) & 0x7FFF_FFFF
    conn.execute("select pg_advisory_xact_lock(%s, %s)", (namespace, (key - date(2000, 1, 1)).days))


@contextmanager
def ddl_lock(url: str, on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold the warehouse's DDL lock for the duration of the block: one dbt command at a time.

    dbt creates and replaces views and tables under temporary names, and two commands doing so
    at once on one database collide (``relation ... already exists``), so every dbt
    invocation against a warehouse runs inside this block, whichever process or run it
    belongs to. The lock is a session-level advisory lock on a connection of its own, held
    idle while dbt works: it is released when the block ends, and by the server when the
    process dies, so a killed run never leaves it behind. ``on_wait`` (default: the log)
    hears one line when another command holds it.
    """
    with connect(url, autocommit=True) as conn:
        if not scalar(conn, "select pg_try_advisory_lock(%s)", (DDL_LOCK_KEY,)):
            (on_wait or logger.info)("waiting for another dbt run on this warehouse to finish")
            conn.execute("select pg_advisory_lock(%s)", (DDL_LOCK_KEY,))
        yield  # closing the connection releases the lock


def delete_partition(
    conn: psycopg.Connection, table: str, key: date, *, key_column: str = "snapshot_date"
) -> int:
    """Delete a partition's rows (inside the caller's transaction); return how many."""
    statement = sql.SQL("delete from {table} where {column} = %s").format(
        table=table_name(table), column=sql.Identifier(key_column)
    )
    return conn.execute(statement, (key,)).rowcount


def stable_sample(id_column: sql.Composable, *, rows: int, max_rows: int) -> sql.Composable:
    """A predicate keeping about ``max_rows`` of ``rows`` rows, by a seeded hash of the id:
    the same customers every time, drawn in Postgres. True when no sampling is needed."""
    if rows <= max_rows:
        return sql.SQL("true")
    return sql.SQL("(hashtextextended({id}, {seed}) & {mask}) < {cut}").format(
        id=id_column,
        seed=sql.Literal(SAMPLE_SEED),
        mask=sql.Literal(_SAMPLE_BUCKETS - 1),
        cut=sql.Literal(math.ceil(_SAMPLE_BUCKETS * max_rows / rows)),
    )


def query_frame(
    conn: psycopg.Connection, query: sql.Composable | str, params: object = None
) -> pd.DataFrame:
    """The rows of a small query (a summary, a preview) as a frame named by its columns."""
    cursor = conn.execute(query, params)  # type: ignore[arg-type]
    names = [column.name for column in cursor.description or []]
    return pd.DataFrame(cursor.fetchall(), columns=names)


def scalar(conn: psycopg.Connection, query: sql.Composable | str, params: object = None) -> object:
    """The first column of the first row of ``query``; None when there is no row."""
    row = conn.execute(query, params).fetchone()  # type: ignore[arg-type]
    return row[0] if row else None
