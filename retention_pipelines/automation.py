"""Jobs, schedules and sensors."""

import dagster as dg

from retention_pipelines.assets.partitions import daily_partitions

# Everything snapshot-shaped for one day: ingestion, then the dbt feature tables.
daily_snapshot_job = dg.define_asset_job(
    name="daily_snapshot_job",
    selection=dg.AssetSelection.groups("ingestion", "staging", "features"),
    partitions_def=daily_partitions,
    description="Ingest a day's landing file and rebuild that day's feature tables.",
)

# Train, register a challenger, run the promotion gate.
retrain_job = dg.define_asset_job(
    name="retrain_job",
    selection=dg.AssetSelection.groups("training"),
    description="Tune and calibrate a churn model, register it as challenger, run the gate.",
    tags={"retention/stage": "training"},
)
