"""Reading ``features.customer_features``: the feature contract of every customer and date.

Every reader goes through :func:`read_features`, which streams the selected rows with COPY
and Arrow, in one of two typings: ``model`` (numbers as floats, what a model takes) or
``table`` (integers as integers, categories as pandas categoricals, what the data quality
suite judges).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import date
from typing import Final, Literal

import pandas as pd
import psycopg
import pyarrow as pa
from psycopg import sql

from retention_pipelines.core.database import connect
from retention_pipelines.core.features import (
    BOOLEAN_FEATURES,
    CATEGORICAL_FEATURES,
    FEATURE_COLUMNS,
    INTEGER_FEATURES,
    LABEL_COLUMN,
    NUMERIC_FEATURES,
)
from retention_pipelines.core.warehouse.streams import (
    copy_out,
    read_frame,
    scalar,
    stable_sample,
    table_name,
)
from retention_pipelines.core.warehouse.tables import (
    CHURN_RISK_SCORES,
    CUSTOMER_FEATURES,
    RAW_SNAPSHOTS,
)

READ_CHUNK_ROWS: Final = 100_000
PROBABILITY: Final = "churn_probability"
Typing = Literal["model", "table"]
# The table's rows are ``f``; a predicate on them selects what is read.
_F = "f"


def column_types(
    columns: Sequence[str], typing: Typing, *, categories: bool = False
) -> dict[str, pa.DataType]:
    """Arrow types of ``columns`` of the table (and of a joined probability): ``table`` keeps
    integers and makes categories dictionaries, ``model`` makes every number a float;
    ``categories`` makes categories dictionaries in either."""
    types: dict[str, pa.DataType] = {}
    for column in columns:
        if column in NUMERIC_FEATURES or column == PROBABILITY:
            integer = typing == "table" and column in INTEGER_FEATURES
            types[column] = pa.int64() if integer else pa.float64()
        elif column in (*BOOLEAN_FEATURES, LABEL_COLUMN):
            types[column] = pa.bool_()
        elif column in CATEGORICAL_FEATURES and (typing == "table" or categories):
            types[column] = pa.dictionary(pa.int32(), pa.string())
        elif column == "snapshot_date":
            types[column] = pa.date32()
        else:
            types[column] = pa.string()
    return types


def _select(
    where: sql.Composable,
    columns: Sequence[str],
    sample: tuple[int, int] | None,
    with_scores: bool,
) -> tuple[sql.Composable, list[str]]:
    """The query :func:`read_features` and :func:`read_all` stream, and its column names."""
    selected = [sql.Identifier(_F, column) for column in columns]
    names = list(columns)
    joined = sql.SQL("")
    if with_scores:
        selected.append(sql.Identifier("s", PROBABILITY))
        names.append(PROBABILITY)
        joined = sql.SQL(
            " left join {scores} s on s.snapshot_date = f.snapshot_date"
            " and s.customer_id = f.customer_id"
        ).format(scores=table_name(CHURN_RISK_SCORES))
    sampled = (
        stable_sample(sql.Identifier(_F, "customer_id"), rows=sample[0], max_rows=sample[1])
        if sample
        else sql.SQL("true")
    )
    select = sql.SQL(
        "select {columns} from {table} f{joined} where ({where}) and {sampled}"
    ).format(
        columns=sql.SQL(", ").join(selected),
        table=table_name(CUSTOMER_FEATURES),
        joined=joined,
        where=where,
        sampled=sampled,
    )
    return select, names


def read_features(
    conn: psycopg.Connection,
    where: sql.Composable,
    *,
    columns: Sequence[str] = ("customer_id", *FEATURE_COLUMNS),
    typing: Typing = "model",
    chunk_rows: int = READ_CHUNK_ROWS,
    sample: tuple[int, int] | None = None,
    with_scores: bool = False,
) -> Iterator[pd.DataFrame]:
    """Rows of the table that satisfy ``where`` (a predicate on its rows ``f``), ``columns``
    of them, ``chunk_rows`` at a time.

    ``sample`` = (rows, max_rows): past ``max_rows`` of the ``rows`` selected, about
    ``max_rows`` are kept by a seeded hash of the customer id (the same customers every
    run). ``with_scores`` adds the date's ``churn_probability`` (null where unscored).
    """
    select, names = _select(where, columns, sample, with_scores)
    types = column_types(names, typing)
    yield from copy_out(conn, select, names, types=types, chunk_rows=chunk_rows)


def read_all(
    conn: psycopg.Connection,
    where: sql.Composable,
    *,
    columns: Sequence[str] = ("customer_id", *FEATURE_COLUMNS),
    typing: Typing = "model",
    categories: bool = False,
    sample: tuple[int, int] | None = None,
    with_scores: bool = False,
) -> pd.DataFrame:
    """What :func:`read_features` reads, as one frame (for readers that need every row at
    once: the quality suite, drift, training); ``categories`` as pandas categoricals."""
    select, names = _select(where, columns, sample, with_scores)
    types = column_types(names, typing, categories=categories)
    return read_frame(conn, select, names, types=types, chunk_rows=READ_CHUNK_ROWS)


def on_date(snapshot_date: date) -> sql.Composable:
    return sql.SQL("f.snapshot_date = {day}").format(day=sql.Literal(snapshot_date))


def labelled_on(snapshot_dates: Sequence[date]) -> sql.Composable:
    return sql.SQL("f.snapshot_date = any({days}) and f.churned is not null").format(
        days=sql.Literal(list(snapshot_dates))
    )


def count_rows(conn: psycopg.Connection, where: sql.Composable) -> int:
    query = sql.SQL("select count(*) from {table} f where {where}").format(
        table=table_name(CUSTOMER_FEATURES), where=where
    )
    return int(scalar(conn, query) or 0)


def count_features(url: str, snapshot_date: date, *, labelled: bool = False) -> int:
    """The customers of one date (``labelled``: those whose churn label is known)."""
    where = labelled_on([snapshot_date]) if labelled else on_date(snapshot_date)
    with connect(url) as conn:
        return count_rows(conn, where)


def read_sample(
    url: str, where: sql.Composable, *, max_rows: int, with_scores: bool = False
) -> tuple[pd.DataFrame, int]:
    """The rows ``where`` selects (sampled past ``max_rows``), as model input with the
    categories as pandas categoricals, and how many rows were selected before sampling."""
    with connect(url) as conn:
        rows = count_rows(conn, where)
        frame = read_all(
            conn, where, categories=True, sample=(rows, max_rows), with_scores=with_scores
        )
    for column in CATEGORICAL_FEATURES:  # none when no row was read
        frame[column] = frame[column].astype("category")
    for column in BOOLEAN_FEATURES:
        frame[column] = frame[column].astype("boolean")
    return frame.drop(columns="customer_id"), rows


def read_partition(url: str, snapshot_date: date) -> tuple[pd.DataFrame, int]:
    """One date's rows as the table types them (customer id, contract columns, label), and
    the number of valid raw rows they were built from, both read in one repeatable-read
    transaction so that they describe the same moment. A database dbt never ran on has no
    table yet: no rows."""
    columns = ("customer_id", *FEATURE_COLUMNS, LABEL_COLUMN)
    with connect(url) as conn:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        with conn.transaction():
            raw_rows = int(
                scalar(
                    conn,
                    sql.SQL("select count(*) from {raw} where snapshot_date = %s").format(
                        raw=table_name(RAW_SNAPSHOTS)
                    ),
                    (snapshot_date,),
                )
                or 0
            )
            if scalar(conn, "select to_regclass(%s)", (CUSTOMER_FEATURES,)) is None:
                return pd.DataFrame({column: [] for column in columns}), raw_rows
            frame = read_all(conn, on_date(snapshot_date), columns=columns, typing="table")
            return frame, raw_rows


def labelled_dates(url: str, snapshots: int) -> list[date]:
    """The latest ``snapshots`` dates that have labelled rows, newest first."""
    with connect(url) as conn:
        if scalar(conn, "select to_regclass(%s)", (CUSTOMER_FEATURES,)) is None:
            return []
        rows = conn.execute(
            sql.SQL(
                "select snapshot_date from {table} where churned is not null"
                " group by snapshot_date order by snapshot_date desc limit %s"
            ).format(table=table_name(CUSTOMER_FEATURES)),
            (snapshots,),
        ).fetchall()
    return [row[0] for row in rows]


def read_labelled(url: str, snapshots: int) -> tuple[pd.DataFrame, list[date]]:
    """Labelled rows of the latest ``snapshots`` labelled dates, one row per customer (its
    latest), as model input with the snapshot date and label; and the dates used."""
    dates = labelled_dates(url, snapshots)
    return read_labelled_on(url, dates), sorted(dates)


def read_labelled_on(url: str, dates: Sequence[date]) -> pd.DataFrame:
    """Labelled rows of the given dates, one row per customer (its latest), in customer id
    order: what :func:`read_labelled` reads, for a process that was told the dates (an
    Optuna worker rebuilding a training run's data)."""
    columns = ("snapshot_date", "customer_id", *FEATURE_COLUMNS, LABEL_COLUMN)
    days = list(dates)
    latest = sql.SQL(
        "{labelled} and not exists (select 1 from {table} later"
        " where later.customer_id = f.customer_id and later.snapshot_date = any({days})"
        " and later.churned is not null and later.snapshot_date > f.snapshot_date)"
    ).format(
        labelled=labelled_on(days), table=table_name(CUSTOMER_FEATURES), days=sql.Literal(days)
    )
    with connect(url) as conn:
        frame = read_all(conn, latest, columns=columns)
    return frame.sort_values("customer_id", ignore_index=True)
