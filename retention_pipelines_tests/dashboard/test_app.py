"""Each page of the dashboard run by Streamlit's AppTest against the scored warehouse (and an
empty one): what a person sees after each click, read off the page's elements."""

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from pyarrow import ipc
from streamlit.testing.v1 import AppTest

from retention_pipelines.dashboard import data
from retention_pipelines.dashboard.presentation import NO_SCORES
from retention_pipelines_tests.dashboard.warehouse import (
    CHAMPION_VERSION,
    HISTORY_DAYS,
    LATEST_DAY,
    NO_DRIFT_REPORT_DAY,
    ScoredWarehouse,
)

pytestmark = pytest.mark.slow

APP = Path(data.__file__).with_name("app.py")
# A script run imports the app's modules the first time, and a slow CI host shares its cores.
TIMEOUT_S = 60


@pytest.fixture
def app(on_scored: ScoredWarehouse) -> Iterator[AppTest]:
    """The dashboard on the scored warehouse, its first page run."""
    yield AppTest.from_file(str(APP), default_timeout=TIMEOUT_S).run()


def _on(app: AppTest, page: str) -> AppTest:
    app.switch_page(f"pages/{page}.py").run()
    assert not app.exception, app.exception
    return app


def _metrics(app: AppTest) -> dict[str, str]:
    return {metric.label: metric.value for metric in app.metric}


def _charts(app: AppTest) -> list[str]:
    """The Vega-Lite specs of the page's charts, as JSON text."""
    return [element.proto.spec for element in app.get("vega_lite_chart")]


def _chart_rows(app: AppTest, index: int) -> pd.DataFrame:
    """The rows a chart of the page draws (Streamlit sends them beside the spec, as Arrow)."""
    (dataset,) = app.get("vega_lite_chart")[index].proto.datasets
    return ipc.open_stream(dataset.data.data).read_pandas()


def test_the_call_list_shows_the_first_page_in_risk_order_with_totals(
    app: AppTest, scored_warehouse: ScoredWarehouse
) -> None:
    assert not app.exception, app.exception
    assert app.title[0].value == "Call list"
    rows = app.dataframe[0].value
    assert rows["risk_rank"].tolist() == list(range(1, data.page_size() + 1))
    assert {"churn_probability", "risk_band", "top_reason_1", "top_reason_2", "top_reason_3",
            "monthly_charges"} <= set(rows.columns)  # fmt: skip
    metrics = _metrics(app)
    assert metrics["Customers selected"] == f"{scored_warehouse.latest_customers:,}"
    assert metrics["Expected monthly revenue at risk"].startswith("$")
    assert f"({scored_warehouse.latest_customers:,} customers)" in app.markdown[0].value


def test_filters_narrow_the_rows_and_the_totals_and_the_download_link(app: AppTest) -> None:
    everyone = _metrics(app)
    app.multiselect(key="bands").set_value(["high"]).run()
    app.multiselect(key="contracts").set_value(["Month-to-month"]).run()
    app.text_input(key="reason_contains").set_value("fiber").run()
    narrowed = _metrics(app)
    rows = app.dataframe[0].value
    selected = int(narrowed["Customers selected"].replace(",", ""))
    assert 0 < selected < int(everyone["Customers selected"].replace(",", ""))
    assert narrowed["Of them in the high band"] == narrowed["Customers selected"]
    assert _money(narrowed) < _money(everyone)
    assert set(rows["risk_band"]) == {"high"} and set(rows["contract"]) == {"Month-to-month"}
    reasons = rows[["top_reason_1", "top_reason_2", "top_reason_3"]].agg(" ".join, axis=1)
    assert reasons.str.contains("fiber", case=False).all()
    link = app.markdown[0].value
    assert "band=high" in link and "reason=fiber" in link and f"({selected:,} customers)" in link


def _money(metrics: dict[str, str]) -> int:
    return int(metrics["Expected monthly revenue at risk"].strip("$").replace(",", ""))


def test_paging_moves_through_the_list_and_a_new_filter_starts_again_at_page_one(
    app: AppTest,
) -> None:
    size = data.page_size()
    app.number_input(key="page").set_value(3).run()
    assert app.dataframe[0].value["risk_rank"].tolist() == list(range(2 * size + 1, 3 * size + 1))
    app.multiselect(key="bands").set_value(["low"]).run()
    assert app.number_input(key="page").value == 1
    assert set(app.dataframe[0].value["risk_band"]) == {"low"}


def test_a_filter_nobody_matches_says_so(app: AppTest) -> None:
    app.text_input(key="reason_contains").set_value("no reason says this").run()
    assert _metrics(app)["Customers selected"] == "0"
    assert [info.value for info in app.info] == ["No customer matches these filters."]


def test_a_customer_shows_their_score_reasons_chart_and_history(
    app: AppTest, scored_warehouse: ScoredWarehouse
) -> None:
    _on(app, "customer")
    app.text_input(key="customer_id").set_value(scored_warehouse.history_customer).run()
    assert not app.exception, app.exception
    metrics = _metrics(app)
    assert metrics["Scored on"] == str(LATEST_DAY)
    assert metrics["Churn probability"].endswith("%")
    assert "Contribution to the risk" in _charts(app)[0]
    reasons = _chart_rows(app, 0)
    assert len(reasons) == 3 and set(reasons["direction"]) <= {"raises risk", "lowers risk"}
    history = app.dataframe[1].value
    assert history["snapshot_date"].tolist()[0] == HISTORY_DAYS[0]
    assert history["model_version"].tolist()[-1] == CHAMPION_VERSION
    assert set(history["model_version"]) == {"1", CHAMPION_VERSION}


def test_an_unknown_customer_id_is_said_to_be_unknown(app: AppTest) -> None:
    _on(app, "customer")
    app.text_input(key="customer_id").set_value("NO-SUCH-ID").run()
    assert [warning.value for warning in app.warning] == [
        "No scored customer has the id 'NO-SUCH-ID'."
    ]


def test_trends_chart_every_date_in_the_chosen_range(app: AppTest) -> None:
    _on(app, "trends")
    assert [header.value for header in app.subheader] == [
        "Customers per band",
        "Mean churn probability",
        "Most frequent first reasons",
    ]
    assert len(_charts(app)) == 3
    assert _chart_rows(app, 0)["snapshot_date"].nunique() == len(HISTORY_DAYS) + 2
    app.date_input(key="dates").set_value((LATEST_DAY, LATEST_DAY)).run()
    assert not app.exception, app.exception
    assert set(_chart_rows(app, 0)["snapshot_date"]) == {LATEST_DAY}
    assert set(_chart_rows(app, 1)["snapshot_date"]) == {LATEST_DAY}


def test_model_health_shows_the_champion_and_a_red_banner_for_what_is_red(app: AppTest) -> None:
    _on(app, "model_health")
    metrics = _metrics(app)
    assert metrics["Champion version"] == CHAMPION_VERSION
    assert metrics["Test ROC AUC"] == "0.860"
    banner = app.error[0].value
    assert f"Data drift on {LATEST_DAY}" in banner
    assert f"Data quality failed on {LATEST_DAY}" in banner
    assert "Realised ROC AUC" in banner
    assert len(_charts(app)) == 3  # realised AUC, calibration, drift share


def test_a_date_without_a_drift_report_says_so(app: AppTest) -> None:
    _on(app, "model_health")
    app.date_input(key="drift_day").set_value(NO_DRIFT_REPORT_DAY).run()
    assert f"No drift report for {NO_DRIFT_REPORT_DAY}" in " ".join(i.value for i in app.info)
    app.date_input(key="drift_day").set_value(LATEST_DAY).run()
    assert "dataset drift" in " ".join(str(m.value) for m in app.markdown)


@pytest.mark.parametrize("page", ["call_list", "customer", "trends"])
def test_before_any_score_each_page_says_what_to_run(on_empty: str, page: str) -> None:
    app = AppTest.from_file(str(APP), default_timeout=TIMEOUT_S).run()
    if page != "call_list":
        _on(app, page)
    assert not app.exception, app.exception
    assert [info.value for info in app.info] == [NO_SCORES]


def test_before_any_model_model_health_says_what_is_missing(on_empty: str) -> None:
    app = _on(AppTest.from_file(str(APP), default_timeout=TIMEOUT_S).run(), "model_health")
    assert not app.error
    infos = " ".join(info.value for info in app.info)
    assert "No champion yet: run `retention train`." in infos
    assert "No drift report yet" in infos and "No data quality check yet" in infos
