"""``retention tune-worker``: processes that join a training run's Optuna study in Postgres
share its trial budget, never collide on trial numbers, and leave the study's best trial
where training reads it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
import pandas as pd
import pytest
from typer.testing import CliRunner

from retention_pipelines.cli import app
from retention_pipelines.core import database, tune_worker
from retention_pipelines.core import training as tr
from retention_pipelines.core.features import fit_encoder
from retention_pipelines.core.tune_worker import (
    WORKER_ATTR,
    TuneWorkerError,
    rebuild_objective,
    run_worker,
    study_storage,
)
from retention_pipelines.core.warehouse.features import read_labelled
from retention_pipelines_tests.helpers import TELCO_DAY, build_snapshot, platform_settings

RETENTION = str(Path(sys.executable).parent / "retention")
SEED = 3
CUSTOMERS = 1_500  # enough for a stable split, few enough for trials of a second or less

pytestmark = pytest.mark.slow  # the module's snapshot is built by dbt


@pytest.fixture(scope="module")
def warehouse(module_database_url: str, telco_csv: Path, tmp_path_factory) -> str:
    """The first customers of the Telco data as the labelled snapshot of ``TELCO_DAY``,
    ingested and turned into features by the real dbt project."""
    folder = tmp_path_factory.mktemp("telco")
    subset = folder / "telco_subset.csv"
    pd.read_csv(telco_csv, dtype=str, keep_default_na=False).head(CUSTOMERS).to_csv(
        subset, index=False
    )
    build_snapshot(module_database_url, subset, TELCO_DAY, folder / "dbt")
    return module_database_url


@pytest.fixture(scope="module")
def split(warehouse: str) -> tr.TrainingSplit:
    """The training data as the training_set asset reads and splits it."""
    frame, _ = read_labelled(warehouse, snapshots=1)
    return tr.split_training_set(frame, seed=SEED)


def _new_study(url: str, split: tr.TrainingSplit, trials: int) -> str:
    """An XGBoost study created as a training run creates it, with no trial run yet."""
    name = f"churn-test{uuid.uuid4().hex[:6]}-xgboost"
    tr.create_study(
        "xgboost",
        study_name=name,
        storage=optuna.storages.RDBStorage(database.sqlalchemy_url(url)),
        split=split,
        budget=tr.TuningBudget(trials=trials),
        seed=SEED,
    )
    return name


def _worker(url: str, home: Path, study: str, trials: int) -> subprocess.Popen[str]:
    env = {**os.environ, "RETENTION_DATABASE_URL": url, "RETENTION_HOME_DIR": str(home)}
    return subprocess.Popen(
        [RETENTION, "tune-worker", "--study", study, "--trials", str(trials)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )  # fmt: skip


def test_two_workers_finish_one_study_within_its_budget(
    warehouse: str, split: tr.TrainingSplit, tmp_path: Path
) -> None:
    budget, each = 5, 4  # each worker alone would stop short of the budget: both take part
    name = _new_study(warehouse, split, trials=budget)
    workers = [_worker(warehouse, tmp_path, name, trials=each) for _ in range(2)]
    outputs = [worker.communicate(timeout=180)[0] for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0], outputs
    study = optuna.load_study(study_name=name, storage=study_storage(warehouse))
    trials = study.get_trials()

    assert [trial.number for trial in trials] == list(range(budget))
    assert {trial.state for trial in trials} <= set(tr.FINISHED)
    ran_by = pd.Series([trial.user_attrs[WORKER_ATTR] for trial in trials]).value_counts()
    for worker, output in zip(workers, outputs, strict=True):
        identity = f"{socket.gethostname()}:{worker.pid}"
        trial_lines = [line for line in output.splitlines() if line.startswith("trial ")]
        assert len(trial_lines) == ran_by.get(identity, 0) >= budget - each, output
        assert f"{identity} ran {len(trial_lines)} trial(s) of {name}" in output
    completed = [trial for trial in trials if trial.state == optuna.trial.TrialState.COMPLETE]
    best = max(completed, key=lambda trial: trial.value or 0.0)
    assert study.best_trial.number == best.number

    # Training, resuming the study, finds its budget used and reads the workers' best trial.
    resumed = tr.tune(
        "xgboost", study_name=name, storage=study_storage(warehouse),
        encoder=fit_encoder(split.train), split=split,
        budget=tr.TuningBudget(trials=budget), seed=SEED,
    )  # fmt: skip
    assert resumed.trials == budget
    assert (resumed.params, resumed.best_value) == (best.params, best.value)


def test_a_study_records_how_to_rebuild_its_objective(
    warehouse: str, split: tr.TrainingSplit
) -> None:
    name = _new_study(warehouse, split, trials=5)
    attrs = optuna.load_study(study_name=name, storage=study_storage(warehouse)).user_attrs
    assert attrs == {
        "model_kind": "xgboost",
        "seed": SEED,
        "snapshot_dates": [TELCO_DAY],
        "trials_budget": 5,
        "data_fingerprint": tr.data_fingerprint(split),
    }
    recipe = tr.StudyRecipe.from_user_attrs(attrs)
    assert rebuild_objective(warehouse, recipe) is not None
    tampered = tr.StudyRecipe.from_user_attrs({**attrs, "data_fingerprint": "0" * 32})
    with pytest.raises(TuneWorkerError, match="not the ones the study was tuned on"):
        rebuild_objective(warehouse, tampered)


def test_a_worker_joins_no_unknown_study_and_says_which_exist(
    warehouse: str, split: tr.TrainingSplit, tmp_path: Path, server_url: str
) -> None:
    name = _new_study(warehouse, split, trials=2)
    with platform_settings(warehouse, server_url, tmp_path):
        result = CliRunner().invoke(app, ["tune-worker", "--study", "churn-nope", "--trials", "1"])
    assert result.exit_code == 1
    assert "no study named 'churn-nope'" in result.output
    assert f"{name} (0 trials)" in result.output


def test_a_study_without_a_recipe_or_storage_outside_postgres_is_refused(
    warehouse: str, tmp_path: Path
) -> None:
    bare = f"bare-{uuid.uuid4().hex[:6]}"
    optuna.create_study(study_name=bare, storage=study_storage(warehouse))
    with pytest.raises(TuneWorkerError, match="does not record how to rebuild its objective"):
        run_worker(warehouse, bare, trials=1)
    with pytest.raises(TuneWorkerError, match="shares studies through Postgres"):
        run_worker(f"sqlite:///{tmp_path / 'studies.db'}", bare, trials=1)


def test_a_dead_workers_trial_gives_its_place_in_the_budget_back(
    warehouse: str, split: tr.TrainingSplit, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tune_worker, "GRACE_S", 1)
    name = _new_study(warehouse, split, trials=2)
    storage = study_storage(warehouse)
    plain = optuna.storages.RDBStorage(database.sqlalchemy_url(warehouse))  # as a worker's ask
    abandoned = optuna.load_study(study_name=name, storage=plain).ask()
    study_id = storage.get_study_id_from_name(name)
    storage.record_heartbeat(storage.get_trial_id_from_study_id_trial_number(study_id, 0))
    time.sleep(1.5)  # the dead worker's heartbeat goes stale

    report = run_worker(warehouse, name, trials=5)

    states = [trial.state for trial in optuna.load_study(study_name=name, storage=storage).trials]
    assert abandoned.number == 0 and states[0] == optuna.trial.TrialState.FAIL
    assert report.trials_run == 2 and set(states[1:]) <= set(tr.FINISHED)
    assert (report.study_finished, report.study_budget) == (2, 2)
