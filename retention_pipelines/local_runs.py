"""Running a job on the local Dagster instance from the command line, with progress.

One way for ``retention demo``, ``train`` and ``score``: the instance config is written under
``$RETENTION_HOME_DIR/dagster_home`` (runs, events and logs in the platform's Postgres, as in
production), the job runs in this process, and its progress is read back from the run's own
structured events while it runs: steps started and finished, and the observations the assets
record as they go (rows read, customers scored, Optuna trials done). The run appears in the
Dagster UI afterwards like any other.

What the libraries print meanwhile (the Dagster log, dbt's output, Optuna's and MLflow's
messages) goes to a log file of the run unless ``verbose``; the terminal keeps the progress.

A run records the process that runs it (tags ``retention/host``, ``retention/pid``,
``retention/process_started``). A process killed outright cannot mark its run, so the next run
started here first marks as failed every run of this host still starting or started whose
process is gone. SIGINT or SIGTERM to the process stops the run's worker processes (dbt),
marks the run canceled and raises ``RunInterrupted``.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import dagster as dg
from dagster._utils.error import SerializableErrorInfo

from retention_pipelines.core.processes import (
    ProcessName,
    command_line,
    descendants,
    is_gone,
    terminate,
    this_process,
)
from retention_pipelines.instance import write_local_instance
from retention_pipelines.settings import RetentionSettings

logger = logging.getLogger(__name__)

POLL_S = 0.5
# How long a cancelled run's thread may take to end the run once its processes are stopped.
CANCEL_GRACE_S = 5.0
HOST_TAG = "retention/host"
PID_TAG = "retention/pid"
PROCESS_STARTED_TAG = "retention/process_started"
# Statuses of a run that its process has not finished yet.
_UNFINISHED = [
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]
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


@dataclass(frozen=True)
class AbandonedRun:
    """A run marked failed because the process that ran it is gone."""

    run_id: str
    job_name: str
    pid: int

    def describe(self) -> str:
        return (
            f"run {self.run_id} ({self.job_name}) marked failed: "
            f"the process that ran it (pid {self.pid}) is gone"
        )


class RunInterrupted(BaseException):
    """A signal stopped the run: its worker processes were stopped and it is marked canceled.

    A ``BaseException``, like ``KeyboardInterrupt``: nothing on the way up takes it for an
    error to handle."""

    def __init__(self, run_id: str, signal_name: str, log_path: Path | None) -> None:
        super().__init__(f"run {run_id} cancelled by {signal_name}")
        self.run_id = run_id
        self.signal_name = signal_name
        self.log_path = log_path


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
    asset_selection: Sequence[dg.AssetKey] | None = None,
    on_progress: Callable[[RunProgress], None] | None = None,
    log_path: Path | None = None,
) -> RunOutcome:
    """Run ``job_name`` in this process on the local instance (only the assets of
    ``asset_selection``, and their checks, when given); ``on_progress`` hears the progress
    about twice a second. With ``log_path``, everything the run prints goes there.

    Runs of this host whose process is gone are marked failed first. SIGINT or SIGTERM
    during the run stops it and raises ``RunInterrupted``; the run's thread may still be
    going then, so the caller should end the process."""
    from retention_pipelines.definitions import load_definitions  # noqa: PLC0415

    instance = local_instance(settings)
    fail_abandoned_runs(instance)
    job = load_definitions().resolve_job_def(job_name)
    run_id = str(uuid.uuid4())
    results: list[dg.ExecuteInProcessResult | BaseException] = []

    def execute() -> None:
        try:
            results.append(
                job.execute_in_process(
                    run_config=dict(run_config or {}),
                    asset_selection=asset_selection,
                    instance=instance,
                    partition_key=partition_key,
                    run_id=run_id,
                    tags=process_tags(this_process()),
                    raise_on_error=False,
                )
            )
        except BaseException as error:  # reported to the caller below
            results.append(error)

    selected = job.get_subset(asset_selection=set(asset_selection)) if asset_selection else job
    progress = RunProgress(job_name, steps_total=len(selected.nodes_in_topological_order))
    started_before = descendants(os.getpid())
    with _signals_caught() as caught, _output_to(log_path):
        worker = threading.Thread(target=execute, name=f"{job_name}-run", daemon=True)
        worker.start()
        cursor: str | None = None
        while worker.is_alive() and not caught:
            worker.join(POLL_S)
            cursor = _read_events(instance, run_id, progress, cursor)
            if on_progress is not None:
                on_progress(progress)
        if caught:
            _cancel(instance, run_id, caught[0], worker, started_before)
            raise RunInterrupted(run_id, caught[0], log_path)
    _read_events(instance, run_id, progress, cursor)
    if on_progress is not None:
        on_progress(progress)
    outcome = results[0]
    if isinstance(outcome, BaseException):
        # The run could not be executed at all (the instance's database gone, a defect): the
        # caller's error to report, as any other outside a run.
        raise outcome
    return RunOutcome(
        run_id,
        outcome.success,
        log_path,
        _materialized(outcome),
        error=None if outcome.success else _first_failure(outcome),
    )


def process_tags(process: ProcessName) -> dict[str, str]:
    """The tags that name the process running a run."""
    tags = {HOST_TAG: process.host, PID_TAG: str(process.pid)}
    if process.started is not None:
        tags[PROCESS_STARTED_TAG] = process.started
    return tags


def fail_abandoned_runs(instance: dg.DagsterInstance) -> list[AbandonedRun]:
    """Mark failed each run of this host, not finished, whose process is gone (killed, or
    its machine restarted): nothing else would, and it would show as running forever."""
    this = this_process()
    runs = instance.get_runs(
        filters=dg.RunsFilter(statuses=_UNFINISHED, tags={HOST_TAG: this.host})
    )
    abandoned: list[AbandonedRun] = []
    for run in runs:
        if not run.tags.get(PID_TAG, "").isdigit():
            continue
        process = ProcessName(this.host, int(run.tags[PID_TAG]), run.tags.get(PROCESS_STARTED_TAG))
        if not is_gone(process):
            continue
        found = AbandonedRun(run.run_id, run.job_name, process.pid)
        instance.report_run_failed(
            run, message=f"the process that ran it (pid {process.pid}) is gone"
        )
        logger.warning(found.describe())
        abandoned.append(found)
    return abandoned


@contextmanager
def _signals_caught() -> Iterator[list[str]]:
    """Note SIGINT and SIGTERM (their names, in order) instead of acting on them, so the run
    they interrupt can be stopped in order. Only the main thread can set handlers; in another
    thread nothing changes."""
    caught: list[str] = []
    if threading.current_thread() is not threading.main_thread():
        yield caught
        return

    def note(number: int, _frame: object) -> None:
        caught.append(signal.Signals(number).name)

    previous = {number: signal.signal(number, note) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield caught
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler if handler is not None else signal.SIG_DFL)


def _cancel(
    instance: dg.DagsterInstance,
    run_id: str,
    signal_name: str,
    worker: threading.Thread,
    kept: set[int],
) -> None:
    """Stop the processes the run started (those not in ``kept``), give its thread a moment
    to end the run on its own (a step fails when its dbt process ends), then mark it
    canceled: in this order, so that the cancellation has the last word. Python's resource
    tracker is left running: it ends with this process and cleans up after it (stopped now,
    it would only be started again)."""
    workers = {
        pid
        for pid in descendants(os.getpid()) - kept
        if "multiprocessing.resource_tracker" not in command_line(pid)
    }
    terminate(workers)
    if workers:
        worker.join(CANCEL_GRACE_S)
    run = instance.get_run_by_id(run_id)
    if run is not None and run.status not in (
        dg.DagsterRunStatus.SUCCESS,
        dg.DagsterRunStatus.CANCELED,
    ):
        instance.report_run_canceled(run, message=f"cancelled by {signal_name}")


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
    """The first failed step and what its error says first: what a person reads first."""
    for event in result.all_events:
        if event.event_type == dg.DagsterEventType.STEP_FAILURE and event.step_key:
            failure = event.step_failure_data
            if failure.user_failure_data is not None and failure.user_failure_data.description:
                message = _first_line(failure.user_failure_data.description)
            elif failure.error is not None:
                message = _error_line(failure.error)
            else:
                message = _first_line(event.message or "") or "no error recorded"
            return f"step {event.step_key} failed: {message}"
    return "the run failed; open it in the Dagster UI"


def _error_line(error: SerializableErrorInfo) -> str:
    """The first line of the error a step's code raised, with its class's short name.

    Dagster wraps what user code raises ("Error occurred while executing op ...") and keeps
    the original as the cause: the wrappers are skipped. ``dg.Failure`` is a message meant
    for people, so its class is left out."""
    while error.cause is not None and (error.cls_name or "").startswith("Dagster"):
        error = error.cause
    line = _first_line(error.message)
    qualified, separator, text = line.partition(": ")
    name = qualified.rsplit(".", 1)[-1]
    if not separator or name != error.cls_name:
        return line
    return text if name == "Failure" else f"{name}: {text}"


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


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
    restored = saved
    with log_path.open("a", encoding="utf-8") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            with redirect_stdout(log), redirect_stderr(log):
                yield
        except RunInterrupted:
            # The run's thread may go on logging (to standard error) until the process
            # ends: that stays in the file; standard output comes back for the last word.
            restored = saved[:1]
            raise
        finally:
            log.flush()
            for descriptor, original in enumerate(restored, start=1):
                os.dup2(original, descriptor)
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
