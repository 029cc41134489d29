"""Nightly batch scoring: a day's features in, calibrated probabilities, risk bands and the
three strongest reasons out, written to ``ml.churn_risk_scores``.

Memory follows the chunk size, not the customer count: features are read a chunk at a time
(keyset pages over the primary key, each one a COPY parsed by Arrow), scored and explained
in one pass over the encodings, and streamed into the table with COPY.

The day's rows are replaced in one transaction that holds an advisory lock on the date: the
old rows stay visible to readers until the commit, a failure anywhere leaves them as they
were, and two runs of the same date take turns instead of interleaving (the primary key
would refuse a duplicate anyway).
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Final

import numpy as np
import pandas as pd
import psycopg
import pyarrow as pa
import pyarrow.csv as pa_csv
from psycopg import sql

from retention_pipelines.core.explain import describe
from retention_pipelines.core.features import FEATURE_COLUMNS, NUMERIC_FEATURES, feature_frame
from retention_pipelines.core.model import ChurnModel, Scored
from retention_pipelines.core.warehouse import copy_frame

SCORES_TABLE: Final = "ml.churn_risk_scores"
FEATURES_TABLE: Final = "features.customer_features"
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
# A fixed first key for the advisory lock; the second is the date (days since 2000-01-01).
_LOCK_NAMESPACE: Final = 0x5C0_5E5


@dataclass(frozen=True)
class RiskBands:
    """Calibrated probability thresholds: ``high`` from ``high`` up, ``medium`` from
    ``medium`` up, ``low`` below."""

    high: float = 0.5
    medium: float = 0.25

    def __post_init__(self) -> None:
        if not 0 < self.medium < self.high < 1:
            raise ValueError(f"risk bands need 0 < medium < high < 1, got {self}")

    def assign(self, probabilities: np.ndarray) -> np.ndarray:
        return np.where(
            probabilities >= self.high,
            "high",
            np.where(probabilities >= self.medium, "medium", "low"),
        )


@dataclass
class StageTimes:
    """Seconds spent per stage of a scoring run, summed over its chunks."""

    seconds: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started


@dataclass(frozen=True)
class ModelRef:
    """The model a run scores with, resolved once at its start."""

    model: ChurnModel
    name: str
    version: str


# --- Reading features. ---


def count_features(url: str, snapshot_date: date) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            f"select count(*) from {FEATURES_TABLE} where snapshot_date = %s",
            (snapshot_date,),
        ).fetchone()
    return int(row[0]) if row else 0


def read_feature_chunks(
    url: str, snapshot_date: date, chunk_rows: int, *, skip: Carryover | None = None
) -> Iterator[pd.DataFrame]:
    """The date's feature rows, ``chunk_rows`` at a time.

    One COPY streams the date out as CSV; the stream is cut at line ends into chunks that
    Arrow parses. No value of the feature contract can hold a line break (ids match the
    ingestion pattern, the rest are validated categories, flags and numbers), so a line is a
    row; a chunk that parses to another row count fails loudly rather than misread.
    """
    columns = ["customer_id", *FEATURE_COLUMNS]
    query = sql.SQL(
        "copy (select {columns} from features.customer_features f"
        " where f.snapshot_date = {day} and not {skipped}) to stdout with (format csv)"
    ).format(
        columns=sql.SQL(", ").join(sql.Identifier("f", column) for column in columns),
        day=sql.Literal(snapshot_date),
        skipped=skip.unchanged() if skip is not None else sql.SQL("false"),
    )
    with psycopg.connect(url) as conn:
        if skip is not None:
            conn.execute(_NO_NESTED_LOOPS)
        yield from stream_copy_chunks(conn, query, columns, chunk_rows)


# The carry-over joins a day's customers against another day's: hash joins, never a nested
# loop (a fresh day's statistics can make the planner expect a handful of rows).
_NO_NESTED_LOOPS = "set enable_nestloop = off"


def stream_copy_chunks(
    conn: psycopg.Connection, query: sql.Composable, columns: list[str], chunk_rows: int
) -> Iterator[pd.DataFrame]:
    """The CSV rows a ``copy ... to stdout with (format csv)`` query streams, parsed into
    frames of ``chunk_rows`` rows; ``columns`` name the query's columns in order."""
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
                yield _parse_features_csv(bytes(pending[:cut]), columns, chunk_rows)
                del pending[:cut]
                ends = ends[chunk_rows:] - cut
                lines -= chunk_rows
    if pending:
        yield _parse_features_csv(bytes(pending), columns, lines)


def _parse_features_csv(data: bytes, columns: list[str], rows: int) -> pd.DataFrame:
    types = {column: pa.float64() for column in NUMERIC_FEATURES}
    types["customer_id"] = pa.string()
    table = pa_csv.read_csv(
        io.BytesIO(data),
        read_options=pa_csv.ReadOptions(column_names=columns),
        convert_options=pa_csv.ConvertOptions(
            column_types=types,
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,
            true_values=["t"],
            false_values=["f"],
        ),
    )
    if table.num_rows != rows:
        raise ValueError(f"a chunk of {rows} lines parsed to {table.num_rows} feature rows")
    return table.to_pandas()


# --- Carrying over unchanged customers. ---


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
            "exists (select 1 from features.customer_features p join ml.churn_risk_scores s"
            " on s.snapshot_date = p.snapshot_date and s.customer_id = p.customer_id"
            " where p.customer_id = f.customer_id and {qualifies})"
        ).format(qualifies=self._qualifies())

    def copy_scores(
        self, snapshot_date: date, bands: RiskBands, scored_at: datetime
    ) -> sql.Composable:
        """The INSERT that copies the qualifying customers' scores to ``snapshot_date``."""
        carried = [
            column
            for column in SCORE_COLUMNS
            if column not in {"snapshot_date", "risk_band", "scored_at"}
        ]
        return sql.SQL(
            "insert into ml.churn_risk_scores ({columns})"
            " select {day}, {carried},"
            " case when s.churn_probability >= {high} then 'high'"
            " when s.churn_probability >= {medium} then 'medium' else 'low' end, {at}"
            " from features.customer_features f"
            " join features.customer_features p on p.customer_id = f.customer_id"
            " join ml.churn_risk_scores s"
            " on s.snapshot_date = p.snapshot_date and s.customer_id = p.customer_id"
            " where f.snapshot_date = {day} and {qualifies}"
        ).format(
            columns=sql.SQL(", ").join(
                sql.Identifier(column)
                for column in ("snapshot_date", *carried, "risk_band", "scored_at")
            ),
            day=sql.Literal(snapshot_date),
            carried=sql.SQL(", ").join(sql.Identifier("s", column) for column in carried),
            high=sql.Literal(bands.high),
            medium=sql.Literal(bands.medium),
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


def find_carryover(url: str, snapshot_date: date, model: ModelRef) -> Carryover | None:
    """The latest earlier date scored by the same model version, if any.

    Both tables are analyzed first: the day's features were usually written minutes ago, and
    without statistics the planner would expect a handful of rows where there are millions.
    """
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"analyze {FEATURES_TABLE}")
        conn.execute(f"analyze {SCORES_TABLE}")
        row = conn.execute(
            "select max(snapshot_date) from ml.churn_risk_scores"
            " where snapshot_date < %s and model_name = %s and model_version = %s",
            (snapshot_date, model.name, model.version),
        ).fetchone()
    if row is None or row[0] is None:
        return None
    return Carryover(previous=row[0], model_name=model.name, model_version=model.version)


# --- Scoring. ---


def score_chunk(
    model: ModelRef,
    frame: pd.DataFrame,
    *,
    snapshot_date: date,
    bands: RiskBands,
    scored_at: datetime,
    exact_gap: float = float("inf"),
    times: StageTimes | None = None,
) -> pd.DataFrame:
    """Score rows of the feature contract: probability, band and the three reasons that push
    each customer's risk up most. High-band customers get exact TreeSHAP wherever the
    approximation's top two reasons lie within ``exact_gap`` (see :meth:`ChurnModel.score`)."""
    times = times or StageTimes()
    with times.stage("predict_and_explain"):
        features = feature_frame(frame)
        scored = model.model.score(features, exact_from=bands.high, exact_gap=exact_gap)
    with times.stage("reasons"):
        return _score_rows(model, frame, features, scored, snapshot_date, bands, scored_at)


def _score_rows(
    model: ModelRef,
    frame: pd.DataFrame,
    features: pd.DataFrame,
    scored: Scored,
    snapshot_date: date,
    bands: RiskBands,
    scored_at: datetime,
) -> pd.DataFrame:
    picks = _top_features(scored.contributions, REASONS)
    out = pd.DataFrame(
        {
            "snapshot_date": snapshot_date,
            "customer_id": frame["customer_id"].to_numpy(),
            "churn_probability": np.clip(scored.probabilities, 0.0, 1.0),
            "risk_band": bands.assign(scored.probabilities),
        }
    )
    rows = np.arange(len(frame))
    for rank in range(REASONS):
        out[f"top_reason_{rank + 1}"] = reason_texts(features, picks[:, rank])
        out[f"top_reason_{rank + 1}_contribution"] = scored.contributions[rows, picks[:, rank]]
    out["model_name"] = model.name
    out["model_version"] = model.version
    out["scored_at"] = scored_at
    return out[list(SCORE_COLUMNS)]


def _top_features(contributions: np.ndarray, k: int) -> np.ndarray:
    """Per row, the positions of the ``k`` largest contributions, largest first (ties: the
    contract's column order)."""
    return np.argsort(-contributions, axis=1, kind="stable")[:, :k]


def reason_texts(features: pd.DataFrame, picks: np.ndarray) -> np.ndarray:
    """Per row, the picked feature and its value as a person reads it ("Contract:
    Month-to-month"). Each distinct value of a feature is described once."""
    texts = np.empty(len(features), dtype=object)
    for position in np.unique(picks):
        feature = FEATURE_COLUMNS[position]
        rows = np.flatnonzero(picks == position)
        codes, values = pd.factorize(features[feature].iloc[rows], use_na_sentinel=False)
        described = np.array([describe(feature, value) for value in values], dtype=object)
        texts[rows] = described[codes]
    return texts


# --- Writing. ---


def replace_scores(
    url: str,
    snapshot_date: date,
    chunks: Iterable[pd.DataFrame],
    *,
    on_chunk: Callable[[int], None] | None = None,
    before_commit: Callable[[psycopg.Connection], None] | None = None,
    carry_over: sql.Composable | None = None,
) -> PartitionScores:
    """Replace the date's scores with ``chunks`` (and the rows ``carry_over`` inserts) in one
    transaction.

    ``on_chunk`` hears the running row count (progress); ``before_commit`` runs inside the
    transaction after the last COPY (tests inject failures there).
    """
    written = reused = 0
    with psycopg.connect(url) as conn, conn.transaction():
        conn.execute(
            "select pg_advisory_xact_lock(%s, %s)", (_LOCK_NAMESPACE, _lock_key(snapshot_date))
        )
        conn.execute(
            f"delete from {SCORES_TABLE} where snapshot_date = %s",
            (snapshot_date,),
        )
        if carry_over is not None:
            conn.execute("set local enable_nestloop = off")
            reused = conn.execute(carry_over).rowcount
            written = reused
        for chunk in chunks:
            copy_frame(conn, SCORES_TABLE, list(SCORE_COLUMNS), chunk)
            written += len(chunk)
            if on_chunk is not None:
                on_chunk(written)
        if before_commit is not None:
            before_commit(conn)
    return PartitionScores(rows=written, reused=reused)


@dataclass(frozen=True)
class PartitionScores:
    rows: int
    reused: int = 0
    """Rows carried over unchanged from an earlier date (see :class:`Carryover`)."""


def _lock_key(snapshot_date: date) -> int:
    return (snapshot_date - date(2000, 1, 1)).days


def score_partition(
    url: str,
    snapshot_date: date,
    model: ModelRef,
    *,
    bands: RiskBands,
    chunk_rows: int,
    scored_at: datetime,
    reuse_unchanged: bool = True,
    exact_gap: float = float("inf"),
    on_chunk: Callable[[int], None] | None = None,
    before_commit: Callable[[psycopg.Connection], None] | None = None,
    times: StageTimes | None = None,
) -> PartitionScores:
    """Read, score, explain and write one snapshot date, a chunk at a time.

    With ``reuse_unchanged``, customers whose features are the same as on the latest earlier
    date scored by this model version get that date's score copied (see
    :class:`Carryover`); only the others are read and scored. ``exact_gap`` is passed to
    :func:`score_chunk`. ``times``, when given,
    receives the seconds per stage (read, predict_and_explain, reasons, write).
    """
    times = times if times is not None else StageTimes()
    carryover = find_carryover(url, snapshot_date, model) if reuse_unchanged else None

    def scored_chunks() -> Iterator[pd.DataFrame]:
        reader = read_feature_chunks(url, snapshot_date, chunk_rows, skip=carryover)
        while True:
            with times.stage("read"):
                chunk = next(reader, None)
            if chunk is None:
                return
            yield score_chunk(
                model, chunk, snapshot_date=snapshot_date, bands=bands, scored_at=scored_at,
                exact_gap=exact_gap, times=times,
            )  # fmt: skip

    started = time.perf_counter()
    outcome = replace_scores(
        url,
        snapshot_date,
        scored_chunks(),
        on_chunk=on_chunk,
        before_commit=before_commit,
        carry_over=(carryover.copy_scores(snapshot_date, bands, scored_at) if carryover else None),
    )
    times.seconds["write"] = time.perf_counter() - started - sum(times.seconds.values())
    return outcome


# --- What a run leaves for people and for its checks. ---


@dataclass(frozen=True)
class ScoreSummary:
    rows: int
    band_counts: dict[str, int]
    mean_probability: float
    histogram: list[tuple[str, int]]
    top_reasons: list[tuple[str, int]]
    highest_risk: pd.DataFrame


def summarize_scores(url: str, snapshot_date: date, preview_rows: int = 10) -> ScoreSummary:
    """Counts, bands, the probability histogram (tenths), the most common first reasons and
    the highest-risk customers of the date, read back from the table."""
    with psycopg.connect(url) as conn:
        where = (snapshot_date,)
        bands = dict(
            conn.execute(
                f"select risk_band, count(*) from {SCORES_TABLE}"
                " where snapshot_date = %s group by risk_band",
                where,
            ).fetchall()
        )
        mean = conn.execute(
            f"select coalesce(avg(churn_probability), 0) from {SCORES_TABLE}"
            " where snapshot_date = %s",
            where,
        ).fetchone()
        buckets = dict(
            conn.execute(
                "select least(width_bucket(churn_probability, 0, 1, 10), 10), count(*)"
                f" from {SCORES_TABLE} where snapshot_date = %s group by 1",
                where,
            ).fetchall()
        )
        reasons = conn.execute(
            "select split_part(top_reason_1, ':', 1), count(*)"
            f" from {SCORES_TABLE} where snapshot_date = %s"
            " group by 1 order by 2 desc, 1 limit 10",
            where,
        ).fetchall()
        cursor = conn.execute(
            "select customer_id, round(churn_probability::numeric, 3) as churn_probability,"
            " risk_band, top_reason_1, top_reason_2, top_reason_3"
            f" from {SCORES_TABLE} where snapshot_date = %s"
            " order by churn_probability desc, customer_id limit %s",
            (snapshot_date, preview_rows),
        )
        preview = pd.DataFrame(cursor.fetchall(), columns=[c.name for c in cursor.description])
    histogram = [
        (f"{(bucket - 1) / 10:.1f}-{bucket / 10:.1f}", int(buckets.get(bucket, 0)))
        for bucket in range(1, 11)
    ]
    return ScoreSummary(
        rows=int(sum(bands.values())),
        band_counts={band: int(bands.get(band, 0)) for band in ("high", "medium", "low")},
        mean_probability=float(mean[0]) if mean else 0.0,
        histogram=histogram,
        top_reasons=[(str(label), int(count)) for label, count in reasons],
        highest_risk=preview,
    )


SCORE_CHECKS: Final[dict[str, str]] = {
    "one_score_per_customer": "Every customer of the date's features has exactly one score.",
    "probabilities_in_unit_interval": "Every churn probability lies in [0, 1].",
    "version_and_reasons_present": "Every row names its model version and three reasons.",
    "scored_by_run_start_champion": (
        "Every row was scored by the champion version resolved when the run started."
    ),
}


@dataclass(frozen=True)
class ScoreCheck:
    name: str
    passed: bool
    metadata: dict[str, int | str]


def check_scores(url: str, snapshot_date: date, expected_version: str) -> list[ScoreCheck]:
    """What must hold after a scoring run, read back from the tables."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            f"""
            select
                (select count(*) from {FEATURES_TABLE} where snapshot_date = %(d)s),
                (select count(*) from {SCORES_TABLE} where snapshot_date = %(d)s),
                (select count(*) from {FEATURES_TABLE} f
                  where f.snapshot_date = %(d)s and not exists (
                    select 1 from {SCORES_TABLE} s
                     where s.snapshot_date = f.snapshot_date and s.customer_id = f.customer_id)),
                (select count(*) from {SCORES_TABLE}
                  where snapshot_date = %(d)s
                    and (churn_probability is null or churn_probability not between 0 and 1)),
                (select count(*) from {SCORES_TABLE}
                  where snapshot_date = %(d)s
                    and (coalesce(model_version, '') = '' or coalesce(top_reason_1, '') = ''
                         or coalesce(top_reason_2, '') = '' or coalesce(top_reason_3, '') = '')),
                (select coalesce(string_agg(distinct model_version, ','), '')
                   from {SCORES_TABLE} where snapshot_date = %(d)s)
            """,
            {"d": snapshot_date},
        ).fetchone()
    assert row is not None  # noqa: S101
    features, scores, unscored, out_of_range, incomplete, versions = row
    return [
        ScoreCheck(
            "one_score_per_customer",
            features == scores and unscored == 0,
            {"feature_rows": features, "score_rows": scores, "unscored_customers": unscored},
        ),
        ScoreCheck(
            "probabilities_in_unit_interval",
            out_of_range == 0,
            {"rows_out_of_range": out_of_range},
        ),
        ScoreCheck(
            "version_and_reasons_present",
            incomplete == 0,
            {"incomplete_rows": incomplete},
        ),
        ScoreCheck(
            "scored_by_run_start_champion",
            versions == expected_version,
            {"expected_version": expected_version, "versions_in_table": versions or "none"},
        ),
    ]
