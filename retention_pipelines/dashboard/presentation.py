"""The small decisions between the queries and the widgets: how a filter is read off the
widgets, how a number is written, when the model health page turns red. Plain functions, no
Streamlit, so each is tested on its own."""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from datetime import date, timedelta
from typing import Any, Final
from urllib.parse import urlencode

import pandas as pd

from retention_pipelines.dashboard.queries import CallListFilter

NO_SCORES: Final = "No scores yet: run `retention train` then `retention score`."
EXPORT_PATH: Final = "/export/call-list.csv"
# The Trends page opens on this many days up to the latest scored date.
DEFAULT_TREND_DAYS: Final = 30


def money(value: float) -> str:
    """An amount as a person reads it on a dashboard: ``$12,345``."""
    return f"${value:,.0f}"


def percent(value: float | None) -> str:
    return "n/a" if value is None or _missing(value) else f"{value:.1%}"


def figure(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None or _missing(value) else f"{value:.{digits}f}"


def _missing(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def page_count(rows: int, page_size: int) -> int:
    """Pages of ``page_size`` rows needed for ``rows`` (at least one, even when empty)."""
    return max(1, math.ceil(rows / page_size))


def filter_from_widgets(
    *,
    bands: Sequence[str],
    probability: tuple[float, float],
    contracts: Sequence[str],
    tenure: tuple[int, int],
    tenure_bounds: tuple[int, int],
    payment_methods: Sequence[str],
    internet_services: Sequence[str],
    reason_contains: str,
) -> CallListFilter:
    """The call list's filter from its widgets' values: a tenure slider left at the date's
    full range filters nothing (customers without a profile stay in)."""
    tenure_min, tenure_max = tenure
    return CallListFilter(
        bands=tuple(bands),
        probability_min=float(probability[0]),
        probability_max=float(probability[1]),
        contracts=tuple(contracts),
        tenure_min=None if tenure_min <= tenure_bounds[0] else int(tenure_min),
        tenure_max=None if tenure_max >= tenure_bounds[1] else int(tenure_max),
        payment_methods=tuple(payment_methods),
        internet_services=tuple(internet_services),
        reason_contains=reason_contains,
    )


def export_href(filters: CallListFilter) -> str:
    """The export route's URL for ``filters`` (the same filter parsed back on the server)."""
    query = urlencode(filters.to_query_params())
    return f"{EXPORT_PATH}?{query}" if query else EXPORT_PATH


def export_link_html(filters: CallListFilter, customers: int) -> str:
    """A download link to the CSV of the filtered call list, with its row count."""
    href = html.escape(export_href(filters), quote=True)
    noun = "customer" if customers == 1 else "customers"
    return (
        f'<a href="{href}" download="call-list.csv" data-testid="call-list-export">'
        f"Download the CSV ({customers:,} {noun})</a>"
    )


def default_span(first: date, last: date, days: int = DEFAULT_TREND_DAYS) -> tuple[date, date]:
    """The Trends page's opening range: the last ``days`` days up to the latest date."""
    return max(first, last - timedelta(days=days - 1)), last


def date_span(chosen: Any, first: date, last: date) -> tuple[date, date]:
    """A date-range widget's value as (start, end) within [first, last]: while a person
    has picked only the start, the range runs to the last date."""
    picked = [value for value in (chosen if isinstance(chosen, tuple | list) else (chosen,))]
    picked = [value for value in picked if isinstance(value, date)]
    if not picked:
        return default_span(first, last)
    start = max(first, min(picked[0], last))
    end = max(start, min(picked[1] if len(picked) > 1 else last, last))
    return start, end


def health_alerts(
    *,
    drift: Mapping[str, Any] | None,
    quality: Mapping[str, Any] | None,
    performance: Mapping[str, Any] | None,
    auc_drop: float,
) -> list[str]:
    """What is red on the model health page, one sentence each: the latest drift report
    found dataset drift, the latest data quality check failed, the latest realised ROC AUC
    trails the model's training figure by more than ``auc_drop``."""
    alerts = []
    if drift is not None and drift.get("dataset_drift"):
        columns = drift.get("drifted_columns") or "no column named"
        alerts.append(
            f"Data drift on {drift['snapshot_date']}: "
            f"{percent(drift.get('drift_share'))} of the columns drifted "
            f"(threshold {percent(drift.get('drift_share_threshold'))}): {columns}."
        )
    if quality is not None and not quality.get("success"):
        alerts.append(
            f"Data quality failed on {quality['snapshot_date']}: "
            f"{quality.get('failed')} of {quality.get('expectations')} expectations "
            f"({quality.get('failed_expectations') or 'see the data docs'})."
        )
    drop = None if performance is None else performance.get("roc_auc_drop")
    if drop is not None and not _missing(drop) and drop > auc_drop:
        alerts.append(
            f"Realised ROC AUC of the scores of {performance['score_date']} is "  # type: ignore[index]
            f"{figure(performance.get('roc_auc'))}, {drop:.3f} below the "  # type: ignore[union-attr]
            f"{figure(performance.get('training_roc_auc'))} of training "  # type: ignore[union-attr]
            f"(allowed: {auc_drop:.3f})."
        )
    return alerts


def promotion_sentence(champion: Mapping[str, Any]) -> str:
    """When, by whom and why the champion was promoted, and what it was trained on."""
    promoted = champion.get("promoted_at")
    when = f"on {promoted:%Y-%m-%d %H:%M %Z}".rstrip() if promoted else "(date unknown)"
    rows = champion.get("training_rows")
    trained = champion.get("training_snapshots") or "unknown snapshots"
    return (
        f"Promoted {when} by {champion.get('promoted_by') or 'unknown'}: "
        f"{champion.get('promotion_reason') or 'no reason recorded'}. "
        f"Trained on {trained}" + (f" ({rows:,} rows)." if rows else ".")
    )


def first_row(frame: pd.DataFrame) -> dict[str, Any] | None:
    """The first row of a frame as a mapping, None when empty."""
    return None if frame.empty else frame.iloc[0].to_dict()


def history_with_version_changes(history: pd.DataFrame) -> pd.DataFrame:
    """A customer's score history with ``version_label``: the model version where it
    differs from the previous point's (the points where a new model took over), else ''."""
    frame = history.copy()
    versions = frame["model_version"].astype(str)
    changed = versions.ne(versions.shift())
    frame["version_label"] = ("v" + versions).where(changed, "")
    return frame


def profile_rows(profile: Mapping[str, Any]) -> pd.DataFrame:
    """A customer's profile as two columns a person reads top to bottom."""
    labels = {
        "contract": "Contract",
        "tenure_months": "Tenure (months)",
        "monthly_charges": "Monthly charges",
        "payment_method": "Payment method",
        "internet_service": "Internet service",
    }

    def shown(name: str) -> str:
        value = profile.get(name)
        if value is None:
            return "unknown"
        return f"${float(value):,.2f}" if name == "monthly_charges" else str(value)

    return pd.DataFrame([{"": label, "value": shown(name)} for name, label in labels.items()])
