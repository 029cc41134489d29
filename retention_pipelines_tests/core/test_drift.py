"""The drift report on generated snapshots built by the real ingestion and dbt: quiet data is
quiet, shifted data drifts in the shifted columns, and broken columns are findings."""

from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg
import pytest

from retention_pipelines.core import drift, retraining
from retention_pipelines.datagen import write_landing_csv
from retention_pipelines_tests.helpers import build_snapshot

pytestmark = pytest.mark.slow
REFERENCE_DAY, QUIET_DAY, DRIFTED_DAY = date(2026, 2, 1), date(2026, 2, 2), date(2026, 2, 3)
CONFIG = drift.DriftConfig()


@pytest.fixture(scope="module")
def warehouse(module_database_url: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A labelled reference snapshot, an unlabelled quiet one (other customers, same
    population) and a drifted one."""
    folder = tmp_path_factory.mktemp("landing")
    for day, seed, shift, labelled in (
        (REFERENCE_DAY, 1, 0.0, True),
        (QUIET_DAY, 2, 0.0, False),
        (DRIFTED_DAY, 3, 0.6, False),
    ):
        csv = write_landing_csv(
            folder / f"{day}.csv", 5_000, seed=seed, drift=shift, labelled=labelled
        )
        build_snapshot(module_database_url, csv, day.isoformat(), tmp_path_factory.mktemp("dbt"))
    return module_database_url


@pytest.fixture(scope="module")
def reference(warehouse: str) -> drift.Reference:
    return drift.read_reference(warehouse, "1", [REFERENCE_DAY], max_rows=CONFIG.max_rows)


def _report(
    warehouse: str,
    reference: drift.Reference,
    day: date,
    tmp_path: Path,
    current: pd.DataFrame | None = None,
    **kwargs,
) -> drift.DriftReport:
    frame, rows = drift.read_current(warehouse, day, max_rows=CONFIG.max_rows)
    return drift.measure_drift(
        day,
        reference,
        frame if current is None else current,
        rows,
        reference_probabilities=kwargs.pop("reference_probabilities", None),
        config=kwargs.pop("config", CONFIG),
        report_path=tmp_path / f"drift_{day}.html",
    )


def test_another_sample_of_the_same_population_does_not_drift(
    warehouse: str, reference: drift.Reference, tmp_path: Path
) -> None:
    report = _report(warehouse, reference, QUIET_DAY, tmp_path)
    assert report.current_rows == 5_000
    assert reference.rows == 5_000
    assert len(report.columns) == 30
    assert not report.dataset_drift
    assert report.drift_share < CONFIG.drift_share
    assert report.report_path.stat().st_size > 10_000


def test_drifted_data_drifts_in_the_shifted_columns(
    warehouse: str, reference: drift.Reference, tmp_path: Path
) -> None:
    report = _report(warehouse, reference, DRIFTED_DAY, tmp_path)
    assert report.dataset_drift
    drifted = {column.column for column in report.drifted_columns}
    # The generator's drift raises prices and shortens tenure.
    assert {"monthly_charges", "tenure_months", "avg_monthly_spend", "total_charges"} <= drifted
    assert "gender" not in drifted
    for column in report.drifted_columns:
        assert column.score >= column.threshold


def test_the_summary_is_replaced_per_date(
    warehouse: str, reference: drift.Reference, tmp_path: Path
) -> None:
    for _ in range(2):
        drift.save_report(warehouse, _report(warehouse, reference, DRIFTED_DAY, tmp_path))
    drift.save_report(warehouse, _report(warehouse, reference, QUIET_DAY, tmp_path))
    with psycopg.connect(warehouse) as conn:
        rows = conn.execute(
            "select snapshot_date, dataset_drift, reference_model_version,"
            " jsonb_array_length(drifted_columns), jsonb_array_length(column_results)"
            " from monitoring.drift_reports order by snapshot_date"
        ).fetchall()
    assert [(row[0], row[1], row[2], row[4]) for row in rows] == [
        (QUIET_DAY, False, "1", 30),
        (DRIFTED_DAY, True, "1", 30),
    ]
    latest = retraining.latest_reports(warehouse)
    assert [report.snapshot_date for report in latest] == [DRIFTED_DAY]
    assert "monthly_charges" in latest[0].drifted_columns


def test_null_and_constant_columns_are_findings_not_crashes(
    warehouse: str, reference: drift.Reference, tmp_path: Path
) -> None:
    frame, _ = drift.read_current(warehouse, QUIET_DAY, max_rows=CONFIG.max_rows)
    frame["monthly_charges"] = np.nan
    frame["contract"] = pd.Series("Month-to-month", index=frame.index, dtype="category")
    frame.loc[frame.index[:1_000], "payment_method"] = None
    report = _report(warehouse, reference, QUIET_DAY, tmp_path, current=frame)
    kinds = {(finding.column, finding.kind) for finding in report.findings}
    assert ("monthly_charges", "all_null") in kinds
    assert ("monthly_charges", "missing_share_jump") in kinds
    assert ("contract", "constant") in kinds
    assert ("payment_method", "missing_share_jump") in kinds
    tested = {column.column: column for column in report.columns}
    assert "monthly_charges" not in tested
    assert tested["contract"].drifted


def test_an_empty_date_is_a_finding(
    warehouse: str, reference: drift.Reference, tmp_path: Path
) -> None:
    report = _report(warehouse, reference, date(2026, 2, 20), tmp_path)
    assert report.current_rows == 0
    assert not report.dataset_drift
    assert [finding.kind for finding in report.findings] == ["empty"]
    assert report.report_path.exists()


def test_prediction_drift_compares_the_probabilities(
    warehouse: str, reference: drift.Reference, tmp_path: Path
) -> None:
    frame, _ = drift.read_current(warehouse, QUIET_DAY, max_rows=CONFIG.max_rows)
    rng = np.random.default_rng(0)
    base = rng.beta(2, 5, size=len(reference.frame))
    frame[drift.PROBABILITY] = rng.beta(2, 5, size=len(frame))
    quiet = _report(warehouse, reference, QUIET_DAY, tmp_path, frame, reference_probabilities=base)
    assert quiet.prediction is not None and not quiet.prediction.drifted
    frame[drift.PROBABILITY] = rng.beta(5, 2, size=len(frame))
    moved = _report(warehouse, reference, QUIET_DAY, tmp_path, frame, reference_probabilities=base)
    assert moved.prediction is not None and moved.prediction.drifted
    assert moved.prediction.current_mean > moved.prediction.reference_mean + 0.3


def test_sampling_bounds_the_rows_read(warehouse: str, reference: drift.Reference) -> None:
    frame, rows = drift.read_current(warehouse, QUIET_DAY, max_rows=1_000)
    assert rows == 5_000
    assert 800 <= len(frame) <= 1_300
    again, _ = drift.read_current(warehouse, QUIET_DAY, max_rows=1_000)
    pd.testing.assert_frame_equal(frame, again)


def test_a_per_column_method_overrides_the_default(
    warehouse: str, reference: drift.Reference, tmp_path: Path
) -> None:
    config = drift.DriftConfig(column_methods={"monthly_charges": "psi:0.2"})
    report = _report(warehouse, reference, DRIFTED_DAY, tmp_path, config=config)
    charges = next(column for column in report.columns if column.column == "monthly_charges")
    assert (charges.method, charges.threshold) == ("psi", 0.2)
    with pytest.raises(ValueError, match="not a feature column"):
        drift.DriftConfig(column_methods={"nope": "psi"}).per_column()


def test_the_reference_needs_labelled_rows(warehouse: str) -> None:
    with pytest.raises(LookupError, match="reference data of v9 is gone"):
        drift.read_reference(warehouse, "9", [QUIET_DAY], max_rows=1_000)
    with pytest.raises(LookupError, match="no data_snapshots tag"):
        drift.snapshot_dates_of(None)
    assert drift.snapshot_dates_of("2026-02-03,2026-02-01") == (DRIFTED_DAY, REFERENCE_DAY)[::-1]
