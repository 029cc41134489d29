"""The churn model's MLflow entry point ("models from code"): MLflow stores this file with
every logged churn model and runs it when the model is loaded."""

import mlflow.models

from retention_pipelines.churn_model.pyfunc import ChurnPyfunc

mlflow.models.set_model(ChurnPyfunc())
