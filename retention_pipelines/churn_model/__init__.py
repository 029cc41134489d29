"""The churn model artefact: the model, its parts and its MLflow face.

This package is the model's stable import path. It depends on numpy, pandas, the two
boosting libraries and MLflow only: never on training, tuning or the platform's other
modules, so loading a model for scoring or serving pulls in none of them. A model is saved as
data (see :mod:`retention_pipelines.churn_model.model`) and rebuilt on load.
"""

from retention_pipelines.churn_model.encoding import FeatureEncoder
from retention_pipelines.churn_model.model import (
    FORMAT_VERSION,
    ChurnModel,
    ModelFormatError,
    ModelKind,
    Scored,
)
from retention_pipelines.churn_model.parts import Calibrator, LinearPart

__all__ = [
    "FORMAT_VERSION",
    "Calibrator",
    "ChurnModel",
    "FeatureEncoder",
    "LinearPart",
    "ModelFormatError",
    "ModelKind",
    "Scored",
]
