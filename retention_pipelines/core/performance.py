"""Realised performance: how past scores did once a later snapshot brought the churn labels.

A snapshot ``D`` whose ``features.customer_features`` rows carry ``churned`` is the ground
truth for every score of an earlier date ``S`` with ``D - horizon <= S < D``: each customer
scored on ``S`` and labelled on ``D`` is one (probability, label) pair. Per score date and
model version, the pairs give the realised ROC AUC, top-decile lift, Brier score, mean
probability, churn rate and a ten-bin calibration table, written to
``monitoring.model_performance`` and read back by the retraining sensor.

Memory is bounded whatever the customer count: the join and every metric are computed inside
Postgres, and only one row per (score date, model version) comes back. The ROC AUC is the
Mann-Whitney statistic, ``(R1 - n1 (n1 + 1) / 2) / (n1 n0)`` with ``R1`` the sum of the
positives' ranks by probability, ties given their mean rank: exactly what scikit-learn's
``roc_auc_score`` computes (ties count one half), from one sort per group that Postgres may
spill to disk rather than millions of pairs in Python. The definitions follow
:func:`retention_pipelines.core.training.evaluate`, so a realised figure reads like the test
figure logged at training: probabilities clipped to [1e-7, 1 - 1e-7] for AUC and Brier, and
the top decile is the ``max(1, n // 10)`` highest probabilities (ties broken by customer id).
"""

from __future__ import annotations

import base64
import io
import json
import logging
from dataclasses import asdict, dataclass
from datetime import date, timedelta
from typing import Any, Final

import pandas as pd
from mlflow import MlflowClient

from retention_pipelines.core import registry
from retention_pipelines.core.warehouse import monitoring
from retention_pipelines.core.warehouse.features import count_features
from retention_pipelines.core.warehouse.monitoring import CALIBRATION_BINS, PERFORMANCE_COLUMNS

logger = logging.getLogger(__name__)

# The run metric the training logs for the model's test split (core/tracking.py).
TEST_AUC_METRIC: Final = "test_roc_auc"
# Realised and test AUC are rounded figures: "exactly at the threshold" is no drop.
_FLOAT_SLACK: Final = 1e-9


@dataclass(frozen=True)
class CalibrationBin:
    """One tenth of the probability range: what was predicted there and what happened."""

    bin: str  # "0.1-0.2"
    mean_probability: float
    churn_rate: float
    customers: int


@dataclass(frozen=True)
class RealisedPerformance:
    """The scores of one date by one model version, judged by the labels of ``evaluated_on``.

    ``roc_auc`` and ``top_decile_lift`` are None when the customers are of one class only:
    neither is defined without both churners and stayers.
    """

    evaluated_on: date
    score_date: date
    model_version: str
    customers: int
    churned: int
    roc_auc: float | None
    top_decile_lift: float | None
    brier: float
    mean_probability: float
    churn_rate: float
    calibration: tuple[CalibrationBin, ...]


@dataclass(frozen=True)
class PerformanceOutcome:
    """What one labelled date recorded, and why nothing when nothing."""

    evaluated_on: date
    first_score_date: date
    labelled_customers: int
    groups: tuple[RealisedPerformance, ...]

    @property
    def customers_joined(self) -> int:
        return sum(group.customers for group in self.groups)

    @property
    def message(self) -> str:
        if self.labelled_customers == 0:
            return f"no labels on {self.evaluated_on}: nothing to evaluate"
        window = f"{self.first_score_date} to {self.evaluated_on - timedelta(days=1)}"
        if not self.groups:
            return (
                f"no scores from {window} for the {self.labelled_customers:,} customers "
                f"labelled on {self.evaluated_on}: nothing to evaluate"
            )
        return (
            f"{len(self.groups)} score date/model version groups from {window} evaluated "
            f"with the labels of {self.evaluated_on}: {self.customers_joined:,} customers joined"
        )


# --- measuring and recording -----------------------------------------------------------------


def record_performance(url: str, evaluated_on: date, *, horizon_days: int) -> PerformanceOutcome:
    """Judge the scores of the ``horizon_days`` before ``evaluated_on`` by its labels, and
    replace that date's rows of ``monitoring.model_performance`` with the result.

    The figures are computed inside Postgres and written in one transaction holding the
    date's advisory lock: two runs of one date take turns, readers see the previous rows
    until the commit, and a failure leaves them as they were. A date without labels, or
    without earlier scores in the horizon, is replaced by nothing (labels that vanished take
    their figures with them), and the outcome says which it was.
    """
    if horizon_days < 1:
        raise ValueError(f"the performance horizon must be at least one day, got {horizon_days}")
    first = evaluated_on - timedelta(days=horizon_days)
    labelled = count_features(url, evaluated_on, labelled=True)
    groups = measure(url, evaluated_on, first) if labelled else ()
    monitoring.replace_performance(url, evaluated_on, performance_rows(groups))
    outcome = PerformanceOutcome(
        evaluated_on=evaluated_on,
        first_score_date=first,
        labelled_customers=labelled,
        groups=groups,
    )
    logger.info(outcome.message)
    return outcome


def measure(
    url: str, evaluated_on: date, first_score_date: date
) -> tuple[RealisedPerformance, ...]:
    """The realised performance of every (score date, model version) with scores from
    ``first_score_date`` up to the day before ``evaluated_on``, by that day's labels."""
    groups = monitoring.realised_groups(url, evaluated_on, first_score_date)
    return tuple(_realised(evaluated_on, *row) for row in groups.itertuples(index=False, name=None))


def performance_rows(groups: tuple[RealisedPerformance, ...]) -> pd.DataFrame:
    """The groups as rows of ``monitoring.model_performance`` (calibration as JSON)."""
    records = [asdict(group) for group in groups]
    for record in records:
        record["calibration"] = json.dumps(record["calibration"])
    return pd.DataFrame(records, columns=list(PERFORMANCE_COLUMNS))


def _realised(
    evaluated_on: date,
    score_date: date,
    model_version: str,
    customers: int,
    churned: int,
    positive_rank_sum: Any,
    top_decile_rate: Any,
    brier: Any,
    mean_probability: Any,
    churn_rate: Any,
    bins: list[dict[str, Any]],
) -> RealisedPerformance:
    positives, negatives = int(churned), int(customers) - int(churned)
    both_classes = positives > 0 and negatives > 0
    auc = (
        (float(positive_rank_sum) - positives * (positives + 1) / 2) / (positives * negatives)
        if both_classes
        else None
    )
    return RealisedPerformance(
        evaluated_on=evaluated_on,
        score_date=score_date,
        model_version=str(model_version),
        customers=int(customers),
        churned=positives,
        roc_auc=auc,
        top_decile_lift=float(top_decile_rate) / float(churn_rate) if both_classes else None,
        brier=float(brier),
        mean_probability=float(mean_probability),
        churn_rate=float(churn_rate),
        calibration=tuple(_calibration_bin(entry) for entry in bins),
    )


def _calibration_bin(entry: dict[str, Any]) -> CalibrationBin:
    index = int(entry["bin"])
    return CalibrationBin(
        bin=f"{(index - 1) / CALIBRATION_BINS:.1f}-{index / CALIBRATION_BINS:.1f}",
        mean_probability=float(entry["mean_probability"]),
        churn_rate=float(entry["churn_rate"]),
        customers=int(entry["customers"]),
    )


# --- the retraining signal -------------------------------------------------------------------


@dataclass(frozen=True)
class ChampionReference:
    """The champion and the ROC AUC it had on its own test split when it was trained."""

    version: str
    test_auc: float


def champion_reference(client: MlflowClient) -> ChampionReference | None:
    """The champion's version and its test ROC AUC (the training run's ``test_roc_auc``);
    None before the first promotion or for a version registered without that metric."""
    version = registry.champion_version(client)
    if version is None:
        return None
    run_id = client.get_model_version(registry.MODEL_NAME, version).run_id
    if not run_id:
        return None
    test_auc = client.get_run(run_id).data.metrics.get(TEST_AUC_METRIC)
    return ChampionReference(version, float(test_auc)) if test_auc is not None else None


@dataclass(frozen=True)
class PerformanceDrop:
    """The latest realised ROC AUC of a version against its test AUC."""

    version: str
    evaluated_on: date
    score_date: date
    realised_auc: float
    test_auc: float
    dropped: bool

    @property
    def shortfall(self) -> float:
        return self.test_auc - self.realised_auc

    def describe(self) -> str:
        verdict = "dropped" if self.dropped else "held"
        return (
            f"version {self.version} {verdict}: realised ROC AUC {self.realised_auc:.4f} on the "
            f"scores of {self.score_date} (labels of {self.evaluated_on}) against "
            f"{self.test_auc:.4f} on its test split"
        )


def performance_drop(
    url: str, version: str, test_auc: float, *, threshold: float
) -> PerformanceDrop | None:
    """Whether ``version``'s latest realised ROC AUC fell more than ``threshold`` below its
    test AUC; None when no realised AUC is recorded for it.

    "Latest" is the most recent labelled date, and within it the most recent score date: the
    freshest scores judged by the freshest labels. Groups of one class (no AUC) are skipped.
    """
    latest = monitoring.latest_realised_auc(url, version)
    if latest is None:
        return None
    evaluated_on, score_date, realised = latest
    return PerformanceDrop(
        version=version,
        evaluated_on=evaluated_on,
        score_date=score_date,
        realised_auc=float(realised),
        test_auc=float(test_auc),
        dropped=float(test_auc) - float(realised) > threshold + _FLOAT_SLACK,
    )


# --- for people ------------------------------------------------------------------------------


def groups_frame(groups: tuple[RealisedPerformance, ...]) -> pd.DataFrame:
    """The figures per score date and version (no ROC AUC or lift for one class only)."""

    def rounded(value: float | None, digits: int) -> float | None:
        return None if value is None else round(value, digits)

    return pd.DataFrame(
        {
            "score date": [str(group.score_date) for group in groups],
            "version": [group.model_version for group in groups],
            "customers": [group.customers for group in groups],
            "churned": [group.churned for group in groups],
            "ROC AUC": [rounded(group.roc_auc, 4) for group in groups],
            "top-decile lift": [rounded(group.top_decile_lift, 2) for group in groups],
            "Brier": [round(group.brier, 4) for group in groups],
            "mean probability": [round(group.mean_probability, 3) for group in groups],
            "churn rate": [round(group.churn_rate, 3) for group in groups],
        }
    )


def realised_auc_plot(history: pd.DataFrame, *, test_auc: ChampionReference | None = None) -> str:
    """Realised ROC AUC over score dates, one line per model version, as a small PNG in a
    markdown image (what Dagster's markdown metadata shows); empty when there is no history.

    The champion's test AUC, when given, is drawn as a dashed line: the level the realised
    figures are judged against.
    """
    if history.empty:
        return ""
    import matplotlib  # noqa: PLC0415  (imported on use: loading the code location stays fast)

    matplotlib.use("Agg")  # files, never a window: runs happen on servers
    import matplotlib.pyplot as plt  # noqa: PLC0415

    figure, axes = plt.subplots(figsize=(6, 2.6), dpi=80)
    try:
        for version, rows in history.groupby("model_version", sort=True):
            axes.plot(rows["score_date"], rows["roc_auc"], marker="o", ms=3, label=f"v{version}")
        if test_auc is not None:
            axes.axhline(test_auc.test_auc, linestyle="--", color="grey", linewidth=1,
                         label=f"v{test_auc.version} test")  # fmt: skip
        axes.set_ylabel("realised ROC AUC")
        axes.grid(alpha=0.3)
        axes.legend(fontsize="small", loc="lower left")
        figure.autofmt_xdate()
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png")
    finally:
        plt.close(figure)
    encoded = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f"![realised ROC AUC per score date](data:image/png;base64,{encoded})"
