"""Scoring without a DataFrame per prediction: rows encoded once with numpy, as a DataFrame or
as plain columns (what the API passes for one customer), give the very probabilities and
reasons of the pandas encoding the boosters were trained on, for XGBoost and CatBoost, with
unseen categories and missing values too."""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest

from retention_pipelines.churn_model.encoding import UNKNOWN, FeatureEncoder
from retention_pipelines.churn_model.model import ChurnModel
from retention_pipelines.churn_model.parts import tree_contributions, tree_data, tree_margin
from retention_pipelines.core import training as tr
from retention_pipelines.core.features import (
    BOOLEAN_FEATURES,
    CATEGORICAL_FEATURES,
    feature_frame,
    fit_encoder,
)
from retention_pipelines_tests.churn_models import FORMAT_0, blended_xgboost, feature_rows

SEED = 11
KINDS = ("xgboost", "catboost")


# --- the pandas encoding the boosters were trained on, kept here as the reference -------------


def _reference_floats(values: pd.Series) -> pd.Series:
    if pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        return pd.Series(
            values.to_numpy(dtype=float, na_value=np.nan), index=values.index, dtype=float
        )
    return pd.to_numeric(
        values.astype("object").where(values.notna(), np.nan), errors="coerce"
    ).astype(float)


def _reference_tree_input(encoder: FeatureEncoder, frame: pd.DataFrame) -> pd.DataFrame:
    """A pandas Categorical per column with the levels and ``__unknown__``, floats besides."""
    encoded = pd.DataFrame(index=frame.index)
    for column, levels in encoder.categories.items():
        values = pd.Categorical(frame[column].astype("object"), categories=[*levels, UNKNOWN])
        encoded[column] = values.fillna(UNKNOWN)
    for column in (*encoder.booleans, *encoder.numeric):
        encoded[column] = _reference_floats(frame[column])
    return encoded


def _reference_design(encoder: FeatureEncoder, tree: pd.DataFrame) -> np.ndarray:
    blocks = [
        np.eye(len(tree[column].cat.categories))[tree[column].cat.codes.to_numpy()]
        for column in encoder.categorical
    ]
    blocks.append(np.nan_to_num(tree[list(encoder.booleans)].to_numpy(dtype=float)))
    numeric = tree[list(encoder.numeric)].to_numpy(dtype=float)
    medians = np.array([encoder.numeric_medians[column] for column in encoder.numeric])
    means, scales = np.array([encoder.numeric_scales[column] for column in encoder.numeric]).T
    numeric = np.where(np.isnan(numeric), medians, numeric)
    blocks.append((numeric - means) / scales)
    return np.hstack(blocks)


def _reference_score(model: ChurnModel, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities and exact contributions through the pandas frame and ``tree_data``."""
    tree = _reference_tree_input(model.encoder, frame)
    data = tree_data(model.booster, tree, model.encoder.categorical)
    margin = tree_margin(model.booster, data)
    contributions = tree_contributions(model.booster, data)
    if model.blended:
        assert model.linear is not None
        linear = model.linear.explain(
            _reference_design(model.encoder, tree), model.encoder.design_grouping()
        )
        weight = model.tree_weight
        margin = weight * margin + (1 - weight) * linear.margin
        contributions = weight * contributions + (1 - weight) * linear.contributions
    return model.calibrator(1.0 / (1.0 + np.exp(-margin))), contributions


# --- inputs ------------------------------------------------------------------------------------


def _columns(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """The rows as the API holds them: object arrays of text or None, of booleans or None,
    and float arrays with NaN."""
    columns: dict[str, np.ndarray] = {}
    for column in frame.columns:
        values = frame[column].tolist()
        if column in CATEGORICAL_FEATURES or column in BOOLEAN_FEATURES:
            missing = pd.isna(frame[column]).to_numpy()
            cleaned = [None if gone else value for value, gone in zip(values, missing, strict=True)]
            columns[column] = np.array(cleaned, dtype=object)
        else:
            columns[column] = frame[column].to_numpy(dtype=float, na_value=np.nan)
    return columns


def _odd(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows with categories never seen in training, missing values of every kind, and the
    unknown level's own name."""
    odd = frame.head(12).reset_index(drop=True).copy()
    odd.loc[0, "contract"] = "Three year"
    odd.loc[1, "payment_method"] = None
    odd.loc[2, "gender"] = np.nan
    odd.loc[3, "internet_service"] = UNKNOWN
    odd.loc[4, "tenure_months"] = np.nan
    odd.loc[5, "monthly_charges"] = np.nan
    odd.loc[6, "has_partner"] = pd.NA
    odd.loc[7, ["is_senior_citizen", "has_dsl"]] = pd.NA
    odd.loc[8, ["contract", "tenure_band", "total_charges"]] = ["Weekly", None, np.nan]
    for column in CATEGORICAL_FEATURES:
        odd.loc[9, column] = "?"
    odd.loc[10, list(BOOLEAN_FEATURES)] = pd.NA
    return odd


def _assert_scored_as_reference(model: ChurnModel, rows: Any, frame: pd.DataFrame) -> None:
    expected_probabilities, expected_contributions = _reference_score(model, frame)
    scored = model.score(rows)
    np.testing.assert_array_equal(scored.probabilities, expected_probabilities)
    np.testing.assert_array_equal(scored.contributions, expected_contributions)
    assert scored.exact.all()
    np.testing.assert_array_equal(model.predict_proba(rows), expected_probabilities)


# --- models ------------------------------------------------------------------------------------


def _blended_catboost(split: tr.TrainingSplit, tree_weight: float = 0.7) -> ChurnModel:
    """A small CatBoost model blended with the logistic part and calibrated, as training
    fits one."""
    encoder = fit_encoder(split.train)
    booster = tr.fit_catboost(
        {"iterations": 60, "depth": 4, "learning_rate": 0.1, "random_seed": SEED},
        encoder,
        split.train,
    )
    baseline = tr.fit_baseline(encoder, split, seed=SEED)
    margin = tree_weight * tr.booster_margin(booster, encoder, split.validation)
    margin += (1 - tree_weight) * baseline.margin(split.validation)
    calibrator = tr.choose_calibrator(
        1 / (1 + np.exp(-margin)), tr.labels_of(split.validation), seed=SEED
    )
    return ChurnModel(
        kind="catboost",
        encoder=encoder,
        booster=booster,
        calibrator=calibrator.to_part(),
        linear=baseline.to_part(),
        tree_weight=tree_weight,
    )


@pytest.fixture(scope="module")
def telco_rows(telco_features: pd.DataFrame) -> pd.DataFrame:
    return feature_frame(telco_features)


@pytest.fixture(scope="module")
def telco_models(telco_features: pd.DataFrame) -> dict[str, ChurnModel]:
    split = tr.split_training_set(telco_features, seed=SEED)
    return {
        "xgboost": blended_xgboost(split, seed=SEED, max_depth=4),
        "catboost": _blended_catboost(split),
    }


@pytest.fixture(scope="module", params=KINDS)
def telco_model(request: pytest.FixtureRequest, telco_models: dict[str, ChurnModel]) -> ChurnModel:
    model = telco_models[request.param]
    assert model.kind == request.param and model.blended
    return model


# --- on the Telco features ---------------------------------------------------------------------


@pytest.mark.slow
def test_every_telco_customer_scores_as_through_the_pandas_encoding(
    telco_model: ChurnModel, telco_rows: pd.DataFrame
) -> None:
    _assert_scored_as_reference(telco_model, telco_rows, telco_rows)


@pytest.mark.slow
def test_plain_columns_of_numpy_arrays_score_as_the_same_rows_in_a_dataframe(
    telco_model: ChurnModel, telco_rows: pd.DataFrame
) -> None:
    rows = telco_rows.iloc[:1_000].reset_index(drop=True)
    _assert_scored_as_reference(telco_model, _columns(rows), rows)
    contributions = telco_model.contributions(_columns(rows))
    assert list(contributions.columns) == list(telco_model.columns)
    np.testing.assert_array_equal(
        contributions.to_numpy(), telco_model.contributions(rows).to_numpy()
    )


@pytest.mark.slow
def test_one_customer_at_a_time_scores_as_through_the_pandas_encoding_and_as_in_a_batch(
    telco_model: ChurnModel, telco_rows: pd.DataFrame
) -> None:
    rows = telco_rows.iloc[::97].reset_index(drop=True)
    batch = telco_model.score(rows)
    for position in range(len(rows)):
        row = rows.iloc[[position]].reset_index(drop=True)
        one = _columns(row)
        assert all(values.shape == (1,) for values in one.values())
        _assert_scored_as_reference(telco_model, one, row)
        # The logistic part's matrix products may round in the last bit by batch size.
        scored = telco_model.score(one)
        assert scored.probabilities[0] == pytest.approx(batch.probabilities[position], abs=1e-12)
        np.testing.assert_allclose(
            scored.contributions[0], batch.contributions[position], rtol=0, atol=1e-12
        )


@pytest.mark.slow
def test_unseen_categories_and_missing_values_score_as_the_pandas_encoding_scores_them(
    telco_model: ChurnModel, telco_rows: pd.DataFrame
) -> None:
    odd = _odd(telco_rows)
    _assert_scored_as_reference(telco_model, odd, odd)
    _assert_scored_as_reference(telco_model, _columns(odd), odd)
    for position in range(len(odd)):
        row = odd.iloc[[position]].reset_index(drop=True)
        _assert_scored_as_reference(telco_model, _columns(row), row)
    # Unseen and missing categories share the unknown level, which the model was fitted with.
    codes = telco_model.encoder.encode(_columns(odd)).codes
    unknown = [len(levels) for levels in telco_model.encoder.categories.values()]
    assert (codes[9] == unknown).all()
    assert (
        codes[0, telco_model.encoder.categorical.index("contract")]
        == unknown[telco_model.encoder.categorical.index("contract")]
    )


@pytest.mark.slow
def test_the_training_frame_is_the_pandas_encoding_it_always_was(
    telco_models: dict[str, ChurnModel], telco_rows: pd.DataFrame
) -> None:
    encoder = telco_models["xgboost"].encoder
    rows = pd.concat([telco_rows, _odd(telco_rows)], ignore_index=True)
    tree = encoder.tree_input(rows)
    expected = _reference_tree_input(encoder, rows)
    pd.testing.assert_frame_equal(tree, expected)
    np.testing.assert_array_equal(encoder.linear_matrix(tree), _reference_design(encoder, expected))


@pytest.mark.slow
def test_one_prediction_thread_changes_no_probability_or_reason(
    telco_models: dict[str, ChurnModel], telco_rows: pd.DataFrame
) -> None:
    rows = telco_rows.iloc[:300]
    for kind in KINDS:
        shared = telco_models[kind]
        model = dataclasses.replace(shared, booster=shared.booster.copy())
        assert model.prediction_threads is None
        before = model.score(rows)
        model.set_prediction_threads(1)
        assert model.prediction_threads == 1
        after = model.score(_columns(rows.reset_index(drop=True)))
        np.testing.assert_array_equal(after.probabilities, before.probabilities)
        np.testing.assert_array_equal(after.contributions, before.contributions)
        with pytest.raises(ValueError, match="at least one thread"):
            model.set_prediction_threads(0)


@pytest.mark.slow
def test_the_approximate_reasons_of_plain_columns_match_those_of_a_dataframe(
    telco_models: dict[str, ChurnModel], telco_rows: pd.DataFrame
) -> None:
    model = telco_models["xgboost"]
    rows = telco_rows.iloc[:2_000].reset_index(drop=True)
    from_frame = model.score(rows, exact_from=0.5, exact_gap=0.05)
    from_columns = model.score(_columns(rows), exact_from=0.5, exact_gap=0.05)
    assert 0 < from_frame.exact.sum() < len(rows)
    np.testing.assert_array_equal(from_columns.exact, from_frame.exact)
    np.testing.assert_array_equal(from_columns.contributions, from_frame.contributions)


# --- without a database: the models of the first format, and the input's shape ----------------


@pytest.fixture(scope="module", params=("xgboost_sigmoid", "catboost_isotonic"))
def format_0_model(request: pytest.FixtureRequest) -> ChurnModel:
    model = mlflow.pyfunc.load_model(str(FORMAT_0 / request.param)).unwrap_python_model().model
    assert isinstance(model, ChurnModel)
    return model


def test_models_of_the_first_format_score_plain_columns_as_the_pandas_encoding(
    format_0_model: ChurnModel,
) -> None:
    rows = feature_frame(feature_rows())
    odd = _odd(rows)
    _assert_scored_as_reference(format_0_model, rows, rows)
    _assert_scored_as_reference(format_0_model, _columns(rows), rows)
    _assert_scored_as_reference(format_0_model, _columns(odd), odd)
    for position in range(len(odd)):
        row = odd.iloc[[position]].reset_index(drop=True)
        _assert_scored_as_reference(format_0_model, _columns(row), row)


def test_plain_columns_of_different_lengths_or_missing_a_column_are_refused(
    format_0_model: ChurnModel,
) -> None:
    columns = _columns(feature_frame(feature_rows()).head(3))
    with pytest.raises(ValueError, match="one length"):
        format_0_model.score({**columns, "tenure_months": np.array([1.0, 2.0])})
    with pytest.raises(ValueError, match="one-dimensional"):
        format_0_model.score({name: values[:1].reshape(1, 1) for name, values in columns.items()})
    with pytest.raises(ValueError, match="lacks the model's columns: \\['contract'\\]"):
        format_0_model.score({k: v for k, v in columns.items() if k != "contract"})


def test_numbers_and_flags_of_any_plain_type_encode_as_pandas_converts_them() -> None:
    encoder = FeatureEncoder(
        categories={"contract": ["Month-to-month", "One year"]},
        booleans=("has_partner",),
        numeric_medians={"tenure_months": 5.0},
        numeric_scales={"tenure_months": (6.0, 2.0)},
    )
    flags = [True, None, np.bool_(False), 1, pd.NA, float("nan")]
    numbers = [Decimal("1.25"), "2.5", None, np.int64(7), "x", 3]
    columns = {
        "contract": np.array(["One year", None, "Two year", 1, np.nan, "One year"], dtype=object),
        "has_partner": np.array(flags, dtype=object),
        "tenure_months": np.array(numbers, dtype=object),
    }
    for rows in (columns, {name: np.tile(values, 200) for name, values in columns.items()}):
        encoded = encoder.encode(rows)
        tree = _reference_tree_input(encoder, pd.DataFrame(rows))
        np.testing.assert_array_equal(encoded.codes[:, 0], tree["contract"].cat.codes)
        np.testing.assert_array_equal(encoded.values, tree[list(encoder.floats)].to_numpy())
        np.testing.assert_array_equal(
            encoder.design_matrix(encoded), _reference_design(encoder, tree)
        )
    assert list(encoder.encode(columns).codes[:, 0]) == [1, 2, 2, 2, 2, 1]
