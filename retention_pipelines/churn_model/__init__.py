"""The churn model artefact: the model, its parts and its MLflow face.

This package is the model's stable import path: ``encoding`` (how a row becomes model input),
``parts`` (the booster functions, the logistic part, the calibrator), ``model`` (``ChurnModel``,
saved as data and rebuilt on load), ``pyfunc`` (the MLflow model) and ``legacy`` (models
registered before they were saved as data). It depends on numpy, pandas, the two boosting
libraries and MLflow only: never on training, tuning or the platform's other modules, so
loading a model for scoring or serving pulls in none of them. Import from the submodules:
this file imports nothing, so the light ones stay light.
"""
