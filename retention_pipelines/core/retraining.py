"""When to retrain: the retraining sensor's decision, from what monitoring recorded.

One retraining per drift: the run key is ``retrain-<champion version>-<snapshot date>``, so the
same drifted date under the same champion can never start two runs (Dagster drops a second
request with a key it has seen, whatever happened to the daemon in between). A cooldown keeps
consecutive drifted days from retraining again and again while the first retraining's
champion has not yet been measured against. A drifted date whose data quality suite failed,
or was not run, is never trained on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

from retention_pipelines.core.performance import PerformanceDrop
from retention_pipelines.core.warehouse import monitoring

TRIGGER_TAG = "retention/trigger"
DRIFT_DATE_TAG = "retention/drift_date"
CHAMPION_TAG = "retention/champion_version"
REASON_TAG = "retention/reason"


@dataclass(frozen=True)
class StoredDrift:
    """A row of ``monitoring.drift_reports``, as the retraining sensor reads it."""

    snapshot_date: date
    reference_model_version: str
    dataset_drift: bool
    drift_share: float
    drift_share_threshold: float
    drifted_columns: tuple[str, ...]
    prediction_drifted: bool


def latest_reports(url: str, limit: int = 1) -> list[StoredDrift]:
    """The newest ``limit`` drift reports, newest first."""
    return [
        StoredDrift(
            snapshot_date=row["snapshot_date"],
            reference_model_version=row["reference_model_version"],
            dataset_drift=row["dataset_drift"],
            drift_share=row["drift_share"],
            drift_share_threshold=row["drift_share_threshold"],
            drifted_columns=tuple(column["column"] for column in row["drifted_columns"]),
            prediction_drifted=bool(
                row["prediction_drift"] and row["prediction_drift"].get("drifted")
            ),
        )
        for row in monitoring.latest_drift_reports(url, limit)
    ]


@dataclass(frozen=True)
class RetrainDecision:
    """Retrain (``run_key`` set) or not, and why, in words for the Dagster UI."""

    reason: str
    run_key: str | None = None
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def retrain(self) -> bool:
        return self.run_key is not None


def run_key(champion_version: str, snapshot_date: date) -> str:
    return f"retrain-{champion_version}-{snapshot_date.isoformat()}"


def decide_retraining(
    *,
    report: StoredDrift | None,
    champion_version: str | None,
    quality_passed: bool | None,
    last_drift_retrain: date | None,
    cooldown_days: int,
    performance: PerformanceDrop | None = None,
) -> RetrainDecision:
    """Whether the latest drift report (or a drop in realised performance) asks for a
    retraining run now."""
    if champion_version is None:
        return RetrainDecision("no champion yet: run retrain_job once to train the first model")
    if report is None:
        return RetrainDecision("no drift report yet: the nightly job writes one per date")
    day = report.snapshot_date
    if report.reference_model_version != champion_version:
        return RetrainDecision(
            f"the latest drift report ({day}) measured against v{report.reference_model_version}"
            f"; the champion is now v{champion_version}: waiting for a report against it"
        )
    causes = _causes(report, performance)
    if not causes:
        return RetrainDecision(
            f"no drift on {day}: {report.drift_share:.0%} of columns drifted, "
            f"below the threshold of {report.drift_share_threshold:.0%}"
        )
    held = _held_back(day, quality_passed, last_drift_retrain, cooldown_days)
    if held:
        return RetrainDecision(f"{causes[0]}; but {held}")
    reason = "; ".join(causes)
    return RetrainDecision(
        reason=reason,
        run_key=run_key(champion_version, day),
        tags={
            TRIGGER_TAG: "drift" if report.dataset_drift else "performance",
            DRIFT_DATE_TAG: day.isoformat(),
            CHAMPION_TAG: champion_version,
            REASON_TAG: reason[:250],
        },
    )


def _causes(report: StoredDrift, performance: PerformanceDrop | None) -> list[str]:
    causes = []
    if report.dataset_drift:
        causes.append(
            f"feature drift on {report.snapshot_date}: {report.drift_share:.0%} of columns "
            f"drifted (threshold {report.drift_share_threshold:.0%}): "
            + ", ".join(report.drifted_columns)
        )
    if performance is not None and performance.dropped:
        causes.append(
            f"realised ROC AUC {performance.realised_auc:.3f} of the scores of "
            f"{performance.score_date} against the test ROC AUC {performance.test_auc:.3f}"
        )
    return causes


def _held_back(
    day: date, quality_passed: bool | None, last_drift_retrain: date | None, cooldown_days: int
) -> str | None:
    if quality_passed is not True:
        state = "failed" if quality_passed is False else "has not run"
        return f"the data quality suite of {day} {state}: not retraining on it"
    if last_drift_retrain is not None and (day - last_drift_retrain).days < cooldown_days:
        return (
            f"a retraining for the drift of {last_drift_retrain} ran "
            f"{(day - last_drift_retrain).days} days before (cooldown {cooldown_days} days)"
        )
    return None
