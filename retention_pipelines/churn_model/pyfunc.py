"""The churn model as an MLflow pyfunc model: the registry's face of :class:`ChurnModel`.

The MLflow model holds no pickle: it is logged from code (``mlflow_model.py``, MLflow's
"models from code") with the saved model folder as its artefact, and ``load_context``
rebuilds the model from that folder. Its signature is the feature table's own columns and
types, so rows read from ``features.customer_features`` (integers as integers, extra columns
such as ``customer_id`` ignored) and a JSON-like dict of the same fields can be passed to
``predict`` as they are.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Final

import mlflow.pyfunc
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.models.model import ModelInfo
from mlflow.types import ColSpec, Schema

from retention_pipelines.churn_model.model import ChurnModel

PROBABILITY_COLUMN: Final = "churn_probability"
ARTIFACT: Final = "churn_model"
ENTRY_POINT: Final = Path(__file__).with_name("mlflow_model.py")


class ChurnPyfunc(mlflow.pyfunc.PythonModel):
    """Rows of features in (a frame, a dict or a list of dicts), probabilities out."""

    def __init__(self) -> None:
        self.model: ChurnModel | None = None

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        self.model = ChurnModel.load(Path(context.artifacts[ARTIFACT]))

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        if self.model is None:
            raise RuntimeError("the churn model was not loaded: load it with mlflow.pyfunc")
        frame = input_frame(model_input)
        return pd.DataFrame(
            {PROBABILITY_COLUMN: self.model.predict_proba(frame)}, index=frame.index
        )


def input_frame(model_input: Any) -> pd.DataFrame:
    """A frame of rows from what callers pass: a frame, one row as a dict of values, columns
    as a dict of lists, or a list of row dicts."""
    if isinstance(model_input, pd.DataFrame):
        return model_input
    if isinstance(model_input, Mapping):
        values = list(model_input.values())
        if values and all(isinstance(value, list | tuple) for value in values):
            return pd.DataFrame(dict(model_input))
        return pd.DataFrame([dict(model_input)])
    if isinstance(model_input, list):
        return pd.DataFrame(model_input)
    raise TypeError(f"cannot read rows of features from a {type(model_input).__name__}")


def signature(model: ChurnModel, integer_columns: Iterable[str]) -> ModelSignature:
    """The model's input as the feature table types it: text categories, boolean flags,
    integers where the table has integers, doubles for the rest; the probability out."""
    integers = set(integer_columns)
    inputs = [
        *(ColSpec("string", column) for column in model.encoder.categorical),
        *(ColSpec("boolean", column) for column in model.encoder.booleans),
        *(
            ColSpec("long" if column in integers else "double", column)
            for column in model.encoder.numeric
        ),
    ]
    return ModelSignature(
        inputs=Schema(inputs), outputs=Schema([ColSpec("double", PROBABILITY_COLUMN)])
    )


def log_model(
    model: ChurnModel,
    *,
    name: str,
    signature: ModelSignature,
    input_example: pd.DataFrame,
    pip_requirements: list[str],
) -> ModelInfo:
    """Log ``model`` to the active MLflow run as a pyfunc model without a pickle."""
    with tempfile.TemporaryDirectory() as folder:
        saved = model.save(Path(folder) / ARTIFACT)
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=str(ENTRY_POINT),
            artifacts={ARTIFACT: str(saved)},
            signature=signature,
            input_example=input_example,
            pip_requirements=pip_requirements,
        )


class FormatZeroPyfunc(mlflow.pyfunc.PythonModel):
    """The MLflow class of format-0 models (see :mod:`retention_pipelines.churn_model.legacy`),
    pickled as ``retention_pipelines.core.model.ChurnPyfunc``. Once loaded, ``model`` is the
    current :class:`ChurnModel`."""

    model: Any

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        self.model = self.current()

    def current(self) -> ChurnModel:
        return self.model if isinstance(self.model, ChurnModel) else self.model.upgrade()

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        frame = input_frame(model_input)
        return pd.DataFrame(
            {PROBABILITY_COLUMN: self.current().predict_proba(frame)}, index=frame.index
        )
