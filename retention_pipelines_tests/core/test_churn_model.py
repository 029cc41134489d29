"""The model artefact: saved as data and rebuilt, loaded through plain MLflow, and models of
the earlier pickled format still loading with the probabilities they gave then."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from retention_pipelines.churn_model.model import MODEL_FILE, ChurnModel, ModelFormatError
from retention_pipelines_tests.churn_models import FORMAT_0, feature_rows, log_churn_model

FORMAT_0_MODELS = ("xgboost_sigmoid", "catboost_isotonic")


def _expected(kind: str) -> tuple[pd.DataFrame, np.ndarray]:
    records = json.loads((FORMAT_0 / kind / "expected_probabilities.json").read_text())
    rows = pd.DataFrame(records)
    return rows.drop(columns="expected_probability"), rows["expected_probability"].to_numpy()


@pytest.fixture(scope="module", params=FORMAT_0_MODELS)
def format_0(request: pytest.FixtureRequest) -> tuple[str, mlflow.pyfunc.PyFuncModel]:
    return request.param, mlflow.pyfunc.load_model(str(FORMAT_0 / request.param))


def test_a_model_of_the_pickled_format_loads_with_plain_mlflow_and_predicts_as_it_did(
    format_0: tuple[str, mlflow.pyfunc.PyFuncModel],
) -> None:
    kind, loaded = format_0
    rows, expected = _expected(kind)
    # Its signature, written then, declares every number a double.
    numbers = rows.astype({"tenure_months": float, "add_on_service_count": float,
                          "contract_length_months": float})  # fmt: skip
    predicted = loaded.predict(numbers)["churn_probability"].to_numpy()
    assert np.abs(predicted - expected).max() < 1e-9


def test_a_pickled_model_converts_to_the_current_format_without_changing_a_probability(
    format_0: tuple[str, mlflow.pyfunc.PyFuncModel], tmp_path: Path
) -> None:
    kind, loaded = format_0
    rows, expected = _expected(kind)
    model = loaded.unwrap_python_model().model
    assert isinstance(model, ChurnModel)
    assert model.calibrator.method == kind.split("_")[1]
    reloaded = ChurnModel.load(model.save(tmp_path / "saved"))
    assert np.abs(reloaded.predict_proba(rows) - expected).max() < 1e-9
    assert np.allclose(reloaded.contributions(rows), model.contributions(rows), atol=1e-12)


def test_the_saved_model_is_data_a_json_description_and_the_booster_file(
    format_0: tuple[str, mlflow.pyfunc.PyFuncModel], tmp_path: Path
) -> None:
    kind, loaded = format_0
    folder = loaded.unwrap_python_model().model.save(tmp_path / "saved")
    description = json.loads((folder / MODEL_FILE).read_text())
    assert description["format_version"] == 1
    assert description["kind"] == kind.split("_")[0]
    assert (folder / description["booster_file"]).is_file()
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [MODEL_FILE, description["booster_file"]]
    )


def test_a_model_of_a_newer_format_is_refused_saying_which_formats_are_read(
    format_0: tuple[str, mlflow.pyfunc.PyFuncModel], tmp_path: Path
) -> None:
    folder = format_0[1].unwrap_python_model().model.save(tmp_path / "saved")
    description = json.loads((folder / MODEL_FILE).read_text())
    (folder / MODEL_FILE).write_text(json.dumps({**description, "format_version": 99}))
    with pytest.raises(ModelFormatError, match="format 99; this release reads formats 1 to 1"):
        ChurnModel.load(folder)


def test_a_logged_model_takes_table_rows_and_a_json_dict_through_plain_mlflow(
    format_0: tuple[str, mlflow.pyfunc.PyFuncModel], tmp_path: Path
) -> None:
    kind, loaded = format_0
    rows, expected = _expected(kind)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    experiment = mlflow.MlflowClient(uri).create_experiment(
        "format", artifact_location=(tmp_path / "artifacts").as_uri()
    )
    mlflow.set_tracking_uri(uri)
    try:
        with mlflow.start_run(experiment_id=experiment):
            model_uri = log_churn_model(loaded.unwrap_python_model().model)
        current = mlflow.pyfunc.load_model(model_uri)
    finally:
        mlflow.set_tracking_uri(None)
    # Integers as the table has them, customer_id and churned besides the model's columns.
    assert rows["tenure_months"].dtype == np.int64 and "customer_id" in rows
    predicted = current.predict(rows)["churn_probability"].to_numpy()
    assert np.abs(predicted - expected).max() < 1e-9
    one = json.loads(rows.iloc[[7]].to_json(orient="records"))[0]
    assert current.predict(one)["churn_probability"].iloc[0] == pytest.approx(expected[7], abs=1e-9)


def test_scoring_and_loading_a_model_import_no_training_or_tuning_code(tmp_path: Path) -> None:
    from retention_pipelines_tests.churn_models import constant_churn_model  # noqa: PLC0415

    folder = constant_churn_model(0.3).save(tmp_path / "saved")
    feature_rows().to_json(tmp_path / "rows.json", orient="records")
    script = (
        "import sys, pandas as pd\n"
        "import retention_pipelines.core.scoring, retention_pipelines.core.registry\n"
        "import retention_pipelines.churn_model.pyfunc\n"
        "from retention_pipelines.churn_model.model import ChurnModel\n"
        f"model = ChurnModel.load(__import__('pathlib').Path({str(folder)!r}))\n"
        f"model.score(pd.read_json({str(tmp_path / 'rows.json')!r}), exact_from=0.5)\n"
        "print(sorted(m for m in ('optuna', 'retention_pipelines.core.training',"
        " 'retention_pipelines.core.model_search') if m in sys.modules))\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert completed.stdout.strip() == "[]"
