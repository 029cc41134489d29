"""The daily partitioning shared by every snapshot-shaped asset.

Its start date and timezone (``RETENTION_PARTITIONS_START_DATE``, ``RETENTION_TIMEZONE``)
shape the asset graph itself, so they are read when the code location loads, not per run.
"""

import dagster as dg

from retention_pipelines.settings import get_settings

# end_offset=1: today's partition exists, so the nightly run can ingest today's snapshot.
daily_partitions = dg.DailyPartitionsDefinition(
    start_date=get_settings().partitions_start_date,
    timezone=get_settings().timezone,
    end_offset=1,
)

# Each date is its own run: a backfill's partitions succeed, fail and retry independently.
one_partition_per_run = dg.BackfillPolicy.multi_run(max_partitions_per_run=1)
