"""``retention score``: one date's nightly job through the local Dagster instance, its
progress read back from the run's own event log while it runs."""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date

import dagster as dg

from retention_pipelines.assets.scoring import PROGRESS_PATTERN
from retention_pipelines.instance import write_local_instance
from retention_pipelines.resources import prepared_database_url
from retention_pipelines.settings import RetentionSettings

NIGHTLY_JOB = "nightly_scoring_job"
POLL_S = 0.5


@dataclass
class NightlyProgress:
    steps_done: int = 0
    steps_total: int | None = None
    running: list[str] = field(default_factory=list)
    customers_scored: int = 0
    customers_total: int = 0

    def describe(self) -> str:
        return f"{NIGHTLY_JOB}: {', '.join(self.running) or 'starting'}"


@dataclass(frozen=True)
class NightlyOutcome:
    run_id: str
    success: bool
    customers_scored: int
    error: str | None = None


def run_nightly(
    settings: RetentionSettings,
    day: date,
    *,
    on_progress: Callable[[NightlyProgress], None] | None = None,
) -> NightlyOutcome:
    """Run ``nightly_scoring_job`` for ``day`` in this process and report progress."""
    from retention_pipelines.definitions import defs  # noqa: PLC0415

    home = write_local_instance(settings, prepared_database_url())
    os.environ["DAGSTER_HOME"] = str(home)
    instance = dg.DagsterInstance.get()
    job = defs.resolve_job_def(NIGHTLY_JOB)
    run_id = str(uuid.uuid4())
    results: list[dg.ExecuteInProcessResult | BaseException] = []

    def execute() -> None:
        try:
            results.append(
                job.execute_in_process(
                    instance=instance,
                    partition_key=day.isoformat(),
                    run_id=run_id,
                    raise_on_error=False,
                )
            )
        except BaseException as error:  # reported to the caller below
            results.append(error)

    worker = threading.Thread(target=execute, name="nightly-run")
    worker.start()
    progress = NightlyProgress(steps_total=len(job.nodes_in_topological_order))
    while worker.is_alive():
        worker.join(POLL_S)
        if on_progress is not None:
            on_progress(_read_progress(instance, run_id, progress))
    outcome = results[0]
    if isinstance(outcome, BaseException):
        return NightlyOutcome(run_id, success=False, customers_scored=0, error=str(outcome))
    final = _read_progress(instance, run_id, progress)
    if on_progress is not None:
        on_progress(final)
    error = None if outcome.success else _first_failure(outcome)
    return NightlyOutcome(run_id, outcome.success, final.customers_scored, error)


def _read_progress(
    instance: dg.DagsterInstance, run_id: str, progress: NightlyProgress
) -> NightlyProgress:
    running: dict[str, bool] = {}
    for record in instance.all_logs(run_id):
        step = record.step_key
        event = record.dagster_event
        if event is not None and step is not None:
            if event.event_type == dg.DagsterEventType.STEP_START:
                running[step] = True
            elif event.event_type in (
                dg.DagsterEventType.STEP_SUCCESS,
                dg.DagsterEventType.STEP_FAILURE,
                dg.DagsterEventType.STEP_SKIPPED,
            ):
                running[step] = False
        match = PROGRESS_PATTERN.search(record.user_message or "")
        if match:
            progress.customers_scored = int(match[1].replace(",", ""))
            progress.customers_total = int(match[2].replace(",", ""))
    progress.running = [step for step, active in running.items() if active]
    progress.steps_done = sum(not active for active in running.values())
    return progress


def _first_failure(result: dg.ExecuteInProcessResult) -> str:
    for event in result.all_events:
        if event.is_failure and event.step_key:
            return f"step {event.step_key} failed: {event.message}"
    return "the run failed; open it in the Dagster UI"
