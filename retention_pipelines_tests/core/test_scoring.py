"""Batch scoring on the real Telco features in real Postgres: what is written, that it is
replaced safely (idempotent, atomic, one writer per date), and that chunking changes nothing."""

import threading
import time
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pandas as pd
import psycopg
import pytest

from retention_pipelines.core import scoring
from retention_pipelines.core import training as tr
from retention_pipelines.core.features import feature_frame
from retention_pipelines.core.pseudonyms import display_all
from retention_pipelines.core.warehouse.scores import find_carryover
from retention_pipelines_tests.churn_models import blended_xgboost
from retention_pipelines_tests.helpers import TELCO_DAY

pytestmark = pytest.mark.slow
DAY = date.fromisoformat(TELCO_DAY)
SEED = 5
BANDS = scoring.RiskBands(high=0.5, medium=0.25)
SCORED_AT = datetime(2026, 1, 16, 2, 0, tzinfo=UTC)
PSEUDONYM_KEY = b"test-scoring-pseudonym-key"


@pytest.fixture(scope="module")
def features(telco_features: pd.DataFrame) -> pd.DataFrame:
    return telco_features


@pytest.fixture(scope="module")
def model(features: pd.DataFrame) -> scoring.ModelRef:
    """A small blended, calibrated XGBoost model trained on the same data."""
    split = tr.split_training_set(features, seed=SEED)
    churn_model = blended_xgboost(split, seed=SEED, max_depth=4)
    return scoring.ModelRef(model=churn_model, name="churn-model", version="3")


def _score(url: str, model: scoring.ModelRef, chunk_rows: int = 2_000, **kwargs) -> int:
    return scoring.score_partition(
        url, DAY, model, bands=BANDS, chunk_rows=chunk_rows, scored_at=SCORED_AT, **kwargs
    ).rows


def _scores(url: str, day: date = DAY) -> pd.DataFrame:
    with psycopg.connect(url) as conn:
        cursor = conn.execute(
            "select * from ml.churn_risk_scores where snapshot_date = %s order by customer_id",
            (day,),
        )
        return pd.DataFrame(cursor.fetchall(), columns=[c.name for c in cursor.description])


@pytest.fixture(scope="module")
def scored(telco_warehouse: str, model: scoring.ModelRef) -> pd.DataFrame:
    assert _score(telco_warehouse, model) == 5_634
    return _scores(telco_warehouse)


def test_every_customer_gets_a_probability_a_band_and_three_named_reasons(
    scored: pd.DataFrame, telco_warehouse: str
) -> None:
    assert len(scored) == 5_634
    assert scored["customer_id"].is_unique
    assert scored["churn_probability"].between(0, 1).all()
    assert set(scored["risk_band"]) == {"high", "medium", "low"}
    high = scored["risk_band"] == "high"
    assert (scored.loc[high, "churn_probability"] >= 0.5).all()
    for rank in (1, 2, 3):
        assert scored[f"top_reason_{rank}"].str.contains(": ").all()
    assert (scored["top_reason_1_contribution"] >= scored["top_reason_2_contribution"]).all()
    assert (scored["top_reason_2_contribution"] >= scored["top_reason_3_contribution"]).all()
    assert set(scored["model_version"]) == {"3"}
    checks = scoring.check_scores(telco_warehouse, DAY, "3")
    assert all(check.passed for check in checks), checks
    assert not scoring.check_scores(telco_warehouse, DAY, "4")[-1].passed


def test_the_highest_risk_customers_are_mostly_month_to_month(
    scored: pd.DataFrame, features: pd.DataFrame
) -> None:
    top = scored.nlargest(500, "churn_probability").merge(features, on="customer_id")
    assert (top["contract"] == "Month-to-month").mean() > 0.9
    reasons = top[["top_reason_1", "top_reason_2", "top_reason_3"]]
    named = reasons.apply(lambda column: column.str.startswith("Contract: Month-to-month"))
    assert named.any(axis=1).mean() > 0.5


def test_high_risk_reasons_are_exact_tree_shap(
    scored: pd.DataFrame, features: pd.DataFrame, model: scoring.ModelRef
) -> None:
    high = scored[scored["risk_band"] == "high"].head(300)
    rows = features.set_index("customer_id").loc[high["customer_id"]].reset_index()
    exact = model.model.contributions(feature_frame(rows)).to_numpy()
    best = exact.max(axis=1)
    assert np.allclose(high["top_reason_1_contribution"].to_numpy(), best, atol=1e-5)
    texts = scoring.reason_texts(feature_frame(rows), exact.argmax(axis=1), model.model.columns)
    assert list(texts) == list(high["top_reason_1"])


def test_close_calls_among_high_risk_reasons_are_settled_by_exact_tree_shap(
    features: pd.DataFrame, model: scoring.ModelRef
) -> None:
    frame = feature_frame(features)
    exact = model.model.score(frame)
    gap = 0.05
    scored = model.model.score(frame, exact_from=BANDS.high, exact_gap=gap)
    high = scored.probabilities >= BANDS.high
    assert np.array_equal(scored.probabilities, exact.probabilities)
    assert 0 < scored.exact.sum() < high.sum()
    assert not scored.exact[~high].any()
    assert np.allclose(scored.contributions[scored.exact], exact.contributions[scored.exact])
    top_two = np.sort(scored.contributions[high & ~scored.exact], axis=1)[:, -2:]
    assert (top_two[:, 1] - top_two[:, 0] >= gap).all()
    same = exact.contributions.argmax(axis=1) == scored.contributions.argmax(axis=1)
    assert same[high].mean() >= 0.95
    nothing_exact = model.model.score(frame, exact_from=BANDS.high, exact_gap=0.0)
    assert not nothing_exact.exact.any()
    every_high = model.model.score(frame, exact_from=BANDS.high)
    assert np.array_equal(every_high.exact, high)


def test_chunked_scoring_equals_scoring_all_rows_at_once(
    scored: pd.DataFrame, telco_warehouse: str, model: scoring.ModelRef
) -> None:
    _score(telco_warehouse, model, chunk_rows=10_000)
    pd.testing.assert_frame_equal(_scores(telco_warehouse), scored)
    _score(telco_warehouse, model, chunk_rows=777)
    pd.testing.assert_frame_equal(_scores(telco_warehouse), scored)


def test_a_failure_before_commit_leaves_the_previous_scores(
    scored: pd.DataFrame, telco_warehouse: str, model: scoring.ModelRef
) -> None:
    def crash(conn: psycopg.Connection) -> None:
        written = conn.execute("select count(*) from ml.churn_risk_scores").fetchone()
        assert written == (5_634,)  # the new rows are all there, not yet committed
        raise RuntimeError("injected crash between COPY and commit")

    other = scoring.ModelRef(model=model.model, name="churn-model", version="4")
    with pytest.raises(RuntimeError, match="injected crash"):
        _score(telco_warehouse, other, before_commit=crash)
    pd.testing.assert_frame_equal(_scores(telco_warehouse), scored)


def test_concurrent_runs_of_one_date_take_turns_and_leave_no_duplicates(
    scored: pd.DataFrame, telco_warehouse: str, model: scoring.ModelRef
) -> None:
    committed: list[str] = []
    errors: list[BaseException] = []

    def run(name: str, hold_s: float) -> None:
        try:
            _score(telco_warehouse, model, before_commit=lambda conn: time.sleep(hold_s))
            committed.append(name)
        except BaseException as error:  # reported by the assertion below
            errors.append(error)

    first = threading.Thread(target=run, args=("first", 3.0))
    second = threading.Thread(target=run, args=("second", 0.0))
    first.start()
    time.sleep(1.0)  # the first holds the date's lock while it sleeps before commit
    second.start()
    first.join()
    second.join()
    assert not errors
    assert committed == ["first", "second"]
    pd.testing.assert_frame_equal(_scores(telco_warehouse), scored)


def test_the_summary_counts_what_was_written(scored: pd.DataFrame, telco_warehouse: str) -> None:
    summary = scoring.summarize_scores(telco_warehouse, DAY, key=PSEUDONYM_KEY)
    assert summary.rows == 5_634
    assert summary.band_counts == scored["risk_band"].value_counts().to_dict()
    assert summary.histogram["customers"].sum() == 5_634
    assert summary.mean_probability == pytest.approx(scored["churn_probability"].mean())
    highest = scored.sort_values(["churn_probability", "customer_id"], ascending=[False, True])
    assert list(summary.highest_risk.columns) == [
        "pseudonym", "churn_probability", "risk_band", "top_reason_1", "top_reason_2",
        "top_reason_3",
    ]  # fmt: skip
    assert list(summary.highest_risk["pseudonym"]) == display_all(
        highest["customer_id"].head(10), PSEUDONYM_KEY
    )


def test_risk_bands_are_ordered_thresholds() -> None:
    bands = scoring.RiskBands(high=0.6, medium=0.2)
    assert list(bands.assign(np.array([0.0, 0.19, 0.2, 0.59, 0.6, 1.0]))) == [
        "low", "low", "medium", "medium", "high", "high",
    ]  # fmt: skip
    with pytest.raises(ValueError, match="risk bands"):
        scoring.RiskBands(high=0.2, medium=0.3)


def test_unchanged_customers_keep_their_earlier_score(
    scored: pd.DataFrame, telco_warehouse: str, model: scoring.ModelRef
) -> None:
    # The next day: the same customers; those whose id ends in A or B got a new price.
    following = DAY + timedelta(days=1)
    with psycopg.connect(telco_warehouse) as conn:
        conn.execute(
            "create temp table next_day as select * from features.customer_features"
            " where snapshot_date = %s",
            (DAY,),
        )
        conn.execute("update next_day set snapshot_date = %s", (following,))
        changed = conn.execute(
            "update next_day set monthly_charges = monthly_charges + 20"
            " where right(customer_id, 1) in ('A', 'B')"
        ).rowcount
        conn.execute("insert into features.customer_features select * from next_day")
    carried = scoring.score_partition(
        telco_warehouse, following, model, bands=BANDS, chunk_rows=1_000, scored_at=SCORED_AT
    )
    assert carried.rows == 5_634
    assert 0 < changed < 1_000
    assert carried.reused == 5_634 - changed
    with_carryover = _scores(telco_warehouse, following)
    fresh = scoring.score_partition(
        telco_warehouse, following, model, bands=BANDS, chunk_rows=1_000, scored_at=SCORED_AT,
        reuse_unchanged=False,
    )  # fmt: skip
    assert fresh.reused == 0
    pd.testing.assert_frame_equal(with_carryover, _scores(telco_warehouse, following))
    assert all(check.passed for check in scoring.check_scores(telco_warehouse, following, "3"))
    # Another model version carries nothing over.
    other = scoring.ModelRef(model=model.model, name="churn-model", version="9")
    assert find_carryover(telco_warehouse, following, other.name, other.version) is None
