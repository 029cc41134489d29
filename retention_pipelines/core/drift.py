"""Feature and prediction drift of a snapshot date against the champion's training data.

The reference is the labelled rows of the snapshot dates the current champion was trained on
(its version's ``data_snapshots`` tag), read from ``features.customer_features``, and the
champion's own probabilities on them. The current data is the date's features joined to the
date's scores. Past ``max_rows`` both are sampled in Postgres by a seeded hash of the customer
id, so the report's cost is bounded whatever the customer count.

Guards run before Evidently: an empty date, a column that is all null or constant (in either
data set), and a jump in a column's missing share are findings of their own. Columns the
drift tests cannot judge are left out of them instead of crashing the report. Evidently (0.7
API) then tests every remaining feature column with the configured method and threshold (a
declared :class:`evidently.DataDefinition`: categorical and boolean columns as categories,
the rest as numbers), and the probabilities with the numerical method. The HTML report is
kept; the summary goes to ``monitoring.drift_reports``, replaced per date. Evidently is imported
when a report is measured, not when this module is (the retraining sensor reads summaries).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from retention_pipelines.core.features import (
    BOOLEAN_FEATURES,
    CATEGORICAL_FEATURES,
    FEATURE_COLUMNS,
    NUMERIC_FEATURES,
)
from retention_pipelines.core.warehouse import features as feature_table
from retention_pipelines.core.warehouse import monitoring
from retention_pipelines.core.warehouse.features import PROBABILITY

FindingKind = Literal["empty", "all_null", "constant", "missing_share_jump", "no_scores"]


@dataclass(frozen=True)
class DriftConfig:
    """Thresholds and methods, from settings (``RETENTION_DRIFT_*``)."""

    drift_share: float = 0.2
    numerical_method: str = "wasserstein"
    numerical_threshold: float = 0.1
    categorical_method: str = "jensenshannon"
    categorical_threshold: float = 0.1
    column_methods: Mapping[str, str] = field(default_factory=dict)
    missing_share_jump: float = 0.05
    max_rows: int = 200_000

    def per_column(self) -> tuple[dict[str, str], dict[str, float]]:
        """Per-column overrides, ``{"column": "method"}`` or ``"method:threshold"``."""
        methods, thresholds = {}, {}
        for column, spec in self.column_methods.items():
            if column not in FEATURE_COLUMNS:
                raise ValueError(f"drift method set for {column!r}, not a feature column")
            method, _, threshold = spec.partition(":")
            methods[column] = method
            if threshold:
                thresholds[column] = float(threshold)
        return methods, thresholds


@dataclass(frozen=True)
class Finding:
    """Something the guards noticed about one column (or the whole date)."""

    column: str | None
    kind: FindingKind
    detail: str


@dataclass(frozen=True)
class ColumnDrift:
    column: str
    method: str
    score: float
    threshold: float
    drifted: bool


@dataclass(frozen=True)
class PredictionDrift:
    method: str
    score: float
    threshold: float
    drifted: bool
    reference_mean: float
    current_mean: float


@dataclass(frozen=True)
class Reference:
    """The champion's training data: which version, which dates, and the rows (sampled)."""

    model_version: str
    snapshots: tuple[date, ...]
    frame: pd.DataFrame
    rows: int  # before sampling


@dataclass(frozen=True)
class DriftReport:
    snapshot_date: date
    reference_model_version: str
    reference_snapshots: tuple[date, ...]
    reference_rows: int
    current_rows: int
    drift_share: float
    drift_share_threshold: float
    columns: tuple[ColumnDrift, ...]
    findings: tuple[Finding, ...]
    prediction: PredictionDrift | None
    report_path: Path

    @property
    def dataset_drift(self) -> bool:
        return bool(self.columns) and self.drift_share >= self.drift_share_threshold

    @property
    def drifted_columns(self) -> tuple[ColumnDrift, ...]:
        return tuple(column for column in self.columns if column.drifted)

    def as_row(self) -> dict[str, Any]:
        """The report as its row of ``monitoring.drift_reports`` (JSON values as Python)."""
        return {
            "snapshot_date": self.snapshot_date,
            "reference_model_version": self.reference_model_version,
            "reference_snapshots": ",".join(map(str, self.reference_snapshots)),
            "reference_rows": self.reference_rows,
            "current_rows": self.current_rows,
            "dataset_drift": self.dataset_drift,
            "drift_share": self.drift_share,
            "drift_share_threshold": self.drift_share_threshold,
            "drifted_columns": [asdict(column) for column in self.drifted_columns],
            "column_results": [asdict(column) for column in self.columns],
            "findings": [asdict(finding) for finding in self.findings],
            "prediction_drift": asdict(self.prediction) if self.prediction else None,
            "report_path": str(self.report_path),
        }

    def columns_frame(self) -> pd.DataFrame:
        """The tested columns, drifted first, then by score."""
        columns = list(iter_columns(self))
        return pd.DataFrame(
            {
                "column": [c.column for c in columns],
                "method": [c.method for c in columns],
                "score": [round(c.score, 4) for c in columns],
                "threshold": [c.threshold for c in columns],
                "drifted": [c.drifted for c in columns],
            }
        )

    def findings_frame(self) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "column": [f.column or "date" for f in self.findings],
                "finding": [f.kind for f in self.findings],
                "detail": [f.detail for f in self.findings],
            }
        )


# --- Reading. ---


def snapshot_dates_of(tag: str | None) -> tuple[date, ...]:
    """The dates of a model version's ``data_snapshots`` tag (comma separated)."""
    if not tag:
        raise LookupError("the champion version has no data_snapshots tag: no reference data")
    return tuple(sorted(date.fromisoformat(part.strip()) for part in tag.split(",")))


def read_reference(
    url: str, model_version: str, snapshots: Iterable[date], *, max_rows: int
) -> Reference:
    """Labelled feature rows of ``snapshots`` (what the champion trained on), sampled."""
    days = tuple(snapshots)
    frame, rows = feature_table.read_sample(url, feature_table.labelled_on(days), max_rows=max_rows)
    if rows == 0:
        raise LookupError(
            f"no labelled rows of {', '.join(map(str, days))} in features.customer_features: "
            f"the reference data of v{model_version} is gone"
        )
    return Reference(model_version, days, frame, rows)


def read_current(url: str, snapshot_date: date, *, max_rows: int) -> tuple[pd.DataFrame, int]:
    """The date's feature rows with their scores (sampled), and the date's row count."""
    return feature_table.read_sample(
        url, feature_table.on_date(snapshot_date), max_rows=max_rows, with_scores=True
    )


def _for_evidently(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """The frame Evidently reads: ``columns`` only (the features and the probability, never
    ``customer_id`` or another id: the HTML report is a file outside the warehouse), flags as
    text categories, which Evidently tests as categorical columns. The report shows
    distributions and aggregates (Evidently's raw-data plots stay off), not rows."""
    out = frame[columns].copy()
    for column in BOOLEAN_FEATURES:
        if column in out:
            out[column] = out[column].map({True: "true", False: "false"}).astype("category")
    return out


# --- Guards. ---


def guard_columns(
    reference: pd.DataFrame, current: pd.DataFrame, *, missing_share_jump: float
) -> tuple[list[str], list[Finding]]:
    """The feature columns the drift tests can judge, and the findings about the others."""
    if current.empty:
        return [], [Finding(None, "empty", "the date has no feature rows")]
    testable, findings = [], []
    for column in FEATURE_COLUMNS:
        ref, cur = reference[column], current[column]
        judged = True
        for name, values in (("reference", ref), ("current", cur)):
            present = values.dropna()
            if present.empty:
                findings.append(Finding(column, "all_null", f"every {name} value is null"))
                judged = False
            elif present.nunique() == 1:
                findings.append(
                    Finding(column, "constant", f"every {name} value is {present.iloc[0]!r}")
                )
                judged = judged and name == "current"  # a constant current is still drift
        jump = float(cur.isna().mean() - ref.isna().mean())
        if jump > missing_share_jump:
            findings.append(
                Finding(
                    column,
                    "missing_share_jump",
                    f"missing share {ref.isna().mean():.1%} in the reference, "
                    f"{cur.isna().mean():.1%} now",
                )
            )
        if judged:
            testable.append(column)
    return testable, findings


# --- The report. ---


def measure_drift(
    snapshot_date: date,
    reference: Reference,
    current: pd.DataFrame,
    current_rows: int,
    *,
    reference_probabilities: np.ndarray | None,
    config: DriftConfig,
    report_path: Path,
) -> DriftReport:
    """Run the guards and Evidently; write the HTML report to ``report_path``."""
    from evidently import DataDefinition, Dataset, Report  # noqa: PLC0415  (seconds to import)
    from evidently.metrics import ValueDrift  # noqa: PLC0415
    from evidently.presets import DataDriftPreset  # noqa: PLC0415

    ref = reference.frame.copy()
    columns, findings = guard_columns(ref, current, missing_share_jump=config.missing_share_jump)
    methods, thresholds = config.per_column()
    metrics: list[Any] = []
    if columns:
        metrics.append(
            DataDriftPreset(
                columns=columns,
                drift_share=config.drift_share,
                num_method=config.numerical_method,
                num_threshold=config.numerical_threshold,
                cat_method=config.categorical_method,
                cat_threshold=config.categorical_threshold,
                per_column_method={c: m for c, m in methods.items() if c in columns} or None,
                per_column_threshold={c: t for c, t in thresholds.items() if c in columns} or None,
            )
        )
    scored = _has_scores(current, reference_probabilities)
    if scored:
        ref[PROBABILITY] = reference_probabilities
        metrics.append(
            ValueDrift(
                column=PROBABILITY,
                method=config.numerical_method,
                threshold=config.numerical_threshold,
            )
        )
    elif not current.empty:
        findings.append(Finding(PROBABILITY, "no_scores", "the date has no scores to compare"))
    results: list[ColumnDrift] = []
    prediction = None
    if metrics:
        definition = DataDefinition(
            numerical_columns=[
                c for c in (*NUMERIC_FEATURES, *([PROBABILITY] if scored else [])) if c in ref
            ],
            categorical_columns=[*CATEGORICAL_FEATURES, *BOOLEAN_FEATURES],
        )
        keep = [*FEATURE_COLUMNS, *([PROBABILITY] if scored else [])]
        snapshot = Report(metrics, include_tests=True).run(
            Dataset.from_pandas(_for_evidently(current, keep), data_definition=definition),
            Dataset.from_pandas(_for_evidently(ref, keep), data_definition=definition),
        )
        report_path.parent.mkdir(parents=True, exist_ok=True)
        snapshot.save_html(str(report_path))
        drifts = _value_drifts(snapshot.dict())
        results = [drifts[column] for column in columns]
        if scored:
            found = drifts[PROBABILITY]
            prediction = PredictionDrift(
                method=found.method,
                score=found.score,
                threshold=found.threshold,
                drifted=found.drifted,
                reference_mean=float(np.mean(reference_probabilities)),
                current_mean=float(current[PROBABILITY].mean()),
            )
    else:
        _write_placeholder(report_path, snapshot_date, findings)
    drifted = sum(result.drifted for result in results)
    return DriftReport(
        snapshot_date=snapshot_date,
        reference_model_version=reference.model_version,
        reference_snapshots=reference.snapshots,
        reference_rows=reference.rows,
        current_rows=current_rows,
        drift_share=drifted / len(results) if results else 0.0,
        drift_share_threshold=config.drift_share,
        columns=tuple(results),
        findings=tuple(findings),
        prediction=prediction,
        report_path=report_path,
    )


def _has_scores(current: pd.DataFrame, reference_probabilities: np.ndarray | None) -> bool:
    return (
        reference_probabilities is not None
        and PROBABILITY in current
        and bool(current[PROBABILITY].notna().any())
    )


def _value_drifts(result: dict[str, Any]) -> dict[str, ColumnDrift]:
    """Per column, Evidently's drift score and its test's verdict."""
    scores = {
        metric["id"]: float(metric["value"])
        for metric in result["metrics"]
        if metric["config"].get("type", "").endswith("ValueDrift")
    }
    found = {}
    for test in result["tests"]:
        params = test["metric_config"]["params"]
        if not params.get("type", "").endswith("ValueDrift"):
            continue
        found[params["column"]] = ColumnDrift(
            column=params["column"],
            method=params["method"],
            score=scores[test["metric_config"]["metric_id"]],
            threshold=float(params["threshold"]),
            drifted=test["status"] == "FAIL",
        )
    return found


def _write_placeholder(path: Path, snapshot_date: date, findings: list[Finding]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    items = "".join(f"<li>{f.column or 'date'}: {f.detail}</li>" for f in findings)
    path.write_text(
        f"<html><body><h1>No drift tests for {snapshot_date}</h1><ul>{items}</ul></body></html>",
        encoding="utf-8",
    )


# --- Storage. ---


def save_report(url: str, report: DriftReport) -> None:
    """Replace the date's row of ``monitoring.drift_reports``."""
    monitoring.save_drift_report(url, report.as_row())


def iter_columns(report: DriftReport) -> Iterator[ColumnDrift]:
    """The tested columns, drifted first, then by score."""
    yield from sorted(report.columns, key=lambda c: (not c.drifted, -c.score))
