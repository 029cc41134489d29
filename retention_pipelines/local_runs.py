"""Running a job on the local Dagster instance from the command line, with progress.

One way for ``retention demo``, ``train`` and ``score``: the instance config is written under
``$RETENTION_HOME_DIR/dagster_home`` (runs, events and logs in the platform's Postgres, as in
production), the job runs in this process, and its progress is read back from the run's own
structured events while it runs: steps started and finished, and the observations the assets
record as they go (rows read, customers scored, Optuna trials done). The run appears in the
Dagster UI afterwards like any other.

What the libraries print meanwhile (the Dagster log, dbt's output, Optuna's and MLflow's
messages) goes to a log file of the run unless ``verbose``; the terminal keeps the progress.
"""

from __future__ import annotations

import os
import sys
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import dagster as dg

from retention_pipelines.instance import write_local_instance
from retention_pipelines.settings import RetentionSettings

POLL_S = 0.5
_STEP_ENDS = frozenset(
    {
        dg.DagsterEventType.STEP_SUCCESS,
        dg.DagsterEventType.STEP_FAILURE,
        dg.DagsterEventType.STEP_SKIPPED,
    }
)


@dataclass
class RunProgress:
    """What a run has done so far, from its event log."""

    job_name: str
    steps_total: int
    steps_done: int = 0
    running: list[str] = field(default_factory=list)
    # Per asset, the metadata of its latest observation (values as plain Python).
    observed: dict[str, dict[str, Any]] = field(default_factory=dict)

    def describe(self) -> str:
        if self.running:
            return f"{self.job_name}: {', '.join(self.running)}"
        return f"{self.job_name}: {'done' if self.steps_done >= self.steps_total else 'starting'}"


@dataclass(frozen=True)
class RunOutcome:
    run_id: str
    success: bool
    log_path: Path | None
    # Per asset, the metadata of its materialization in this run (values as plain Python).
    materialized: dict[str, dict[str, Any]]
    error: str | None = None


def local_instance(settings: RetentionSettings) -> dg.DagsterInstance:
    """The local instance (its config written, ``DAGSTER_HOME`` set for this process)."""
    home = write_local_instance(settings)
    os.environ["DAGSTER_HOME"] = str(home)
    return dg.DagsterInstance.get()


def run_job(
    settings: RetentionSettings,
    job_name: str,
    *,
    partition_key: str | None = None,
    run_config: Mapping[str, Any] | None = None,
    on_progress: Callable[[RunProgress], None] | None = None,
    log_path: Path | None = None,
) -> RunOutcome:
    """Run ``job_name`` in this process on the local instance; ``on_progress`` hears the
    progress about twice a second. With ``log_path``, everything the run prints goes there."""
    from retention_pipelines.definitions import load_definitions  # noqa: PLC0415

    instance = local_instance(settings)
    job = load_definitions().resolve_job_def(job_name)
    run_id = str(uuid.uuid4())
    results: list[dg.ExecuteInProcessResult | BaseException] = []

    def execute() -> None:
        try:
            results.append(
                job.execute_in_process(
                    run_config=dict(run_config or {}),
                    instance=instance,
                    partition_key=partition_key,
                    run_id=run_id,
                    raise_on_error=False,
                )
            )
        except BaseException as error:  # reported to the caller below
            results.append(error)

    progress = RunProgress(job_name, steps_total=len(job.nodes_in_topological_order))
    with _output_to(log_path):
        worker = threading.Thread(target=execute, name=f"{job_name}-run")
        worker.start()
        cursor: str | None = None
        while worker.is_alive():
            worker.join(POLL_S)
            cursor = _read_events(instance, run_id, progress, cursor)
            if on_progress is not None:
                on_progress(progress)
    _read_events(instance, run_id, progress, cursor)
    if on_progress is not None:
        on_progress(progress)
    outcome = results[0]
    if isinstance(outcome, BaseException):
        return RunOutcome(run_id, False, log_path, {}, error=f"{type(outcome).__name__}: {outcome}")
    return RunOutcome(
        run_id,
        outcome.success,
        log_path,
        _materialized(outcome),
        error=None if outcome.success else _first_failure(outcome),
    )


def _read_events(
    instance: dg.DagsterInstance, run_id: str, progress: RunProgress, cursor: str | None
) -> str | None:
    """Fold the run's events after ``cursor`` into ``progress``; return the new cursor."""
    if instance.get_run_by_id(run_id) is None:
        return cursor
    connection = instance.get_records_for_run(run_id, cursor=cursor)
    running = set(progress.running)
    for record in connection.records:
        event = record.event_log_entry.dagster_event
        if event is None:
            continue
        if event.event_type == dg.DagsterEventType.STEP_START and event.step_key:
            running.add(event.step_key)
        elif event.event_type in _STEP_ENDS and event.step_key:
            running.discard(event.step_key)
            progress.steps_done += 1
        elif event.event_type == dg.DagsterEventType.ASSET_OBSERVATION and event.asset_key:
            observation = event.event_specific_data.asset_observation  # type: ignore[union-attr]
            progress.observed[event.asset_key.to_user_string()] = _plain(observation.metadata)
    progress.running = sorted(running)
    return connection.cursor


def _materialized(result: dg.ExecuteInProcessResult) -> dict[str, dict[str, Any]]:
    return {
        event.asset_key.to_user_string(): _plain(event.materialization.metadata)
        for event in result.get_asset_materialization_events()
        if event.asset_key is not None
    }


def _plain(metadata: Mapping[str, Any]) -> dict[str, Any]:
    return {name: getattr(value, "value", value) for name, value in metadata.items()}


def _first_failure(result: dg.ExecuteInProcessResult) -> str:
    """The first failed step and the last line of its error: what a person reads first."""
    for event in result.all_events:
        if event.event_type == dg.DagsterEventType.STEP_FAILURE and event.step_key:
            error = event.step_failure_data.error
            message = error.message.strip().splitlines()[-1] if error else event.message
            return f"step {event.step_key} failed: {message}"
    return "the run failed; open it in the Dagster UI"


@contextmanager
def _output_to(log_path: Path | None) -> Iterator[None]:
    """Send this process's standard output and error, at the file-descriptor level (so the
    dbt subprocess and C libraries too), to ``log_path``; nothing changes without one."""
    if log_path is None:
        yield
        return
    log_path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with log_path.open("a", encoding="utf-8") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            with redirect_stdout(log), redirect_stderr(log):
                yield
        finally:
            log.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for descriptor in saved:
                os.close(descriptor)


def terminal() -> TextIO:
    """A stream to where standard output goes now, that keeps going there while a run's
    output is sent to its log (a real terminal's descriptor is duplicated first)."""
    try:
        descriptor = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # a test runner's in-memory stream
        return sys.stdout
    return os.fdopen(os.dup(descriptor), "w", buffering=1, encoding="utf-8")
