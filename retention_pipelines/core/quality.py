"""Data quality of one snapshot date of ``features.customer_features``: a Great Expectations
suite, its Data Docs, and a summary row in ``monitoring.data_quality``.

dbt's tests guard each column on its own as the table is built; this suite looks at the day
as a whole, the way a person reading the table would: as many rows as ingestion accepted, no
unexpected nulls, values in their ranges and sets, and derived columns that agree with their
sources. Its Data Docs show every expectation with what was observed, for each date.

Great Expectations is imported only when a suite runs (it takes seconds), so loading the
Dagster code location does not pay for it. Its contexts are ephemeral and in memory: nothing
but the Data Docs site is written, and analytics are off so nothing reaches for the network.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import pandas as pd

from retention_pipelines.core.features import (
    BOOLEAN_FEATURES,
    CATEGORICAL_FEATURES,
    LABEL_COLUMN,
    NUMERIC_FEATURES,
)
from retention_pipelines.core.schemas import CATEGORIES, CUSTOMER_ID_PATTERN, MAX_TENURE_MONTHS
from retention_pipelines.core.warehouse import features as feature_table
from retention_pipelines.core.warehouse import monitoring
from retention_pipelines.core.warehouse.tables import CUSTOMER_FEATURES

if TYPE_CHECKING:
    from great_expectations.core import ExpectationSuiteValidationResult
    from great_expectations.core.expectation_validation_result import (
        ExpectationValidationResult,
    )
    from great_expectations.expectations import Expectation

logger = logging.getLogger(__name__)

SUITE_NAME: Final = "customer_features"

# Every column of the table but the snapshot date (the one selected) and the label.
CHECKED_COLUMNS: Final[tuple[str, ...]] = (
    "customer_id",
    *CATEGORICAL_FEATURES,
    *BOOLEAN_FEATURES,
    *NUMERIC_FEATURES,
)
TENURE_BANDS: Final[tuple[str, ...]] = ("0-6", "7-12", "13-24", "25-48", "49+")
CONTRACT_MONTHS: Final[dict[str, int]] = {"Month-to-month": 1, "One year": 12, "Two year": 24}
MAX_ADD_ONS: Final = 6
# What a result keeps of the rows that broke an expectation: their count and share, never
# their values. An unexpected value of ``customer_id`` is a customer's id, and of any other
# column a customer's attribute; the results and the Data Docs are files and metadata outside
# the warehouse. The Data Docs still show each expectation, its rule (the range, the set, the
# row condition) and how many rows broke it; the rows themselves are found in the warehouse
# with the same rule.
RESULT_FORMAT: Final[dict[str, object]] = {
    "result_format": "SUMMARY",
    "partial_unexpected_count": 0,
    "include_unexpected_rows": False,
}
_VALUE_KEYS: Final = frozenset(
    {
        "partial_unexpected_list",
        "partial_unexpected_counts",
        "partial_unexpected_index_list",
        "unexpected_list",
        "unexpected_index_list",
        "unexpected_index_query",
        "unexpected_rows",
        "details",
    }
)


@dataclass(frozen=True)
class ExpectationOutcome:
    """One expectation's verdict, as stored in ``monitoring.data_quality.results``."""

    expectation: str
    column: str | None
    success: bool
    observed: Any  # JSON: an observed value, or counts and examples of unexpected values
    condition: str | None = None  # the rows it applies to, when not all of them

    def as_json(self) -> dict[str, Any]:
        return {
            "expectation": self.expectation,
            "column": self.column,
            "condition": self.condition,
            "success": self.success,
            "observed": self.observed,
        }


@dataclass(frozen=True)
class QualityReport:
    """The suite's verdict on one snapshot date."""

    snapshot_date: date
    success: bool
    rows: int
    expected_rows: int
    results: tuple[ExpectationOutcome, ...]
    docs_path: Path

    @property
    def expectations(self) -> int:
        return len(self.results)

    @property
    def failures(self) -> tuple[ExpectationOutcome, ...]:
        return tuple(outcome for outcome in self.results if not outcome.success)

    def as_row(self) -> dict[str, Any]:
        """The report as its row of ``monitoring.data_quality``."""
        return {
            "snapshot_date": self.snapshot_date,
            "success": self.success,
            "expectations": self.expectations,
            "failed": len(self.failures),
            "results": [outcome.as_json() for outcome in self.results],
            "docs_path": str(self.docs_path),
        }

    def failures_frame(self) -> pd.DataFrame:
        """The failed expectations with what they observed, for people."""
        return pd.DataFrame(
            {
                "expectation": [item.expectation for item in self.failures],
                "column": [item.column or "" for item in self.failures],
                "rows": [item.condition or "all" for item in self.failures],
                "observed": [describe_observed(item.observed) for item in self.failures],
            }
        )

    @property
    def message(self) -> str:
        """One line for a person: what was checked and how it went."""
        if self.rows == 0:
            return (
                f"no rows of {CUSTOMER_FEATURES} for {self.snapshot_date} "
                f"(raw.customer_snapshots holds {self.expected_rows:,}): nothing to validate"
            )
        failed = len(self.failures)
        verdict = "all met" if failed == 0 else f"{failed} failed"
        return (
            f"{self.expectations} expectations on {self.rows:,} rows of {CUSTOMER_FEATURES} "
            f"for {self.snapshot_date}: {verdict}"
        )


def validate_customer_features(url: str, snapshot_date: date, docs_dir: Path) -> QualityReport:
    """Run the suite on one date of ``features.customer_features`` and record its verdict.

    The Data Docs of the date are rebuilt under ``docs_dir/<date>/`` and the date's row of
    ``monitoring.data_quality`` is replaced. An empty partition is a failed suite, not an
    error: the row-count expectations say so.
    """
    features, expected_rows = feature_table.read_partition(url, snapshot_date)
    report = run_suite(features, snapshot_date, expected_rows, docs_dir)
    monitoring.save_quality(url, report.as_row())
    logger.info("%s", report.message)
    return report


# --- The suite. ---


def feature_expectations(expected_rows: int) -> list[Expectation]:
    """The expectations on one date of the feature table.

    Every contract column must be filled, except the label ``churned``: it is null for every
    customer of an unlabelled snapshot, so only its values are checked, not its share of nulls.
    The rules across columns hold by construction and on the Telco data: the contract length
    and the internet flag follow from their categorical sources (value sets under a row
    condition: GE's column-pair set test walks the rows in Python, tens of seconds at a
    million rows), and a customer billed at least once (tenure 1 or more) has paid at least
    one month's charge in total.
    """
    gxe = _great_expectations().expectations
    from great_expectations.expectations.row_conditions import Column  # noqa: PLC0415

    return [
        gxe.ExpectTableRowCountToBeBetween(min_value=1),
        gxe.ExpectTableRowCountToEqual(value=expected_rows),
        gxe.ExpectColumnValuesToBeUnique(column="customer_id"),
        gxe.ExpectColumnValuesToMatchRegex(column="customer_id", regex=CUSTOMER_ID_PATTERN),
        *(gxe.ExpectColumnValuesToNotBeNull(column=column) for column in CHECKED_COLUMNS),
        gxe.ExpectColumnValuesToBeBetween(
            column="tenure_months", min_value=0, max_value=MAX_TENURE_MONTHS
        ),
        *(
            gxe.ExpectColumnValuesToBeBetween(column=column, min_value=0)
            for column in ("monthly_charges", "total_charges", "avg_monthly_spend")
        ),
        gxe.ExpectColumnValuesToBeBetween(
            column="add_on_service_count", min_value=0, max_value=MAX_ADD_ONS
        ),
        *(
            gxe.ExpectColumnValuesToBeInSet(column=column, value_set=list(values))
            for column, values in _value_sets().items()
        ),
        *(
            gxe.ExpectColumnValuesToBeInSet(
                column="contract_length_months",
                value_set=[months],
                row_condition=Column("contract") == contract,
            )
            for contract, months in CONTRACT_MONTHS.items()
        ),
        gxe.ExpectColumnValuesToBeInSet(
            column="has_internet",
            value_set=[False],
            row_condition=Column("internet_service") == "No",
        ),
        gxe.ExpectColumnValuesToBeInSet(
            column="has_internet",
            value_set=[True],
            row_condition=Column("internet_service") != "No",
        ),
        gxe.ExpectColumnPairValuesAToBeGreaterThanB(
            column_A="total_charges",
            column_B="monthly_charges",
            or_equal=True,
            row_condition=Column("tenure_months") > 0,
            ignore_row_if="either_value_is_missing",  # a null is the not-null rule's finding
        ),
    ]


def _value_sets() -> dict[str, tuple[object, ...]]:
    """Allowed values of the categorical columns: ingestion's categories, the engineered
    bands and lengths, and the label."""
    sets: dict[str, tuple[object, ...]] = {
        column: CATEGORIES[column] for column in CATEGORICAL_FEATURES if column in CATEGORIES
    }
    sets["tenure_band"] = TENURE_BANDS
    sets["contract_length_months"] = tuple(CONTRACT_MONTHS.values())
    sets[LABEL_COLUMN] = (True, False)
    return sets


def run_suite(
    features: pd.DataFrame, snapshot_date: date, expected_rows: int, docs_dir: Path
) -> QualityReport:
    """Validate a date's feature rows and build its Data Docs under ``docs_dir/<date>/``.

    The site is built in a fresh folder beside it and swapped in when complete, so a failed
    build leaves the previous site as it was.
    """
    site_dir = docs_dir / snapshot_date.isoformat()
    build_dir = Path(tempfile.mkdtemp(prefix=f".{site_dir.name}-", dir=_made(docs_dir)))
    try:
        result = _validate(features, snapshot_date, expected_rows, build_dir)
        _replace_dir(build_dir, site_dir)
    finally:
        shutil.rmtree(build_dir, ignore_errors=True)  # gone already unless the build failed
    return QualityReport(
        snapshot_date=snapshot_date,
        success=bool(result.success),
        rows=len(features),
        expected_rows=expected_rows,
        results=_outcomes(result),
        docs_path=site_dir / "index.html",
    )


def _validate(
    features: pd.DataFrame, snapshot_date: date, expected_rows: int, site_dir: Path
) -> ExpectationSuiteValidationResult:
    """The suite run on the frame in an in-memory context whose Data Docs go to ``site_dir``."""
    gx = _great_expectations()
    context = gx.get_context(mode="ephemeral", project_config=_context_config(site_dir))
    batch = (
        context.data_sources.add_pandas("warehouse")
        .add_dataframe_asset(CUSTOMER_FEATURES)
        .add_batch_definition_whole_dataframe(snapshot_date.isoformat())
    )
    suite = context.suites.add(gx.ExpectationSuite(name=SUITE_NAME))
    for expectation in feature_expectations(expected_rows):
        suite.add_expectation(expectation)
    validation = context.validation_definitions.add(
        gx.ValidationDefinition(name=f"{SUITE_NAME} {snapshot_date}", data=batch, suite=suite)
    )
    result = validation.run(batch_parameters={"dataframe": features}, result_format=RESULT_FORMAT)
    _drop_values(result)
    context.build_data_docs()
    return result


def _drop_values(result: ExpectationSuiteValidationResult) -> None:
    """Remove whatever values of rows a result still holds, before the Data Docs render it:
    the result format asks for none, and this keeps it so whatever an expectation returns."""
    for item in result.results:
        if item.result:
            for key in _VALUE_KEYS & set(item.result):
                del item.result[key]


def _great_expectations() -> Any:
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations  # noqa: PLC0415  # seconds to import: only when a suite runs

    return great_expectations


def _context_config(site_dir: Path) -> Any:
    """In-memory stores, no analytics, no progress bars, one local Data Docs site."""
    from great_expectations.data_context.types.base import (  # noqa: PLC0415
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    return DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(),
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False),
        data_docs_sites={
            "local_site": {
                "class_name": "SiteBuilder",
                "show_how_to_buttons": False,
                "store_backend": {
                    "class_name": "TupleFilesystemStoreBackend",
                    "base_directory": str(site_dir),
                },
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            }
        },
    )


def _made(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _replace_dir(built: Path, target: Path) -> None:
    """Put a freshly built docs site where the date's site is: a re-run replaces the pages
    of the previous one instead of piling up beside them."""
    if target.exists():
        stale = Path(tempfile.mkdtemp(prefix=f".{target.name}-stale-", dir=target.parent))
        target.rename(stale / target.name)
        built.rename(target)
        shutil.rmtree(stale, ignore_errors=True)
    else:
        built.rename(target)


# --- Results. ---


def _outcomes(result: ExpectationSuiteValidationResult) -> tuple[ExpectationOutcome, ...]:
    return tuple(_outcome(item) for item in result.results)


def _outcome(item: ExpectationValidationResult) -> ExpectationOutcome:
    config = item.expectation_config
    kwargs = config.kwargs if config is not None else {}
    columns = [kwargs[key] for key in ("column", "column_A", "column_B") if key in kwargs]
    return ExpectationOutcome(
        expectation=config.type if config is not None else "unknown",
        column=", ".join(columns) or None,
        success=bool(item.success),
        observed=_observed(item),
        condition=_condition_text(kwargs.get("row_condition")),
    )


def _condition_text(condition: Any) -> str | None:
    """A row condition as people write it: ``contract == 'One year'``."""
    if not condition:
        return None
    if not isinstance(condition, dict):
        condition = condition.dict() if hasattr(condition, "dict") else {}
    try:
        column, operator = condition["column"]["name"], condition["operator"]
        return f"{column} {getattr(operator, 'value', operator)} {condition['parameter']!r}"
    except (KeyError, TypeError):
        return str(condition)


def _observed(item: ExpectationValidationResult) -> Any:
    """What the expectation saw: its observed value (a table's row count, say), or how many
    rows broke it and their share, never their values; the error when it could not be
    evaluated."""
    errors = _errors(item.exception_info or {})
    if errors:
        return {"error": "; ".join(errors)}
    result = item.result or {}
    if "observed_value" in result:
        return _json_safe(result["observed_value"])
    return {
        "unexpected_count": _json_safe(result.get("unexpected_count")),
        "unexpected_percent": _json_safe(result.get("unexpected_percent")),
    }


def _errors(info: dict[str, Any]) -> list[str]:
    """The messages of the exceptions an expectation raised: GE keeps one record, or one per
    metric it failed to compute (a missing column, say)."""
    records = [info] if "raised_exception" in info else list(info.values())
    messages = {
        str(record.get("exception_message"))
        for record in records
        if isinstance(record, dict) and record.get("raised_exception")
    }
    return sorted(messages)


def _json_safe(value: Any) -> Any:
    """Numpy scalars, tuples and NaN as JSON (NaN, a missing value, becomes null)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(key): _json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set):
        return [_json_safe(item) for item in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def describe_observed(observed: Any) -> str:
    """An observed value in a few words, for a Markdown table."""
    if isinstance(observed, dict) and "unexpected_count" in observed:
        percent = observed.get("unexpected_percent")
        share = f" ({percent:.2f}%)" if isinstance(percent, int | float) else ""
        return f"{observed['unexpected_count']} unexpected{share}"
    if isinstance(observed, dict) and "error" in observed:
        return f"error: {observed['error']}"
    return str(observed)
