"""Plain Python logic of the platform. Nothing here imports Dagster."""
