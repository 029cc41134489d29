"""``ml.churn_risk_scores``: one row per customer and date, replaced per date.

A date's rows are replaced in one transaction holding the date's advisory lock: the old rows
stay visible to readers until the commit, a failure anywhere leaves them as they were, and
two runs of the same date take turns instead of interleaving (the primary key would refuse a
duplicate anyway). New rows arrive as frames and are copied in as they come; customers whose
score can be carried over from an earlier date are copied inside Postgres.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Final

import pandas as pd
import psycopg
from psycopg import sql

from retention_pipelines.core.database import connect
from retention_pipelines.core.features import FEATURE_COLUMNS
from retention_pipelines.core.warehouse.streams import (
    copy_in,
    delete_partition,
    partition_transaction,
    query_frame,
    table_name,
)
from retention_pipelines.core.warehouse.tables import CHURN_RISK_SCORES, CUSTOMER_FEATURES

REASONS: Final = 3
SCORE_COLUMNS: Final[tuple[str, ...]] = (
    "snapshot_date",
    "customer_id",
    "churn_probability",
    "risk_band",
    *(
        name
        for rank in range(1, REASONS + 1)
        for name in (f"top_reason_{rank}", f"top_reason_{rank}_contribution")
    ),
    "model_name",
    "model_version",
    "scored_at",
)
# The carry-over joins a day's customers against another day's: hash joins, never a nested
# loop (a fresh day's statistics can make the planner expect a handful of rows).
NO_NESTED_LOOPS: Final = "set local enable_nestloop = off"


@dataclass(frozen=True)
class Carryover:
    """Scores that can be carried over from ``previous``: a customer whose feature row is
    identical on both dates, scored then by the same model version, gets the same
    probability and reasons again, so they are copied inside Postgres instead of recomputed.
    The band is recomputed from the probability with today's thresholds."""

    previous: date
    model_name: str
    model_version: str

    def unchanged(self) -> sql.Composable:
        """True for a row ``f`` of today's features whose customer qualifies."""
        return sql.SQL(
            "exists (select 1 from {features} p join {scores} s"
            " on s.snapshot_date = p.snapshot_date and s.customer_id = p.customer_id"
            " where p.customer_id = f.customer_id and {qualifies})"
        ).format(
            features=table_name(CUSTOMER_FEATURES),
            scores=table_name(CHURN_RISK_SCORES),
            qualifies=self._qualifies(),
        )

    def copy_scores(
        self, snapshot_date: date, *, high: float, medium: float, scored_at: datetime
    ) -> sql.Composable:
        """The INSERT that copies the qualifying customers' scores to ``snapshot_date``, with
        the band of the thresholds ``high`` and ``medium``."""
        carried = [
            column
            for column in SCORE_COLUMNS
            if column not in {"snapshot_date", "risk_band", "scored_at"}
        ]
        return sql.SQL(
            "insert into {scores} ({columns})"
            " select {day}, {carried},"
            " case when s.churn_probability >= {high} then 'high'"
            " when s.churn_probability >= {medium} then 'medium' else 'low' end, {at}"
            " from {features} f"
            " join {features} p on p.customer_id = f.customer_id"
            " join {scores} s"
            " on s.snapshot_date = p.snapshot_date and s.customer_id = p.customer_id"
            " where f.snapshot_date = {day} and {qualifies}"
        ).format(
            scores=table_name(CHURN_RISK_SCORES),
            features=table_name(CUSTOMER_FEATURES),
            columns=sql.SQL(", ").join(
                sql.Identifier(column)
                for column in ("snapshot_date", *carried, "risk_band", "scored_at")
            ),
            day=sql.Literal(snapshot_date),
            carried=sql.SQL(", ").join(sql.Identifier("s", column) for column in carried),
            high=sql.Literal(high),
            medium=sql.Literal(medium),
            at=sql.Literal(scored_at),
            qualifies=self._qualifies(),
        )

    def _qualifies(self) -> sql.Composable:
        """``p`` is the customer's features on the earlier date, ``s`` its score then: the
        same model scored it, and every feature is as in today's row ``f``."""
        same_features = sql.SQL(" and ").join(
            sql.SQL("p.{c} is not distinct from f.{c}").format(c=sql.Identifier(column))
            for column in FEATURE_COLUMNS
        )
        return sql.SQL(
            "p.snapshot_date = {previous} and s.model_name = {name}"
            " and s.model_version = {version} and {same}"
        ).format(
            previous=sql.Literal(self.previous),
            name=sql.Literal(self.model_name),
            version=sql.Literal(self.model_version),
            same=same_features,
        )


def find_carryover(
    url: str, snapshot_date: date, model_name: str, model_version: str
) -> Carryover | None:
    """The latest earlier date scored by the same model version, if any.

    Both tables are analyzed first: the day's features were usually written minutes ago, and
    without statistics the planner would expect a handful of rows where there are millions.
    """
    with connect(url, autocommit=True) as conn:
        conn.execute(f"analyze {CUSTOMER_FEATURES}")
        conn.execute(f"analyze {CHURN_RISK_SCORES}")
        row = conn.execute(
            f"select max(snapshot_date) from {CHURN_RISK_SCORES}"
            " where snapshot_date < %s and model_name = %s and model_version = %s",
            (snapshot_date, model_name, model_version),
        ).fetchone()
    if row is None or row[0] is None:
        return None
    return Carryover(previous=row[0], model_name=model_name, model_version=model_version)


@dataclass(frozen=True)
class WrittenScores:
    rows: int
    reused: int = 0
    """Rows carried over unchanged from an earlier date (see :class:`Carryover`)."""


def replace_scores(
    url: str,
    snapshot_date: date,
    chunks: Iterable[pd.DataFrame],
    *,
    carry_over: sql.Composable | None = None,
    on_chunk: Callable[[int], None] | None = None,
    before_commit: Callable[[psycopg.Connection], None] | None = None,
) -> WrittenScores:
    """Replace the date's scores with ``chunks`` (frames of :data:`SCORE_COLUMNS`) and the
    rows ``carry_over`` inserts, in one transaction.

    ``on_chunk`` hears the running row count (progress); ``before_commit`` runs inside the
    transaction after the last COPY (tests inject failures there).
    """
    written = reused = 0
    with partition_transaction(url, CHURN_RISK_SCORES, snapshot_date) as conn:
        delete_partition(conn, CHURN_RISK_SCORES, snapshot_date)
        if carry_over is not None:
            conn.execute(NO_NESTED_LOOPS)
            reused = written = conn.execute(carry_over).rowcount
        for chunk in chunks:
            written += copy_in(conn, CHURN_RISK_SCORES, chunk, SCORE_COLUMNS)
            if on_chunk is not None:
                on_chunk(written)
        if before_commit is not None:
            before_commit(conn)
    return WrittenScores(rows=written, reused=reused)


# --- reading a date back ---------------------------------------------------------------------


def band_counts(conn: psycopg.Connection, snapshot_date: date) -> dict[str, int]:
    rows = conn.execute(
        f"select risk_band, count(*) from {CHURN_RISK_SCORES}"
        " where snapshot_date = %s group by risk_band",
        (snapshot_date,),
    ).fetchall()
    return {str(band): int(count) for band, count in rows}


def mean_probability(conn: psycopg.Connection, snapshot_date: date) -> float:
    row = conn.execute(
        f"select coalesce(avg(churn_probability), 0) from {CHURN_RISK_SCORES}"
        " where snapshot_date = %s",
        (snapshot_date,),
    ).fetchone()
    return float(row[0]) if row else 0.0


def probability_tenths(conn: psycopg.Connection, snapshot_date: date) -> dict[int, int]:
    """Customers per tenth of the probability range, 1 (0.0-0.1) to 10 (0.9-1.0)."""
    rows = conn.execute(
        "select least(width_bucket(churn_probability, 0, 1, 10), 10), count(*)"
        f" from {CHURN_RISK_SCORES} where snapshot_date = %s group by 1",
        (snapshot_date,),
    ).fetchall()
    return {int(bucket): int(count) for bucket, count in rows}


def first_reason_counts(conn: psycopg.Connection, snapshot_date: date, limit: int) -> pd.DataFrame:
    """The most frequent first reasons (the feature, without its value) and their counts."""
    return query_frame(
        conn,
        """select split_part(top_reason_1, ':', 1) as "first reason", count(*) as customers"""
        f" from {CHURN_RISK_SCORES} where snapshot_date = %s"
        " group by 1 order by 2 desc, 1 limit %s",
        (snapshot_date, limit),
    )


def highest_risk(conn: psycopg.Connection, snapshot_date: date, limit: int) -> pd.DataFrame:
    return query_frame(
        conn,
        "select customer_id, round(churn_probability::numeric, 3)::float as churn_probability,"
        " risk_band, top_reason_1, top_reason_2, top_reason_3"
        f" from {CHURN_RISK_SCORES} where snapshot_date = %s"
        " order by churn_probability desc, customer_id limit %s",
        (snapshot_date, limit),
    )


@dataclass(frozen=True)
class ScoreCounts:
    """What the checks after a scoring run compare, counted in one statement."""

    feature_rows: int
    score_rows: int
    unscored_customers: int
    out_of_range: int
    incomplete: int
    versions: str  # the distinct model versions, comma separated


def score_counts(url: str, snapshot_date: date) -> ScoreCounts:
    with connect(url) as conn:
        row = conn.execute(
            f"""
            select
                (select count(*) from {CUSTOMER_FEATURES} where snapshot_date = %(d)s),
                (select count(*) from {CHURN_RISK_SCORES} where snapshot_date = %(d)s),
                (select count(*) from {CUSTOMER_FEATURES} f
                  where f.snapshot_date = %(d)s and not exists (
                    select 1 from {CHURN_RISK_SCORES} s
                     where s.snapshot_date = f.snapshot_date and s.customer_id = f.customer_id)),
                (select count(*) from {CHURN_RISK_SCORES}
                  where snapshot_date = %(d)s
                    and (churn_probability is null or churn_probability not between 0 and 1)),
                (select count(*) from {CHURN_RISK_SCORES}
                  where snapshot_date = %(d)s
                    and (coalesce(model_version, '') = '' or coalesce(top_reason_1, '') = ''
                         or coalesce(top_reason_2, '') = '' or coalesce(top_reason_3, '') = '')),
                (select coalesce(string_agg(distinct model_version, ','), '')
                   from {CHURN_RISK_SCORES} where snapshot_date = %(d)s)
            """,
            {"d": snapshot_date},
        ).fetchone()
    if row is None:
        raise RuntimeError("the score counts query returned no row")
    return ScoreCounts(*row)
