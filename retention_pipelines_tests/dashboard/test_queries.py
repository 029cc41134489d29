"""The dashboard's queries on a scored warehouse, through the app's own read-only connection
as the reader login: what each page asks Postgres and what it gets back, checked against
the same rows read directly by the warehouse's owner."""

from collections.abc import Iterator
from datetime import date

import psycopg
import pytest

from retention_pipelines.dashboard import queries
from retention_pipelines.dashboard.connection import reader_connection
from retention_pipelines.dashboard.queries import CallListFilter
from retention_pipelines.settings import get_settings
from retention_pipelines_tests.dashboard.warehouse import (
    CHAMPION_VERSION,
    EARLY_DAY,
    HISTORY_DAYS,
    LATEST_DAY,
    NO_DRIFT_REPORT_DAY,
    ScoredWarehouse,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def reader(on_scored: ScoredWarehouse) -> Iterator[psycopg.Connection]:
    with reader_connection(get_settings()) as conn:
        yield conn


def _owner_count(url: str, condition: str, params: tuple = ()) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "select count(*) from analytics.customer_risk_latest"
            f" where snapshot_date = %s and {condition}",
            (LATEST_DAY, *params),
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_the_call_list_is_the_latest_dates_customers_and_offers_its_choices(
    reader: psycopg.Connection, scored_warehouse: ScoredWarehouse
) -> None:
    latest = queries.latest_scores(reader)
    assert latest is not None
    assert (latest.snapshot_date, latest.customers) == (
        LATEST_DAY,
        scored_warehouse.latest_customers,
    )
    assert latest.contracts == ("Month-to-month", "One year", "Two year")
    assert "Electronic check" in latest.payment_methods
    assert latest.internet_services == ("DSL", "Fiber optic", "No")
    assert (latest.tenure_min, latest.tenure_max) == (0, 72)


def test_pages_follow_the_risk_rank_without_gaps_or_overlaps(reader: psycopg.Connection) -> None:
    everyone = CallListFilter()
    first = queries.call_list_page(reader, everyone, 1, 50)
    second = queries.call_list_page(reader, everyone, 2, 50)
    assert first["risk_rank"].tolist() == list(range(1, 51))
    assert second["risk_rank"].tolist() == list(range(51, 101))
    assert list(first.columns) == list(queries.PAGE_COLUMNS)
    assert (first["risk_band"].iloc[0], first["churn_probability"].is_monotonic_decreasing) == (
        "high",
        True,
    )


def test_customers_whose_latest_score_is_older_are_not_on_the_call_list(
    reader: psycopg.Connection, scored_warehouse: ScoredWarehouse
) -> None:
    totals = queries.call_list_totals(reader, CallListFilter())
    assert totals.customers == scored_warehouse.latest_customers
    left_out = scored_warehouse.left_out[0]
    risk = queries.customer_risk(reader, left_out)
    assert risk is not None and risk.snapshot_date == EARLY_DAY  # scored, but not lately
    pages = queries.call_list_page(reader, CallListFilter(), 1, 10_000)
    assert left_out not in set(pages["customer_id"])


def test_filters_narrow_the_rows_and_the_totals_as_sql_would(
    reader: psycopg.Connection, scored_warehouse: ScoredWarehouse
) -> None:
    chosen = CallListFilter(
        bands=("high", "medium"),
        probability_min=0.4,
        contracts=("Month-to-month",),
        tenure_max=12,
        payment_methods=("Electronic check",),
        internet_services=("Fiber optic",),
    )
    expected = _owner_count(
        scored_warehouse.url,
        "risk_band in ('high', 'medium') and churn_probability >= 0.4"
        " and contract = 'Month-to-month' and tenure_months <= 12"
        " and payment_method = 'Electronic check' and internet_service = 'Fiber optic'",
    )
    totals = queries.call_list_totals(reader, chosen)
    rows = queries.call_list_page(reader, chosen, 1, 10_000)
    assert 0 < totals.customers == expected == len(rows)
    assert totals.customers < queries.call_list_totals(reader, CallListFilter()).customers
    assert set(rows["contract"]) == {"Month-to-month"} and rows["tenure_months"].max() <= 12
    assert totals.revenue_at_risk == pytest.approx(
        (rows["churn_probability"] * rows["monthly_charges"]).sum()
    )
    assert totals.high_band == (rows["risk_band"] == "high").sum()


def test_reason_contains_matches_any_of_the_three_reasons_case_blind(
    reader: psycopg.Connection, scored_warehouse: ScoredWarehouse
) -> None:
    found = queries.call_list_totals(reader, CallListFilter(reason_contains="fiber OPTIC"))
    expected = _owner_count(
        scored_warehouse.url,
        "(top_reason_1 ilike %s or top_reason_2 ilike %s or top_reason_3 ilike %s)",
        ("%fiber optic%",) * 3,
    )
    assert 0 < found.customers == expected


def test_percent_and_underscore_in_reason_contains_match_only_themselves(
    reader: psycopg.Connection,
) -> None:
    # Unescaped, "%" and "_" would match every reason; no reason holds either character.
    for text in ("%", "_", "Tenure_", "\\"):
        assert queries.call_list_totals(reader, CallListFilter(reason_contains=text)).customers == 0


def test_a_page_past_the_end_is_empty(reader: psycopg.Connection) -> None:
    assert queries.call_list_page(reader, CallListFilter(bands=("high",)), 10_000, 50).empty


def test_the_csv_stream_holds_every_filtered_row_in_rank_order(
    reader: psycopg.Connection,
) -> None:
    chosen = CallListFilter(bands=("high",), reason_contains="Tenure")
    text = b"".join(queries.stream_call_list_csv(reader, chosen, chunk_bytes=4096)).decode()
    lines = text.splitlines()
    assert lines[0] == ",".join(queries.EXPORT_COLUMNS)
    assert len(lines) - 1 == queries.call_list_totals(reader, chosen).customers
    ranks = [int(line.split(",", 1)[0]) for line in lines[1:]]
    assert ranks == sorted(ranks)


def test_a_customer_has_their_reasons_profile_and_history_with_model_versions(
    reader: psycopg.Connection, scored_warehouse: ScoredWarehouse
) -> None:
    customer = scored_warehouse.history_customer
    risk = queries.customer_risk(reader, customer)
    assert risk is not None
    assert (risk.snapshot_date, risk.model_version) == (LATEST_DAY, CHAMPION_VERSION)
    assert len(risk.reasons) == 3
    assert [abs(value) for _, value in risk.reasons] == sorted(
        (abs(value) for _, value in risk.reasons), reverse=True
    )
    assert set(risk.profile) == set(queries.PROFILE_COLUMNS)
    history = queries.customer_history(reader, customer)
    assert history["snapshot_date"].tolist() == [*HISTORY_DAYS, EARLY_DAY, LATEST_DAY]
    assert history["model_version"].tolist() == ["1", "1", "1", "1", CHAMPION_VERSION]
    assert queries.customer_risk(reader, "NO-SUCH-ID") is None
    assert queries.customer_history(reader, "NO-SUCH-ID").empty


def test_trends_count_every_scored_date_and_rank_the_first_reasons(
    reader: psycopg.Connection, scored_warehouse: ScoredWarehouse
) -> None:
    assert queries.scored_date_range(reader) == (HISTORY_DAYS[0], LATEST_DAY)
    counts = queries.band_counts_by_date(reader, HISTORY_DAYS[0], LATEST_DAY)
    per_day = counts.groupby("snapshot_date")["customers"].sum().to_dict()
    assert per_day[LATEST_DAY] == scored_warehouse.latest_customers
    assert per_day[HISTORY_DAYS[0]] == 300
    means = queries.mean_probability_by_date(reader, EARLY_DAY, LATEST_DAY)
    assert means["snapshot_date"].tolist() == [EARLY_DAY, LATEST_DAY]
    assert all(0 < value < 1 for value in means["mean_probability"])
    reasons = queries.top_first_reasons(reader, LATEST_DAY, LATEST_DAY, limit=3)
    assert len(reasons) == 3
    assert reasons["customers"].is_monotonic_decreasing
    assert reasons["share_of_customers"].sum() <= 1


def test_model_health_reads_the_champion_performance_drift_and_quality(
    reader: psycopg.Connection,
) -> None:
    champion = queries.champion(reader)
    assert champion is not None and champion["model_version"] == CHAMPION_VERSION
    performance = queries.realised_performance(reader, 60)
    assert performance["score_date"].tolist() == list(HISTORY_DAYS)
    latest = queries.latest_performance(reader)
    assert latest is not None and latest["score_date"] == HISTORY_DAYS[-1]
    assert len(queries.calibration_frame(latest)) == 10
    drift = queries.drift_by_date(reader, 60)
    assert drift["snapshot_date"].iloc[0] == LATEST_DAY and bool(drift["dataset_drift"].iloc[0])
    assert NO_DRIFT_REPORT_DAY not in set(drift["snapshot_date"])
    assert queries.drift_on(reader, NO_DRIFT_REPORT_DAY) is None
    quality = queries.quality_by_date(reader, 60)
    assert quality["success"].tolist() == [False, True]


def test_before_the_first_build_every_query_answers_nothing_yet(on_empty: str) -> None:
    day = date(2026, 1, 1)
    with reader_connection(get_settings()) as conn:
        assert queries.latest_scores(conn) is None
        assert queries.call_list_totals(conn, CallListFilter()).customers == 0
        assert queries.call_list_page(conn, CallListFilter(), 1, 50).empty
        assert queries.customer_risk(conn, "X") is None
        assert queries.customer_history(conn, "X").empty
        assert queries.scored_date_range(conn) is None
        assert queries.band_counts_by_date(conn, day, day).empty
        assert queries.top_first_reasons(conn, day, day).empty
        assert queries.champion(conn) is None
        assert queries.latest_performance(conn) is None
        assert queries.realised_performance(conn, 60).empty
        assert queries.drift_by_date(conn, 60).empty
        assert queries.quality_by_date(conn, 60).empty
