"""The code location: one Definitions object, assembled when Dagster loads the location.

Importing this module builds nothing: no dbt parse, no database, no file. Dagster finds the
``@dg.definitions`` function and calls it when it loads the code location (``dagster dev``,
the webserver, a run worker); that is when the stage modules are imported and the resources
built from the settings (``RETENTION_*``).
"""

import dagster as dg


@dg.definitions
def defs() -> dg.Definitions:
    return load_definitions()


def load_definitions() -> dg.Definitions:
    """The Definitions object, for Dagster and for the platform's own runs and tests."""
    # Loading, not importing, pays for the stage modules and the libraries they import.
    from retention_pipelines.assets import (  # noqa: PLC0415
        crm,
        data_retention,
        features,
        ingestion,
        monitoring,
        scoring,
        training,
    )
    from retention_pipelines.assets.step_outputs import step_output_io_manager  # noqa: PLC0415
    from retention_pipelines.automation import (  # noqa: PLC0415
        daily_snapshot_job,
        data_retention_job,
        data_retention_schedule,
        drift_retrain_sensor,
        nightly_scoring_job,
        nightly_scoring_schedule,
        retrain_job,
        step_executor,
    )
    from retention_pipelines.checks.quality import quality_checks  # noqa: PLC0415
    from retention_pipelines.resources import resources_from_settings  # noqa: PLC0415
    from retention_pipelines.settings import get_settings  # noqa: PLC0415

    stages = [ingestion, features, training, scoring, monitoring, data_retention, crm]
    settings = get_settings()
    return dg.Definitions(
        assets=dg.load_assets_from_modules(stages),
        asset_checks=[*dg.load_asset_checks_from_modules(stages), *quality_checks],
        jobs=[daily_snapshot_job, nightly_scoring_job, retrain_job, data_retention_job],
        schedules=[nightly_scoring_schedule, data_retention_schedule],
        sensors=[drift_retrain_sensor],
        resources={
            **resources_from_settings(settings, features.retention_dbt_project),
            # Step outputs as files, a training split as a reference to its warehouse rows.
            "io_manager": step_output_io_manager,
        },
        executor=step_executor(settings),
    )
