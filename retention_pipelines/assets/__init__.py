"""Thin Dagster wiring, one module per stage; the logic lives in ``retention_pipelines.core``."""
