"""Nightly batch scoring: a day's features in, calibrated probabilities, risk bands and the
three strongest reasons out, for ``ml.churn_risk_scores``.

Memory follows the chunk size, not the customer count: features are read a chunk at a time,
scored and explained in one pass over the encodings, and copied into the table as they come
(see ``core.warehouse.scores`` for how a date is replaced).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Final

import numpy as np
import pandas as pd
import psycopg
from psycopg import sql

from retention_pipelines.churn_model.model import ChurnModel, Scored
from retention_pipelines.core.database import connect
from retention_pipelines.core.explain import describe
from retention_pipelines.core.features import feature_frame
from retention_pipelines.core.pseudonyms import display_all
from retention_pipelines.core.warehouse import features as feature_table
from retention_pipelines.core.warehouse import scores as score_table
from retention_pipelines.core.warehouse.scores import REASONS, SCORE_COLUMNS, WrittenScores

PREVIEW_ROWS: Final = 10


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


# --- Scoring rows. ---


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
        out[f"top_reason_{rank + 1}"] = reason_texts(features, picks[:, rank], model.model.columns)
        out[f"top_reason_{rank + 1}_contribution"] = scored.contributions[rows, picks[:, rank]]
    out["model_name"] = model.name
    out["model_version"] = model.version
    out["scored_at"] = scored_at
    return out[list(SCORE_COLUMNS)]


def _top_features(contributions: np.ndarray, k: int) -> np.ndarray:
    """Per row, the positions of the ``k`` largest contributions, largest first (ties: the
    model's column order)."""
    return np.argsort(-contributions, axis=1, kind="stable")[:, :k]


def reason_texts(
    features: pd.DataFrame | Mapping[str, np.ndarray], picks: np.ndarray, columns: tuple[str, ...]
) -> np.ndarray:
    """Per row, the picked column (a position in ``columns``) and its value as a person reads
    it ("Contract: Month-to-month"). Each distinct value of a column is described once."""
    texts = np.empty(len(picks), dtype=object)
    for position in np.unique(picks):
        feature = columns[position]
        rows = np.flatnonzero(picks == position)
        column = features[feature]
        picked = column.iloc[rows] if isinstance(column, pd.Series) else np.asarray(column)[rows]
        codes, values = pd.factorize(picked, use_na_sentinel=False)
        described = np.array([describe(feature, value) for value in values], dtype=object)
        texts[rows] = described[codes]
    return texts


@dataclass(frozen=True)
class LiveScores:
    """Customers scored on request, row-aligned with the input: what the API answers."""

    probabilities: np.ndarray
    bands: np.ndarray
    reason_features: np.ndarray  # rows x REASONS, the contract's column names
    reason_texts: np.ndarray  # rows x REASONS, "Contract: Month-to-month"
    contributions: np.ndarray  # rows x REASONS, signed log-odds


def score_live(
    model: ChurnModel,
    features: pd.DataFrame | Mapping[str, np.ndarray],
    bands: RiskBands,
    *,
    exact_gap: float | None = None,
) -> LiveScores:
    """Probability, band and the three strongest reasons of each row, in the same order and
    words as the nightly scores. Without ``exact_gap`` every row is explained with exact
    TreeSHAP (one customer: it costs a millisecond); with it, as the nightly scorer explains
    a chunk (see :func:`score_chunk`), so a large batch costs what the night costs per row and
    says what the night would say."""
    if exact_gap is None:
        scored = model.score(features, exact_from=None)
    else:
        scored = model.score(features, exact_from=bands.high, exact_gap=exact_gap)
    probabilities = np.clip(scored.probabilities, 0.0, 1.0)
    picks = _top_features(scored.contributions, REASONS)
    rows = np.arange(len(probabilities))
    names = np.asarray(model.columns, dtype=object)
    return LiveScores(
        probabilities=probabilities,
        bands=bands.assign(scored.probabilities),
        reason_features=names[picks],
        reason_texts=np.column_stack(
            [reason_texts(features, picks[:, rank], model.columns) for rank in range(REASONS)]
        ),
        contributions=np.column_stack(
            [scored.contributions[rows, picks[:, rank]] for rank in range(REASONS)]
        ),
    )


# --- Scoring a date. ---


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
) -> WrittenScores:
    """Read, score, explain and write one snapshot date, a chunk at a time.

    With ``reuse_unchanged``, customers whose features are the same as on the latest earlier
    date scored by this model version get that date's score copied (see
    :class:`~retention_pipelines.core.warehouse.scores.Carryover`); only the others are read
    and scored. ``exact_gap`` is passed to :func:`score_chunk`. ``times``, when given,
    receives the seconds per stage (read, predict_and_explain, reasons, write).
    """
    times = times if times is not None else StageTimes()
    carryover = (
        score_table.find_carryover(url, snapshot_date, model.name, model.version)
        if reuse_unchanged
        else None
    )
    where = feature_table.on_date(snapshot_date)
    if carryover is not None:
        where = where + sql.SQL(" and not ") + carryover.unchanged()

    def scored_chunks() -> Iterator[pd.DataFrame]:
        with connect(url) as conn, conn.transaction():
            if carryover is not None:
                conn.execute(score_table.NO_NESTED_LOOPS)
            reader = feature_table.read_features(conn, where, chunk_rows=chunk_rows)
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
    outcome = score_table.replace_scores(
        url,
        snapshot_date,
        scored_chunks(),
        carry_over=(
            carryover.copy_scores(
                snapshot_date, high=bands.high, medium=bands.medium, scored_at=scored_at
            )
            if carryover
            else None
        ),
        on_chunk=on_chunk,
        before_commit=before_commit,
    )
    times.seconds["write"] = time.perf_counter() - started - sum(times.seconds.values())
    return outcome


# --- What a run leaves for people and for its checks. ---


@dataclass(frozen=True)
class ScoreSummary:
    """A scored date at a glance, read back from the table."""

    rows: int
    band_counts: dict[str, int]
    mean_probability: float
    histogram: pd.DataFrame  # churn probability (a tenth), customers, bar
    top_reasons: pd.DataFrame  # first reason, customers
    highest_risk: pd.DataFrame  # the preview rows: pseudonym, probability, band, reasons

    def bands(self) -> pd.DataFrame:
        """Customers and their share per band, high first."""
        total = max(1, self.rows)
        return pd.DataFrame(
            {
                "band": list(self.band_counts),
                "customers": list(self.band_counts.values()),
                "share": [round(count / total, 4) for count in self.band_counts.values()],
            }
        )


def summarize_scores(
    url: str, snapshot_date: date, *, key: bytes, preview_rows: int = PREVIEW_ROWS
) -> ScoreSummary:
    """Counts, bands, the probability histogram (tenths), the most common first reasons and
    the highest-risk customers of the date.

    The summary is shown outside the warehouse (the asset's metadata), so the highest-risk
    customers are named by their pseudonym under ``key``: ``retention lookup`` maps one back
    for a person with warehouse access.
    """
    with connect(url) as conn:
        bands = score_table.band_counts(conn, snapshot_date)
        mean = score_table.mean_probability(conn, snapshot_date)
        tenths = score_table.probability_tenths(conn, snapshot_date)
        reasons = score_table.first_reason_counts(conn, snapshot_date, limit=10)
        preview = score_table.highest_risk(conn, snapshot_date, limit=preview_rows)
    return ScoreSummary(
        rows=sum(bands.values()),
        band_counts={band: bands.get(band, 0) for band in ("high", "medium", "low")},
        mean_probability=mean,
        histogram=histogram(tenths),
        top_reasons=reasons,
        highest_risk=pseudonymous(preview, key),
    )


def pseudonymous(rows: pd.DataFrame, key: bytes) -> pd.DataFrame:
    """``rows`` with their ``customer_id`` column replaced by a first column ``pseudonym``."""
    named = rows.drop(columns="customer_id")
    named.insert(0, "pseudonym", display_all(rows["customer_id"].astype(str), key))
    return named


def histogram(tenths: dict[int, int], width: int = 30) -> pd.DataFrame:
    """Customers per tenth of the probability range, with a bar scaled to the largest."""
    counts = [tenths.get(bucket, 0) for bucket in range(1, 11)]
    peak = max(counts) or 1
    return pd.DataFrame(
        {
            "churn probability": [f"{(b - 1) / 10:.1f}-{b / 10:.1f}" for b in range(1, 11)],
            "customers": counts,
            "bar": ["█" * round(width * count / peak) for count in counts],
        }
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
    """What must hold after a scoring run, counted in the tables."""
    counts = score_table.score_counts(url, snapshot_date)
    return [
        ScoreCheck(
            "one_score_per_customer",
            counts.feature_rows == counts.score_rows and counts.unscored_customers == 0,
            {
                "feature_rows": counts.feature_rows,
                "score_rows": counts.score_rows,
                "unscored_customers": counts.unscored_customers,
            },
        ),
        ScoreCheck(
            "probabilities_in_unit_interval",
            counts.out_of_range == 0,
            {"rows_out_of_range": counts.out_of_range},
        ),
        ScoreCheck(
            "version_and_reasons_present",
            counts.incomplete == 0,
            {"incomplete_rows": counts.incomplete},
        ),
        ScoreCheck(
            "scored_by_run_start_champion",
            counts.versions == expected_version,
            {"expected_version": expected_version, "versions_in_table": counts.versions or "none"},
        ),
    ]
