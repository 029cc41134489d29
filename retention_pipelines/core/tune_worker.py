"""More processes for one training run's Optuna study: a worker joins a stored study by name,
rebuilds its objective from what the study recorded, and runs trials until the study as a
whole has used its budget.

Optuna shares the study through Postgres: the storage numbers the trials, so workers on any
number of machines never collide. What Optuna leaves open is the budget: its
``MaxTrialsCallback`` looks only after a trial, so two workers finishing together would
both start one more. A worker therefore claims each trial under a Postgres advisory lock of
the study (count the trials finished or running, create the next one only while that is
below the budget, then release the lock and train). Claimed trials carry a heartbeat, so a
worker that dies mid-trial gives its place back once the heartbeat is stale.
"""

from __future__ import annotations

import hashlib
import os
import socket
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit

import optuna
import psycopg

from retention_pipelines.core import database
from retention_pipelines.core.features import fit_encoder
from retention_pipelines.core.training import (
    FINISHED,
    StudyRecipe,
    data_fingerprint,
    objective,
    split_training_set,
    study_pruner,
)
from retention_pipelines.core.warehouse.features import read_labelled_on

# How often a running trial says it is alive, and after how long without a word it is
# taken for dead (failed, so that its place in the budget goes to another trial).
HEARTBEAT_S = 30
GRACE_S = 120
# The trial user attribute naming the process that ran the trial.
WORKER_ATTR = "worker"
CLAIMED = (*FINISHED, optuna.trial.TrialState.RUNNING)
_POSTGRES_SCHEMES = ("postgresql", "postgres")


class TuneWorkerError(RuntimeError):
    """The study cannot be joined; the message says why and what to do."""


@dataclass(frozen=True)
class TrialReport:
    """One trial this worker ran, and where the study stands after it."""

    number: int
    state: str
    value: float | None
    study_finished: int
    study_budget: int
    best_number: int | None
    best_value: float | None

    def line(self) -> str:
        """One line a person or a log collector follows the worker by."""
        value = "" if self.value is None else f" {self.value:.4f}"
        return (
            f"trial {self.number} {self.state}{value}; study {self.study_finished}/"
            f"{self.study_budget} finished, best {_best_text(self.best_number, self.best_value)}"
        )


@dataclass(frozen=True)
class WorkerReport:
    study_name: str
    worker: str
    trials_run: int
    study_finished: int
    study_budget: int
    best_number: int | None
    best_value: float | None

    def line(self) -> str:
        return (
            f"{self.worker} ran {self.trials_run} trial(s) of {self.study_name}; the study has "
            f"{self.study_finished}/{self.study_budget} finished, best "
            f"{_best_text(self.best_number, self.best_value)}"
        )


def _best_text(number: int | None, value: float | None) -> str:
    return "none yet" if number is None or value is None else f"trial {number} ({value:.4f})"


TrialListener = Callable[[TrialReport], None]


def worker_identity() -> str:
    """This process, as trials record it: host name and process id."""
    return f"{socket.gethostname()}:{os.getpid()}"


def worker_seed(recipe: StudyRecipe, worker: str) -> int:
    """The sampler seed of one worker: fixed by the study's seed and the worker, different
    between workers (equally seeded samplers would propose the same first trials)."""
    digest = hashlib.blake2b(f"{recipe.seed}:{worker}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big")


def study_storage(url: str) -> optuna.storages.RDBStorage:
    """The platform's Optuna storage (the warehouse database) with heartbeats on; refuses
    anything but Postgres, the only storage several machines can share here."""
    scheme = urlsplit(url).scheme.split("+", 1)[0]
    if scheme not in _POSTGRES_SCHEMES:
        raise TuneWorkerError(
            f"tune-worker shares studies through Postgres; {database.masked_url(url)} is a "
            f"{scheme or 'local'} URL (set RETENTION_DATABASE_URL to the platform's server)"
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(
            database.sqlalchemy_url(url), heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S
        )


def load_recipe(storage: optuna.storages.BaseStorage, study_name: str) -> StudyRecipe:
    """The recipe of a stored study; a missing study or one without a recipe is an error
    that lists the studies there are."""
    summaries = optuna.get_all_study_summaries(storage, include_best_trial=False)
    attrs = next((s.user_attrs for s in summaries if s.study_name == study_name), None)
    if attrs is None:
        listing = ", ".join(f"{s.study_name} ({s.n_trials} trials)" for s in summaries)
        raise TuneWorkerError(
            f"no study named {study_name!r} in the platform's storage; "
            + (f"stored studies: {listing}" if listing else "none is stored yet")
            + " (a training run creates one per model family: churn-<run id>-<family>)"
        )
    try:
        return StudyRecipe.from_user_attrs(attrs)
    except (KeyError, ValueError) as error:
        raise TuneWorkerError(
            f"study {study_name!r} does not record how to rebuild its objective ({error}); "
            "only studies created by a training run can be joined"
        ) from error


def rebuild_objective(url: str, recipe: StudyRecipe) -> Callable[[optuna.Trial], float]:
    """The study's objective, on the training data it recorded: the same labelled
    snapshots, split with the same seed, checked against the study's fingerprint."""
    frame = read_labelled_on(url, recipe.snapshot_dates)
    split = split_training_set(frame, seed=recipe.seed)
    if data_fingerprint(split) != recipe.data_fingerprint:
        dates = ", ".join(day.isoformat() for day in recipe.snapshot_dates)
        raise TuneWorkerError(
            f"the labelled rows of {dates} are not the ones the study was tuned on "
            "(the snapshots were rebuilt since): its trials would not be comparable"
        )
    return objective(recipe.kind, fit_encoder(split.train), split, recipe.seed)


def run_worker(
    url: str, study_name: str, trials: int, *, on_trial: TrialListener | None = None
) -> WorkerReport:
    """Join ``study_name`` and run at most ``trials`` of its trials, fewer when the study
    reaches its budget; every trial records this worker."""
    storage = study_storage(url)
    recipe = load_recipe(storage, study_name)
    worker = worker_identity()
    study = optuna.load_study(
        study_name=study_name,
        storage=storage,
        sampler=optuna.samplers.TPESampler(seed=worker_seed(recipe, worker), constant_liar=True),
        pruner=study_pruner(),
    )
    func = rebuild_objective(url, recipe)
    run = 0
    with database.connect(url, autocommit=True) as lock_connection:
        while run < trials:
            trial = _claim_and_run(
                study, func, recipe.trials_budget, lock_connection, worker=worker
            )
            if trial is None:
                break
            run += 1
            if on_trial:
                on_trial(_trial_report(study, trial, recipe.trials_budget))
    best = _best(study)
    return WorkerReport(
        study_name=study_name,
        worker=worker,
        trials_run=run,
        study_finished=len(study.get_trials(deepcopy=False, states=FINISHED)),
        study_budget=recipe.trials_budget,
        best_number=best.number if best else None,
        best_value=best.value if best else None,
    )


def _claim_and_run(
    study: optuna.Study,
    func: Callable[[optuna.Trial], float],
    budget: int,
    lock_connection: psycopg.Connection,
    *,
    worker: str,
) -> optuna.trial.FrozenTrial | None:
    """Run one trial if the study's budget has room for it, else None.

    The study's lock is held from the count until Optuna has created the trial (the
    objective releases it first thing), so no other worker can count in between.
    """
    ran: list[optuna.trial.FrozenTrial] = []
    with _study_lock(lock_connection, study.study_name) as release:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        if len(study.get_trials(deepcopy=False, states=CLAIMED)) >= budget:
            return None

        def claimed(trial: optuna.Trial) -> float:
            release()
            trial.set_user_attr(WORKER_ATTR, worker)
            return func(trial)

        study.optimize(claimed, n_trials=1, callbacks=[lambda _, trial: ran.append(trial)])
    return ran[0]


@contextmanager
def _study_lock(connection: psycopg.Connection, study_name: str) -> Iterator[Callable[[], None]]:
    """A session advisory lock named after the study; yields a function that releases it
    early (it is released on exit otherwise)."""
    key = int.from_bytes(
        hashlib.blake2b(f"optuna-study:{study_name}".encode(), digest_size=8).digest(),
        "big",
        signed=True,
    )
    connection.execute("select pg_advisory_lock(%s)", (key,))
    held = True

    def release() -> None:
        nonlocal held
        if held:
            connection.execute("select pg_advisory_unlock(%s)", (key,))
            held = False

    try:
        yield release
    finally:
        release()


def _best(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    try:
        return study.best_trial
    except ValueError:  # no trial has completed yet
        return None


def _trial_report(study: optuna.Study, trial: optuna.trial.FrozenTrial, budget: int) -> TrialReport:
    best = _best(study)
    return TrialReport(
        number=trial.number,
        state=trial.state.name.lower(),
        value=trial.value,
        study_finished=len(study.get_trials(deepcopy=False, states=FINISHED)),
        study_budget=budget,
        best_number=best.number if best else None,
        best_value=best.value if best else None,
    )
