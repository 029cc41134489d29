"""The synthetic customers: the landing format, the rules ingestion enforces, realism against the
real Telco file, determinism, drift and a churn signal a model can learn."""

from __future__ import annotations

import datetime as dt
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from retention_pipelines import datagen
from retention_pipelines.core.ingestion import read_validated_chunks
from retention_pipelines.datagen import (
    TELCO_COLUMNS,
    generate_customers,
    landing_file_name,
    write_landing_csv,
)

SAMPLE_SIZE = 60_000
ADD_ONS = datagen.ADD_ON_COLUMNS
AMOUNT = re.compile(r"^\d+(\.\d{1,2})?$")


@pytest.fixture(scope="module")
def customers() -> pd.DataFrame:
    return generate_customers(SAMPLE_SIZE, seed=7)


@pytest.fixture(scope="module")
def drifted_customers() -> pd.DataFrame:
    return generate_customers(SAMPLE_SIZE, seed=7, drift=0.5)


@pytest.fixture(scope="module")
def real_customers(telco_csv: Path) -> pd.DataFrame:
    return pd.read_csv(telco_csv, dtype=str, keep_default_na=False)


def _share(frame: pd.DataFrame, column: str, value: str) -> float:
    return float((frame[column] == value).mean())


def _numbers(frame: pd.DataFrame, column: str) -> pd.Series:
    return pd.to_numeric(frame[column].str.strip().replace("", np.nan))


def _rule_violations(frame: pd.DataFrame) -> dict[str, int]:
    """Rows breaking each rule that ingestion enforces, by rule."""
    tenure = pd.to_numeric(frame["tenure"])
    monthly = pd.to_numeric(frame["MonthlyCharges"])
    total_blank = frame["TotalCharges"].str.strip() == ""
    total = pd.to_numeric(frame["TotalCharges"].where(~total_blank, "0"))
    no_internet = frame["InternetService"] == "No"
    allowed = {
        "gender": {"Male", "Female"},
        "SeniorCitizen": {"0", "1"},
        "Partner": {"Yes", "No"},
        "Dependents": {"Yes", "No"},
        "PhoneService": {"Yes", "No"},
        "PaperlessBilling": {"Yes", "No"},
        "MultipleLines": {"Yes", "No", "No phone service"},
        "InternetService": {"DSL", "Fiber optic", "No"},
        "Contract": {"Month-to-month", "One year", "Two year"},
        "PaymentMethod": {
            "Electronic check",
            "Mailed check",
            "Bank transfer (automatic)",
            "Credit card (automatic)",
        },
        "Churn": {"Yes", "No"},
        **{add_on: {"Yes", "No", "No internet service"} for add_on in ADD_ONS},
    }
    violations = {
        column: int((~frame[column].isin(values)).sum()) for column, values in allowed.items()
    }
    violations["customerID format"] = int(
        (~frame["customerID"].str.match(r"^\d{4}-[A-Z]{5}$")).sum()
    )
    violations["tenure 0..72"] = int((~tenure.between(0, 72)).sum())
    violations["MonthlyCharges >= 0"] = int((monthly < 0).sum())
    violations["TotalCharges blank iff tenure 0"] = int((total_blank != (tenure == 0)).sum())
    violations["TotalCharges >= 0"] = int((total < 0).sum())
    violations["no phone service iff no phone"] = int(
        ((frame["MultipleLines"] == "No phone service") != (frame["PhoneService"] == "No")).sum()
    )
    violations["no internet service iff no internet"] = sum(
        int(((frame[add_on] == "No internet service") != no_internet).sum()) for add_on in ADD_ONS
    )
    return {rule: count for rule, count in violations.items() if count}


# --- The landing format. ---


def test_the_columns_are_the_real_files_header_in_order(
    customers: pd.DataFrame, telco_csv: Path
) -> None:
    real_header = telco_csv.read_text(encoding="utf-8").splitlines()[0]
    assert ",".join(TELCO_COLUMNS) == real_header
    assert tuple(customers.columns) == TELCO_COLUMNS


def test_every_value_is_text_as_the_csv_spells_it(customers: pd.DataFrame) -> None:
    assert all(customers[column].map(type).eq(str).all() for column in TELCO_COLUMNS)
    assert customers["tenure"].str.fullmatch(r"\d+").all()
    assert customers["MonthlyCharges"].str.fullmatch(AMOUNT).all()
    billed = customers["tenure"] != "0"
    assert customers.loc[billed, "TotalCharges"].str.fullmatch(AMOUNT).all()


def test_a_customer_without_a_bill_yet_has_the_real_files_single_space_total(
    customers: pd.DataFrame, real_customers: pd.DataFrame
) -> None:
    real_blanks = set(real_customers.loc[real_customers["tenure"] == "0", "TotalCharges"])
    new_customers = customers["tenure"] == "0"
    assert new_customers.any()
    assert set(customers.loc[new_customers, "TotalCharges"]) == real_blanks == {" "}


def test_amounts_are_printed_like_the_real_file(customers: pd.DataFrame) -> None:
    """Whole monthly charges keep ``.0`` (``84.0``), whole totals do not (``97``)."""
    monthly = customers["MonthlyCharges"]
    total = customers.loc[customers["tenure"] != "0", "TotalCharges"]
    assert monthly.str.endswith(".0").any()
    assert not monthly.str.fullmatch(r"\d+").any()
    assert total.str.fullmatch(r"\d+").any()
    assert not total.str.endswith(".0").any()
    assert not monthly.str.fullmatch(r"\d+\.\d0").any()  # no trailing zero after a decimal


def test_landing_file_names_carry_the_snapshot_date() -> None:
    assert landing_file_name(dt.date(2024, 3, 7)) == "customers_2024-03-07.csv"


@pytest.mark.parametrize("labelled", [True, False])
def test_a_written_file_reads_back_identical_to_the_generated_frame(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, labelled: bool
) -> None:
    monkeypatch.setattr(datagen, "GENERATION_CHUNK_ROWS", 1_000)  # several chunks, quickly
    path = write_landing_csv(tmp_path / "customers.csv", 4_500, seed=3, labelled=labelled)
    read_back = pd.read_csv(path, dtype=str, keep_default_na=False)
    generated = generate_customers(4_500, seed=3, labelled=labelled)
    assert (generated["TotalCharges"] == " ").any()
    pd.testing.assert_frame_equal(read_back, generated)


def test_a_written_file_has_the_real_files_plain_format(tmp_path: Path) -> None:
    path = write_landing_csv(tmp_path / "customers.csv", 2_000, seed=1)
    raw = path.read_bytes()
    assert raw.startswith((",".join(TELCO_COLUMNS) + "\n").encode())
    assert b'"' not in raw
    assert b"\r" not in raw
    assert raw.endswith(b"\n")
    assert raw.count(b"\n") == 2_001


def test_writing_creates_missing_folders_and_leaves_no_partial_file(tmp_path: Path) -> None:
    path = tmp_path / "landing" / "nested" / landing_file_name(dt.date(2024, 1, 2))
    assert write_landing_csv(path, 10) == path
    assert [entry.name for entry in path.parent.iterdir()] == [path.name]


def test_no_customers_make_an_empty_frame_and_a_header_only_file(tmp_path: Path) -> None:
    assert generate_customers(0).empty
    assert tuple(generate_customers(0).columns) == TELCO_COLUMNS
    path = write_landing_csv(tmp_path / "empty.csv", 0)
    assert path.read_text(encoding="utf-8") == ",".join(TELCO_COLUMNS) + "\n"


def test_unlabelled_customers_have_an_empty_churn_and_are_otherwise_identical() -> None:
    labelled = generate_customers(5_000, seed=11)
    unlabelled = generate_customers(5_000, seed=11, labelled=False)
    assert (unlabelled["Churn"] == "").all()
    features = [column for column in TELCO_COLUMNS if column != "Churn"]
    pd.testing.assert_frame_equal(unlabelled[features], labelled[features])


# --- The rules ingestion enforces. ---


@pytest.mark.parametrize("drift", [0.0, 1.0])
def test_every_generated_row_satisfies_the_ingestion_rules(drift: float) -> None:
    assert _rule_violations(generate_customers(40_000, seed=5, drift=drift)) == {}


@pytest.mark.parametrize("labelled", [True, False])
def test_ingestion_accepts_every_row_of_a_written_landing_file(
    tmp_path: Path, labelled: bool
) -> None:
    path = write_landing_csv(
        tmp_path / "customers.csv", 3_000, seed=2, drift=1.0, labelled=labelled
    )
    chunks = list(read_validated_chunks(path, chunk_rows=1_000))
    assert sum(len(chunk.rejects) for chunk in chunks) == 0
    assert sum(len(chunk.valid) for chunk in chunks) == 3_000


def test_customer_ids_are_unique_and_in_the_telco_format(customers: pd.DataFrame) -> None:
    assert customers["customerID"].is_unique
    assert customers["customerID"].str.fullmatch(r"\d{4}-[A-Z]{5}").all()


def test_five_million_customer_ids_are_distinct() -> None:
    ids = datagen._draw_customer_ids(np.random.default_rng(0), 5_000_000)
    ordered = np.sort(ids)  # sort and compare neighbours: much faster than np.unique here
    assert (np.diff(ordered) > 0).all()
    assert ordered[0] >= 0
    assert ordered[-1] < datagen.CUSTOMER_ID_SPACE


def test_id_numbers_map_one_to_one_onto_telco_ids() -> None:
    numbers = np.array([0, 1, 26, datagen.CUSTOMER_ID_SPACE - 1], dtype=np.int64)
    texts = datagen._customer_id_text(numbers)
    assert list(texts) == ["0000-AAAAA", "0000-AAAAB", "0000-AAABA", "9999-ZZZZZ"]
    sample = np.random.default_rng(1).integers(0, datagen.CUSTOMER_ID_SPACE, size=1_000)
    decoded = [
        int(text[:4]) * 26**5
        + sum((ord(letter) - 65) * 26 ** (4 - i) for i, letter in enumerate(text[5:]))
        for text in datagen._customer_id_text(sample)
    ]
    assert decoded == sample.tolist()


# --- Determinism and arguments. ---


def test_the_same_seed_gives_the_same_customers() -> None:
    pd.testing.assert_frame_equal(
        generate_customers(3_000, seed=4), generate_customers(3_000, seed=4)
    )


def test_another_seed_gives_other_customers() -> None:
    first, second = generate_customers(3_000, seed=4), generate_customers(3_000, seed=5)
    assert not first["customerID"].isin(second["customerID"]).any()
    assert not first.drop(columns="customerID").equals(second.drop(columns="customerID"))


def test_drift_zero_is_the_default() -> None:
    pd.testing.assert_frame_equal(
        generate_customers(3_000, seed=9, drift=0.0), generate_customers(3_000, seed=9)
    )


@pytest.mark.parametrize("drift", [-0.01, 1.01, math.nan, math.inf])
def test_drift_outside_zero_to_one_is_refused(tmp_path: Path, drift: float) -> None:
    with pytest.raises(ValueError, match="drift"):
        generate_customers(10, drift=drift)
    with pytest.raises(ValueError, match="drift"):
        write_landing_csv(tmp_path / "refused" / "customers.csv", 10, drift=drift)
    assert not (tmp_path / "refused").exists()


def test_a_negative_or_fractional_count_is_refused() -> None:
    with pytest.raises(ValueError, match="n must be"):
        generate_customers(-1)
    with pytest.raises(TypeError):
        generate_customers(2.5)  # type: ignore[arg-type]


# --- Drift. ---


def test_drift_moves_contracts_to_month_to_month_as_documented(
    customers: pd.DataFrame, drifted_customers: pd.DataFrame
) -> None:
    """Half of d of the long contracts switch: at d = 0.5 a quarter of them."""
    long_before = 1 - _share(customers, "Contract", "Month-to-month")
    long_after = 1 - _share(drifted_customers, "Contract", "Month-to-month")
    assert long_after == pytest.approx(long_before * 0.75, abs=0.01)


def test_drift_raises_charges_and_shortens_tenure(
    customers: pd.DataFrame, drifted_customers: pd.DataFrame
) -> None:
    monthly_before = _numbers(customers, "MonthlyCharges").mean()
    monthly_after = _numbers(drifted_customers, "MonthlyCharges").mean()
    tenure_before = _numbers(customers, "tenure").mean()
    tenure_after = _numbers(drifted_customers, "tenure").mean()
    # The price rise alone is +15 %; the fewer add-ons of newer customers take a little back.
    assert 1.08 < monthly_after / monthly_before < 1.16
    # The tenure shrink alone is -20 %; the switched contracts shorten it further.
    assert tenure_after < 0.8 * tenure_before


def test_drift_keeps_the_same_customers_and_raises_churn(
    customers: pd.DataFrame, drifted_customers: pd.DataFrame
) -> None:
    pd.testing.assert_series_equal(customers["customerID"], drifted_customers["customerID"])
    pd.testing.assert_series_equal(customers["gender"], drifted_customers["gender"])
    assert _share(drifted_customers, "Churn", "Yes") > _share(customers, "Churn", "Yes") + 0.05


# --- Realism against the real file. ---


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("Contract", "Month-to-month"),
        ("Contract", "One year"),
        ("Contract", "Two year"),
        ("InternetService", "Fiber optic"),
        ("InternetService", "DSL"),
        ("InternetService", "No"),
        ("PaymentMethod", "Electronic check"),
        ("PaymentMethod", "Mailed check"),
        ("PaymentMethod", "Bank transfer (automatic)"),
        ("PaymentMethod", "Credit card (automatic)"),
        ("SeniorCitizen", "1"),
        ("Partner", "Yes"),
        ("Dependents", "Yes"),
        ("PhoneService", "No"),
        ("MultipleLines", "Yes"),
        ("PaperlessBilling", "Yes"),
        *((add_on, "Yes") for add_on in ADD_ONS),
        ("Churn", "Yes"),
    ],
)
def test_shares_are_within_five_points_of_the_real_file(
    customers: pd.DataFrame, real_customers: pd.DataFrame, column: str, value: str
) -> None:
    assert _share(customers, column, value) == pytest.approx(
        _share(real_customers, column, value), abs=0.05
    )


def test_the_churn_rate_is_close_to_the_real_one(
    customers: pd.DataFrame, real_customers: pd.DataFrame
) -> None:
    assert _share(real_customers, "Churn", "Yes") == pytest.approx(0.265, abs=0.001)
    assert _share(customers, "Churn", "Yes") == pytest.approx(0.265, abs=0.015)


def test_tenure_and_charges_are_distributed_like_the_real_file(
    customers: pd.DataFrame, real_customers: pd.DataFrame
) -> None:
    for column, tolerance in (("tenure", 2.0), ("MonthlyCharges", 2.0), ("TotalCharges", 250.0)):
        generated, real = _numbers(customers, column), _numbers(real_customers, column)
        assert generated.mean() == pytest.approx(real.mean(), abs=tolerance), column
        assert generated.std() == pytest.approx(real.std(), abs=tolerance * 1.5), column
    tenure = _numbers(customers, "tenure")
    assert tenure.min() == 0
    assert tenure.max() == 72


def test_tenure_is_bimodal_with_peaks_at_the_first_and_last_months(
    customers: pd.DataFrame,
) -> None:
    per_month = _numbers(customers, "tenure").value_counts(normalize=True)
    middle = per_month.loc[30:42].mean()
    assert per_month[1] > 4 * middle
    assert per_month[72] > 4 * middle


def test_long_contracts_have_long_tenure(customers: pd.DataFrame) -> None:
    tenure = _numbers(customers, "tenure").groupby(customers["Contract"]).mean()
    assert tenure["Month-to-month"] < 22
    assert 38 < tenure["One year"] < 48
    assert tenure["Two year"] > 50


def test_monthly_charges_follow_internet_type_add_ons_and_lines(customers: pd.DataFrame) -> None:
    monthly = _numbers(customers, "MonthlyCharges")
    by_internet = monthly.groupby(customers["InternetService"]).mean()
    assert by_internet["No"] < 25 < by_internet["DSL"] < 70 < by_internet["Fiber optic"]
    add_on_count = (customers[list(ADD_ONS)] == "Yes").sum(axis=1)
    fiber = customers["InternetService"] == "Fiber optic"
    by_add_ons = monthly[fiber].groupby(add_on_count[fiber]).mean()
    assert by_add_ons.is_monotonic_increasing
    lines = monthly.groupby(customers["MultipleLines"]).mean()
    assert lines["Yes"] > lines["No"]


def test_total_charges_are_about_tenure_times_monthly_charges(customers: pd.DataFrame) -> None:
    tenure = _numbers(customers, "tenure")
    billed = tenure > 0
    ratio = _numbers(customers, "TotalCharges")[billed] / (
        tenure[billed] * _numbers(customers, "MonthlyCharges")[billed]
    )
    assert ratio.median() == pytest.approx(1.0, abs=0.01)
    assert ratio.between(0.5, 1.5).all()
    assert 0.01 < ratio.std() < 0.1
    first_month = customers[tenure == 1]
    assert (
        first_month["TotalCharges"].astype(float) == first_month["MonthlyCharges"].astype(float)
    ).all()


def test_seniors_take_fiber_and_pay_by_electronic_check_more_often(
    customers: pd.DataFrame,
) -> None:
    senior = customers["SeniorCitizen"] == "1"
    for column, value in (
        ("InternetService", "Fiber optic"),
        ("PaymentMethod", "Electronic check"),
    ):
        assert (
            _share(customers[senior], column, value)
            > _share(customers[~senior], column, value) + 0.15
        )


def test_churn_is_highest_where_the_real_file_has_it(customers: pd.DataFrame) -> None:
    churn = customers["Churn"] == "Yes"
    by_contract = churn.groupby(customers["Contract"]).mean()
    assert by_contract["Month-to-month"] > 0.35 > by_contract["One year"] > 0.05
    assert by_contract["Two year"] < 0.05
    by_internet = churn.groupby(customers["InternetService"]).mean()
    assert by_internet["Fiber optic"] > by_internet["DSL"] > by_internet["No"]
    assert not churn[customers["tenure"] == "0"].any()


def test_a_simple_logistic_regression_learns_churn(customers: pd.DataFrame) -> None:
    sample = customers.iloc[:20_000]
    categorical = [
        column
        for column in TELCO_COLUMNS
        if column not in {"customerID", "tenure", "MonthlyCharges", "TotalCharges", "Churn"}
    ]
    features = pd.get_dummies(sample[categorical], dtype=float)
    features["tenure"] = _numbers(sample, "tenure") / 72
    features["MonthlyCharges"] = _numbers(sample, "MonthlyCharges") / 100
    target = (sample["Churn"] == "Yes").to_numpy()
    train, test = slice(0, 15_000), slice(15_000, None)
    model = LogisticRegression(max_iter=1_000).fit(features.iloc[train], target[train])
    scores = model.predict_proba(features.iloc[test])[:, 1]
    assert roc_auc_score(target[test], scores) > 0.75
