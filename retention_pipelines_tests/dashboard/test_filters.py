"""The dashboard's small decisions, without a database: the call list's filter as widgets and
the export URL give it, LIKE patterns, numbers as people read them, when model health turns
red, the charts' data, and the command that serves it all."""

from datetime import UTC, date, datetime
from urllib.parse import parse_qsl, urlsplit

import pandas as pd
import pytest

from retention_pipelines.dashboard import charts, presentation
from retention_pipelines.dashboard.launch import SERVER_SCRIPT, streamlit_command
from retention_pipelines.dashboard.queries import (
    CallListFilter,
    calibration_frame,
    filter_conditions,
    like_pattern,
)

EVERY_FILTER = CallListFilter(
    bands=("high", "medium"),
    probability_min=0.25,
    probability_max=0.9,
    contracts=("Month-to-month",),
    tenure_min=3,
    tenure_max=24,
    payment_methods=("Electronic check", "Mailed check"),
    internet_services=("Fiber optic",),
    reason_contains="50% off & more",
)


def test_a_filter_survives_the_round_trip_through_the_export_url() -> None:
    href = presentation.export_href(EVERY_FILTER)
    parts = urlsplit(href)
    assert parts.path == "/export/call-list.csv"
    assert CallListFilter.from_query_params(parse_qsl(parts.query)) == EVERY_FILTER


def test_the_default_filter_exports_everything_with_a_bare_url() -> None:
    assert presentation.export_href(CallListFilter()) == "/export/call-list.csv"
    assert CallListFilter.from_query_params([]) == CallListFilter()


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ([("band", "purple")], "unknown risk band 'purple'"),
        ([("p_min", "abc")], "p_min must be a number"),
        ([("p_min", "nan")], "p_min must be a number"),
        ([("p_min", "0.8"), ("p_max", "0.2")], "lowest first"),
        ([("p_max", "1.5")], "within 0 and 1"),
        ([("tenure_min", "-1")], "whole months"),
        ([("tenure_min", "2.5")], "whole number of months"),
        ([("tenure_min", "30"), ("tenure_max", "3")], "lowest first"),
        ([("reason", "x" * 201)], "longer than 200"),
        ([("reason", "a"), ("reason", "b")], "given 2 times"),
        ([("colour", "red")], "unknown filter 'colour'"),
        ([("contract", str(i)) for i in range(101)], "at most 100"),
    ],
)
def test_a_bad_filter_is_refused_with_a_sentence_that_says_why(
    query: list[tuple[str, str]], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        CallListFilter.from_query_params(query)


def test_repeated_choices_count_once_and_the_reason_is_trimmed() -> None:
    chosen = CallListFilter(bands=("high", "high"), reason_contains="  fiber ")
    assert (chosen.bands, chosen.reason_contains) == (("high",), "fiber")


def test_like_patterns_take_percent_underscore_and_backslash_literally() -> None:
    assert like_pattern("50%_off\\") == "%50\\%\\_off\\\\%"


def test_only_the_filters_set_narrow_the_query_and_every_value_is_a_parameter() -> None:
    where, params = filter_conditions(CallListFilter())
    assert "snapshot_date = (select max(snapshot_date)" in where.as_string(None)
    assert params == []
    where, params = filter_conditions(EVERY_FILTER, ["Offer: 50% off & more"])
    text = where.as_string(None)
    assert "50%" not in text and "Fiber optic" not in text  # values travel as parameters
    assert text.count("%s") == len(params) == 11
    assert params[-1] == ["Offer: 50% off & more"]
    # Every band chosen is no filter at all.
    assert filter_conditions(CallListFilter(bands=("low", "high", "medium")))[1] == []


def test_widgets_left_at_their_full_range_filter_nothing() -> None:
    chosen = presentation.filter_from_widgets(
        bands=[],
        probability=(0.0, 1.0),
        contracts=[],
        tenure=(0, 72),
        tenure_bounds=(0, 72),
        payment_methods=[],
        internet_services=[],
        reason_contains="",
    )
    assert chosen == CallListFilter()
    narrowed = presentation.filter_from_widgets(
        bands=["high"],
        probability=(0.5, 1.0),
        contracts=[],
        tenure=(6, 72),
        tenure_bounds=(0, 72),
        payment_methods=[],
        internet_services=[],
        reason_contains="tenure",
    )
    assert (narrowed.tenure_min, narrowed.tenure_max, narrowed.probability_min) == (6, None, 0.5)


def test_the_download_link_carries_the_filters_and_the_row_count() -> None:
    link = presentation.export_link_html(EVERY_FILTER, 12_345)
    assert "Download the CSV (12,345 customers)" in link
    assert "download=" in link and "&amp;" in link  # the href's ampersands escaped in HTML
    assert "customer)" in presentation.export_link_html(CallListFilter(), 1)


def test_numbers_read_as_money_percent_and_pages() -> None:
    assert presentation.money(190_287.6) == "$190,288"
    assert presentation.percent(0.3431) == "34.3%"
    assert presentation.percent(None) == presentation.figure(float("nan")) == "n/a"
    assert [presentation.page_count(rows, 50) for rows in (0, 1, 50, 51)] == [1, 1, 1, 2]


def test_the_trends_range_opens_on_the_last_thirty_days_and_tolerates_a_half_picked_range() -> None:
    first, last = date(2025, 1, 1), date(2025, 3, 1)
    assert presentation.default_span(first, last) == (date(2025, 1, 31), last)
    assert presentation.default_span(date(2025, 2, 20), last) == (date(2025, 2, 20), last)
    assert presentation.date_span((date(2025, 2, 1),), first, last) == (date(2025, 2, 1), last)
    assert presentation.date_span((date(2024, 1, 1), date(2030, 1, 1)), first, last) == (
        first,
        last,
    )
    assert presentation.date_span((), first, last) == presentation.default_span(first, last)


DRIFT = {
    "snapshot_date": date(2026, 1, 15),
    "dataset_drift": True,
    "drift_share": 0.6,
    "drift_share_threshold": 0.5,
    "drifted_columns": "monthly_charges, tenure_months",
}
QUALITY = {
    "snapshot_date": date(2026, 1, 15),
    "success": False,
    "failed": 1,
    "expectations": 20,
    "failed_expectations": "expect_column_values_to_not_be_null on monthly_charges",
}
PERFORMANCE = {
    "score_date": date(2026, 1, 13),
    "roc_auc": 0.74,
    "training_roc_auc": 0.84,
    "roc_auc_drop": 0.10,
}


def test_model_health_is_red_for_drift_failed_quality_and_a_fallen_auc() -> None:
    alerts = presentation.health_alerts(
        drift=DRIFT, quality=QUALITY, performance=PERFORMANCE, auc_drop=0.05
    )
    assert len(alerts) == 3
    assert "Data drift on 2026-01-15" in alerts[0] and "tenure_months" in alerts[0]
    assert "Data quality failed on 2026-01-15: 1 of 20" in alerts[1]
    assert "0.740, 0.100 below the 0.840 of training" in alerts[2]


def test_model_health_is_not_red_when_all_is_within_bounds_or_unknown() -> None:
    calm = presentation.health_alerts(
        drift={**DRIFT, "dataset_drift": False},
        quality={**QUALITY, "success": True},
        performance={**PERFORMANCE, "roc_auc_drop": 0.03},
        auc_drop=0.05,
    )
    unknown = presentation.health_alerts(
        drift=None, quality=None, performance={**PERFORMANCE, "roc_auc_drop": None}, auc_drop=0.05
    )
    assert calm == unknown == []


def test_the_promotion_is_one_sentence_even_with_facts_missing() -> None:
    champion = {
        "promoted_at": datetime(2026, 1, 14, 5, tzinfo=UTC),
        "promoted_by": "pytest",
        "promotion_reason": "beat version 1",
        "training_snapshots": "2026-01-01",
        "training_rows": 5000,
    }
    assert presentation.promotion_sentence(champion) == (
        "Promoted on 2026-01-14 05:00 UTC by pytest: beat version 1. "
        "Trained on 2026-01-01 (5,000 rows)."
    )
    assert presentation.promotion_sentence({}) == (
        "Promoted (date unknown) by unknown: no reason recorded. Trained on unknown snapshots."
    )


def test_reasons_are_labelled_with_their_direction_so_colour_is_not_needed() -> None:
    frame = charts.reason_frame([("Contract: Month-to-month", 0.8), ("Tenure: 40 months", -0.3)])
    assert frame["label"].tolist() == ["+0.80 raises risk", "-0.30 lowers risk"]
    assert frame["label_at"].tolist() == [0.8, 0.0]  # a label never sits on a bar
    chart = charts.reasons_chart(list(zip(frame["reason"], frame["contribution"], strict=True)))
    assert chart.to_dict()["layer"][0]["mark"]["type"] == "bar"


def test_band_segments_are_stacked_high_first_and_named_when_tall_enough() -> None:
    counts = pd.DataFrame(
        {
            "snapshot_date": [date(2026, 1, 1)] * 3 + [date(2026, 1, 2)] * 3,
            "risk_band": ["low", "high", "medium"] * 2,
            "customers": [600, 300, 100, 6, 3, 1],
        }
    )
    frame = charts.band_stack_frame(counts)
    first = frame[frame["snapshot_date"] == date(2026, 1, 1)]
    assert first["risk_band"].tolist() == ["high", "medium", "low"]
    assert first["middle"].tolist() == [150, 350, 700]
    assert first["label"].tolist() == ["high", "medium", "low"]
    assert set(frame[frame["snapshot_date"] == date(2026, 1, 2)]["label"]) == {""}
    charts.band_stack_chart(counts).to_dict()  # a valid Vega-Lite spec


def test_a_customers_history_names_the_model_where_a_new_one_took_over() -> None:
    history = pd.DataFrame(
        {
            "snapshot_date": [date(2026, 1, d) for d in (1, 2, 3)],
            "churn_probability": [0.2, 0.3, 0.4],
            "risk_band": ["low", "medium", "medium"],
            "model_version": ["1", "1", "2"],
            "top_reason_1": ["a", "b", "c"],
        }
    )
    labelled = presentation.history_with_version_changes(history)
    assert labelled["version_label"].tolist() == ["v1", "", "v2"]
    charts.score_history_chart(labelled).to_dict()


def test_health_charts_build_from_the_views_columns() -> None:
    performance = pd.DataFrame(
        {
            "score_date": [date(2026, 1, 11), date(2026, 1, 12)],
            "model_version": ["1", "1"],
            "roc_auc": [0.83, None],
            "training_roc_auc": [0.84, 0.84],
        }
    )
    long = charts.realised_auc_frame(performance)
    assert sorted(long["series"]) == ["at training", "at training", "realised"]
    bins = calibration_frame(
        {"calibration": [{"bin": 0, "mean_probability": 0.1, "churn_rate": 0.12, "customers": 9}]}
    )
    assert bins.to_dict("records") == [
        {"bin": 0, "mean_probability": 0.1, "churn_rate": 0.12, "customers": 9}
    ]
    assert calibration_frame(None).empty
    drift = pd.DataFrame(
        {
            "snapshot_date": [date(2026, 1, 11)],
            "dataset_drift": [True],
            "drift_share": [0.6],
            "drift_share_threshold": [0.5],
            "drifted_columns": ["tenure_months"],
        }
    )
    for chart in (
        charts.realised_auc_chart(performance),
        charts.calibration_chart(bins),
        charts.drift_share_chart(drift),
    ):
        chart.to_dict()


def test_the_server_runs_headless_on_the_given_address_without_usage_statistics() -> None:
    command = streamlit_command("192.0.2.10", 8600, python="python3")
    assert command[:5] == ["python3", "-m", "streamlit", "run", str(SERVER_SCRIPT)]
    options = dict(zip(command[5::2], command[6::2], strict=True))
    assert options["--server.headless"] == "true"
    assert options["--browser.gatherUsageStats"] == "false"
    assert (options["--server.address"], options["--server.port"]) == ("192.0.2.10", "8600")
