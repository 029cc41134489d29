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

# The night: ingest the day's landing file, rebuild its features, score every customer with
# the champion, refresh what business users read.
nightly_scoring_job = dg.define_asset_job(
    name="nightly_scoring_job",
    selection=dg.AssetSelection.groups("ingestion", "staging", "features", "scoring", "analytics"),
    partitions_def=daily_partitions,
    description="One snapshot date end to end: ingestion, features, scores, analytics views.",
)

# 02:00 in RETENTION_TIMEZONE, for that day's partition (today's landing file must have
# arrived by then). Runs are keyed by partition, so a tick evaluated twice launches once.
nightly_scoring_schedule = dg.build_schedule_from_partitioned_job(
    nightly_scoring_job,
    name="nightly_scoring_schedule",
    hour_of_day=2,
    minute_of_hour=0,
    description="Every night at 02:00: the day's snapshot ingested, featurized and scored.",
)
