"""Model search on the real Telco features: splits, encoding, tuning on Postgres-backed Optuna
storage (pruning, resuming), calibration and metrics."""

import uuid

import numpy as np
import optuna
import pandas as pd
import pytest
import xgboost as xgb

from retention_pipelines.churn_model.encoding import UNKNOWN, FeatureEncoder
from retention_pipelines.churn_model.parts import tree_contributions, tree_data
from retention_pipelines.core import database
from retention_pipelines.core import training as tr
from retention_pipelines.core.explain import top_reasons
from retention_pipelines.core.features import FEATURE_COLUMNS, feature_frame, fit_encoder
from retention_pipelines_tests.churn_models import blended_xgboost

pytestmark = pytest.mark.slow
SEED = 7


def contributions(booster, encoder: FeatureEncoder, rows: pd.DataFrame) -> pd.DataFrame:
    """Exact TreeSHAP of a bare booster, one column per input column."""
    data = tree_data(booster, encoder.tree_input(rows), encoder.categorical)
    return pd.DataFrame(
        tree_contributions(booster, data), columns=list(encoder.columns), index=rows.index
    )


def linear_contributions(baseline: tr.Baseline, rows: pd.DataFrame) -> pd.DataFrame:
    encoder = baseline.encoder
    explained = baseline.to_part().explain(
        encoder.linear_matrix(encoder.tree_input(rows)), encoder.design_grouping()
    )
    return pd.DataFrame(explained.contributions, columns=list(encoder.columns), index=rows.index)


@pytest.fixture(scope="module")
def split(telco_features: pd.DataFrame) -> tr.TrainingSplit:
    return tr.split_training_set(telco_features, seed=SEED)


def test_the_split_is_stratified_and_repeatable(
    telco_features: pd.DataFrame, split: tr.TrainingSplit
) -> None:
    summary = split.summary()
    assert sum(part["rows"] for part in summary.values()) == 5_634
    rates = [part["churn_rate"] for part in summary.values()]
    assert max(rates) - min(rates) < 0.01
    again = tr.split_training_set(telco_features, seed=SEED)
    assert list(again.test["customer_id"]) == list(split.test["customer_id"])


def test_customers_keep_their_split_when_the_snapshot_changes(
    telco_features: pd.DataFrame, split: tr.TrainingSplit
) -> None:
    # Next month: a fifth of the customers left and 1,000 new ones arrived.
    later = pd.concat(
        [
            telco_features.sample(frac=0.8, random_state=1),
            telco_features.sample(n=1_000, random_state=2).assign(
                customer_id=lambda frame: "NEW-" + frame["customer_id"]
            ),
        ]
    )
    before, after = _assignment(split), _assignment(tr.split_training_set(later, seed=SEED))
    moved = [
        customer for customer in after if customer in before and before[customer] != after[customer]
    ]
    assert len(moved) / len(before) < 0.02
    reshuffled = tr.split_training_set(telco_features, seed=SEED + 1)
    assert set(reshuffled.test["customer_id"]) != set(split.test["customer_id"])


def _assignment(split: tr.TrainingSplit) -> dict[str, str]:
    parts = {"train": split.train, "validation": split.validation, "test": split.test}
    return {customer: name for name, part in parts.items() for customer in part["customer_id"]}


def test_too_few_labels_or_one_class_fail_clearly(telco_features: pd.DataFrame) -> None:
    with pytest.raises(tr.TrainingDataError, match="at least 200 are needed"):
        tr.split_training_set(telco_features.head(50), seed=SEED)
    one_class = telco_features[telco_features["churned"] == False]  # noqa: E712
    with pytest.raises(tr.TrainingDataError, match="one class only"):
        tr.split_training_set(one_class, seed=SEED)
    unlabelled = telco_features.assign(churned=None)
    with pytest.raises(tr.TrainingDataError, match="0 labelled rows"):
        tr.split_training_set(unlabelled, seed=SEED)


def test_unseen_categories_and_missing_values_map_to_unknown(split: tr.TrainingSplit) -> None:
    encoder = fit_encoder(split.train)
    odd = split.test.head(3).copy()
    odd.loc[odd.index[0], "contract"] = "Three year"
    odd.loc[odd.index[1], "payment_method"] = None
    odd.loc[odd.index[2], "monthly_charges"] = None
    encoded = encoder.tree_input(odd)
    assert encoded["contract"].iloc[0] == UNKNOWN
    assert encoded["payment_method"].iloc[1] == UNKNOWN
    assert np.isnan(encoded["monthly_charges"].iloc[2])
    booster = tr.fit_xgboost({"max_depth": 2, "eta": 0.3}, encoder, split, rounds=20)
    predictions = tr.predict_xgboost(booster, encoder, odd)
    assert np.all((predictions >= 0) & (predictions <= 1))
    assert encoder.linear_frame(odd).shape[0] == 3


def test_a_stored_study_prunes_and_resumes_where_it_stopped(
    module_database_url: str, split: tr.TrainingSplit
) -> None:
    storage = optuna.storages.RDBStorage(database.sqlalchemy_url(module_database_url))
    encoder = fit_encoder(split.train)
    name = f"test-xgboost-{uuid.uuid4().hex[:6]}"
    first = tr.tune(
        "xgboost", study_name=name, storage=storage, encoder=encoder, split=split,
        budget=tr.TuningBudget(trials=10, timeout_s=120), seed=SEED,
    )  # fmt: skip
    assert first.trials == 10
    assert first.pruned >= 1
    resumed = tr.tune(
        "xgboost", study_name=name, storage=storage, encoder=encoder, split=split,
        budget=tr.TuningBudget(trials=12, timeout_s=120), seed=SEED,
    )  # fmt: skip
    assert resumed.trials == 12
    stored = optuna.load_study(study_name=name, storage=storage)
    assert [trial.number for trial in stored.trials] == list(range(12))
    assert resumed.best_value >= first.best_value


def test_catboost_trials_report_the_running_auc_after_each_fold(
    module_database_url: str, split: tr.TrainingSplit
) -> None:
    storage = optuna.storages.RDBStorage(database.sqlalchemy_url(module_database_url))
    name = f"test-catboost-{uuid.uuid4().hex[:6]}"
    candidate = tr.tune(
        "catboost", study_name=name, storage=storage, encoder=fit_encoder(split.train),
        split=split, budget=tr.TuningBudget(trials=2, timeout_s=60), seed=SEED,
    )  # fmt: skip
    completed = [
        trial
        for trial in optuna.load_study(study_name=name, storage=storage).trials
        if trial.state == optuna.trial.TrialState.COMPLETE
    ]
    assert completed and all(set(t.intermediate_values) == {0, 1, 2} for t in completed)
    assert 0.75 < candidate.best_value < 1.0


def test_calibration_fixes_scores_that_are_not_probabilities() -> None:
    rng = np.random.default_rng(SEED)
    truth = rng.uniform(0.05, 0.6, size=4_000)
    labels = (rng.uniform(size=truth.size) < truth).astype(int)
    overconfident = truth**0.3  # the right ranking, the wrong scale
    calibrator = tr.choose_calibrator(overconfident, labels, seed=SEED)
    before = tr.evaluate(labels, overconfident)["brier"]
    after = tr.evaluate(labels, calibrator(overconfident))["brier"]
    assert after < before - 0.05
    assert calibrator.method in {"isotonic", "sigmoid"}


def test_metrics_of_a_perfect_ranking() -> None:
    labels = np.array([0] * 90 + [1] * 10)
    scores = np.linspace(0.01, 0.99, 100)
    metrics = tr.evaluate(labels, scores)
    assert metrics["roc_auc"] == 1.0
    assert metrics["top_decile_lift"] == pytest.approx(10.0)
    assert metrics["recall_top_10pct"] == 1.0


def test_tree_shap_contributions_explain_the_margin_and_name_reasons_for_people(
    split: tr.TrainingSplit,
) -> None:
    encoder = fit_encoder(split.train)
    booster = tr.fit_xgboost({"max_depth": 4, "eta": 0.1, "seed": SEED}, encoder, split)
    rows = split.test.head(200)
    explained = contributions(booster, encoder, rows)
    margins = booster.predict(
        xgb.DMatrix(encoder.tree_input(rows), enable_categorical=True),
        output_margin=True,
        iteration_range=(0, booster.best_iteration + 1),
    )
    # The bias is the same for every row: differences of sums are differences of margins.
    sums = explained.sum(axis=1).to_numpy()
    assert np.allclose(sums - sums[0], margins - margins[0], atol=1e-4)
    by_contract = explained["contract"].groupby(rows["contract"]).mean()
    assert by_contract["Month-to-month"] > 0 > by_contract["Two year"]
    reasons = top_reasons(explained, rows)
    assert all(len(row) == 3 for row in reasons)
    assert all(first.contribution >= second.contribution for first, second, _ in reasons)
    texts = {reason.text for row in reasons for reason in row}
    assert "Contract: Month-to-month" in texts
    assert any(text.startswith("Tenure: ") and text.endswith(" months") for text in texts)


def test_catboost_contributions_have_one_column_per_feature(split: tr.TrainingSplit) -> None:
    encoder = fit_encoder(split.train)
    model = tr.fit_catboost(
        {"iterations": 50, "depth": 3, "random_seed": SEED}, encoder, split.train
    )
    explained = contributions(model, encoder, split.test.head(50))
    assert list(explained.columns) == list(FEATURE_COLUMNS)
    assert explained.abs().to_numpy().sum() > 0


def test_the_blend_weight_favours_the_better_part() -> None:
    rng = np.random.default_rng(SEED)
    labels = rng.integers(0, 2, size=3_000)
    informative = (labels * 2 - 1) * 1.5 + rng.normal(size=labels.size)
    noise = rng.normal(size=labels.size)
    assert tr.choose_tree_weight(informative, noise, labels) == 1.0
    # The trees keep at least half of the weight even when the linear part is better.
    assert tr.choose_tree_weight(noise, informative, labels) == 0.5


def test_the_blended_model_explains_its_margin_exactly(split: tr.TrainingSplit) -> None:
    encoder = fit_encoder(split.train)
    baseline = tr.fit_baseline(encoder, split, seed=SEED)
    rows = split.test.head(300)
    linear = linear_contributions(baseline, rows)
    assert list(linear.columns) == list(FEATURE_COLUMNS)
    # One-hot levels of a column add up to one contribution for that column.
    margins = baseline.margin(rows)
    sums = linear.sum(axis=1).to_numpy()
    assert np.allclose(sums - sums[0], margins - margins[0], atol=1e-8)
    model = blended_xgboost(split, seed=SEED, max_depth=3)
    blended = model.contributions(rows).sum(axis=1).to_numpy()
    expected = model.margin(rows)
    assert np.allclose(blended - blended[0], expected - expected[0], atol=1e-4)
    probabilities = model.predict_proba(feature_frame(rows))
    assert np.all((probabilities >= 0) & (probabilities <= 1))
