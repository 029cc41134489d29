"""Model search: a logistic baseline, Optuna-tuned XGBoost and CatBoost, calibration.

The winner is chosen on validation data and calibrated there; the test split is only read to
report metrics and to check the winner against the baseline, so the figures are honest.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Literal

import catboost
import numpy as np
import optuna
import pandas as pd
import xgboost as xgb
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    log_loss,
    roc_auc_score,
)
from sklearn.model_selection import StratifiedKFold

from retention_pipelines.churn_model.encoding import FeatureEncoder
from retention_pipelines.churn_model.model import ModelKind
from retention_pipelines.churn_model.parts import Calibrator as CalibratorPart
from retention_pipelines.churn_model.parts import LinearPart, logit, tree_data, tree_margin
from retention_pipelines.core.features import LABEL_COLUMN

logger = logging.getLogger(__name__)

MIN_LABELLED_ROWS = 200
THREADS = 2  # this platform's machines have two cores; both boosters use both


class TrainingDataError(ValueError):
    """The labelled data cannot support a training run."""


class TrainingQualityError(RuntimeError):
    """The tuned model does not beat the linear baseline: a bug, not a result."""


@dataclass(frozen=True)
class TrainingSplit:
    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame

    def summary(self) -> dict[str, dict[str, float]]:
        return {
            name: {"rows": len(part), "churn_rate": float(part[LABEL_COLUMN].mean())}
            for name, part in (
                ("train", self.train),
                ("validation", self.validation),
                ("test", self.test),
            )
        }


def split_training_set(
    frame: pd.DataFrame, *, seed: int, validation_share: float = 0.2, test_share: float = 0.2
) -> TrainingSplit:
    """Stratified train / validation / test split, fixed by the seed and stable per customer.

    Within each class, customers are ordered by a seeded hash of their id and cut at the
    shares. A customer therefore lands in the same split in every training that uses the
    seed, whatever else the snapshot holds (only customers whose hash sits right at a cut can
    move). That keeps the promotion gate fair: the test customers the challenger is judged
    on were never in the champion's training data either, as they would be with a fresh
    random split of each new snapshot.
    """
    labelled = frame[frame[LABEL_COLUMN].notna()].copy()
    if len(labelled) < MIN_LABELLED_ROWS:
        raise TrainingDataError(
            f"{len(labelled)} labelled rows; at least {MIN_LABELLED_ROWS} are needed to train"
        )
    labelled[LABEL_COLUMN] = labelled[LABEL_COLUMN].astype(bool).astype(int)
    if labelled[LABEL_COLUMN].nunique() < 2:
        raise TrainingDataError("the labelled rows hold one class only: nothing to learn")
    position = customer_hash(labelled["customer_id"], seed=seed)
    rank = position.groupby(labelled[LABEL_COLUMN]).rank(method="first", pct=True)
    test = rank <= test_share
    validation = ~test & (rank <= test_share + validation_share)
    return TrainingSplit(
        train=labelled[~test & ~validation],
        validation=labelled[validation],
        test=labelled[test],
    )


def customer_hash(customer_ids: pd.Series, *, seed: int) -> pd.Series:
    """A seeded, platform-independent position in [0, 1) for each customer id."""
    return customer_ids.map(
        lambda customer: (
            int.from_bytes(
                hashlib.blake2b(f"{seed}:{customer}".encode(), digest_size=8).digest(), "big"
            )
            / 2**64
        )
    )


def evaluate(labels: np.ndarray, probabilities: np.ndarray) -> dict[str, float]:
    """The metrics logged for every model: ranking, calibration and targeting quality."""
    labels = np.asarray(labels, dtype=int)
    probabilities = np.clip(np.asarray(probabilities, dtype=float), 1e-7, 1 - 1e-7)
    order = np.argsort(-probabilities, kind="stable")
    top = order[: max(1, len(order) // 10)]
    base_rate = labels.mean()
    return {
        "roc_auc": float(roc_auc_score(labels, probabilities)),
        "pr_auc": float(average_precision_score(labels, probabilities)),
        "brier": float(brier_score_loss(labels, probabilities)),
        "log_loss": float(log_loss(labels, probabilities)),
        "top_decile_lift": float(labels[top].mean() / base_rate) if base_rate else 0.0,
        "recall_top_10pct": float(labels[top].sum() / max(1, labels.sum())),
    }


def labels_of(frame: pd.DataFrame) -> np.ndarray:
    return frame[LABEL_COLUMN].astype(int).to_numpy()


@dataclass
class Baseline:
    """The logistic model: the bar every training must clear, and the linear part of the
    final blend."""

    encoder: FeatureEncoder
    model: LogisticRegression
    design_means: pd.Series

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        return self.model.predict_proba(self._design(frame))[:, 1]

    def margin(self, frame: pd.DataFrame) -> np.ndarray:
        """Log-odds of churn."""
        return self.model.decision_function(self._design(frame))

    def to_part(self) -> LinearPart:
        """The fitted coefficients as the model artefact keeps them."""
        return LinearPart.from_fitted(self.model, self.design_means)

    def _design(self, frame: pd.DataFrame) -> np.ndarray:
        return self.encoder.linear_matrix(self.encoder.tree_input(frame))


def fit_baseline(encoder: FeatureEncoder, split: TrainingSplit, *, seed: int) -> Baseline:
    design = encoder.linear_frame(split.train)
    model = LogisticRegression(max_iter=2_000, C=1.0, random_state=seed)
    model.fit(design.to_numpy(dtype=float), labels_of(split.train))
    return Baseline(encoder=encoder, model=model, design_means=design.mean())


# Told (model kind, trials done, trials budgeted) after every trial of a study.
TrialCallback = Callable[[str, int, int], None]


@dataclass(frozen=True)
class TuningBudget:
    trials: int = 25
    timeout_s: float = 90.0


@dataclass
class TunedCandidate:
    kind: ModelKind
    params: dict[str, Any]
    best_value: float
    trials: int
    pruned: int
    seconds: float
    history: list[dict[str, Any]] = field(default_factory=list)
    timed_out: bool = False
    """The wall-clock timeout stopped the study before its trial count: a rerun on a faster
    or slower machine may run a different number of trials."""


class _XGBoostPruning(xgb.callback.TrainingCallback):
    """Reports validation AUC to Optuna every few rounds and stops a hopeless trial."""

    def __init__(self, trial: optuna.Trial, every: int = 10) -> None:
        self.trial = trial
        self.every = every

    def after_iteration(self, model: Any, epoch: int, evals_log: dict[str, Any]) -> bool:
        if epoch % self.every:
            return False
        score = evals_log["validation"]["auc"][-1]
        self.trial.report(float(score), step=epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at round {epoch} with validation AUC {score:.4f}")
        return False


def _xgb_params(trial: optuna.Trial, seed: int) -> dict[str, Any]:
    return {
        "objective": "binary:logistic",
        "eval_metric": "auc",
        "tree_method": "hist",
        "nthread": THREADS,
        "seed": seed,
        "eta": trial.suggest_float("eta", 0.01, 0.2, log=True),
        "max_depth": trial.suggest_int("max_depth", 2, 6),
        "min_child_weight": trial.suggest_float("min_child_weight", 1.0, 20.0, log=True),
        "subsample": trial.suggest_float("subsample", 0.6, 1.0),
        "colsample_bytree": trial.suggest_float("colsample_bytree", 0.5, 1.0),
        "lambda": trial.suggest_float("lambda", 1e-3, 10.0, log=True),
        "max_cat_to_onehot": 8,
    }


def fit_xgboost(
    params: dict[str, Any],
    encoder: FeatureEncoder,
    split: TrainingSplit,
    *,
    callbacks: list[xgb.callback.TrainingCallback] | None = None,
    rounds: int = 1_000,
) -> xgb.Booster:
    """Boost on train with early stopping on validation (the round count is tuned too)."""
    train = xgb.DMatrix(
        encoder.tree_input(split.train), labels_of(split.train), enable_categorical=True
    )
    validation = xgb.DMatrix(
        encoder.tree_input(split.validation), labels_of(split.validation), enable_categorical=True
    )
    return xgb.train(
        {**params, "objective": "binary:logistic", "eval_metric": "auc", "nthread": THREADS},
        train,
        num_boost_round=rounds,
        evals=[(validation, "validation")],
        early_stopping_rounds=50,
        callbacks=callbacks or [],
        verbose_eval=False,
    )


def booster_margin(
    booster: xgb.Booster | catboost.CatBoostClassifier, encoder: FeatureEncoder, frame: pd.DataFrame
) -> np.ndarray:
    """Either booster's log-odds of churn (XGBoost: up to the best, early-stopped round)."""
    return tree_margin(booster, tree_data(booster, encoder.tree_input(frame), encoder.categorical))


def predict_xgboost(
    booster: xgb.Booster, encoder: FeatureEncoder, frame: pd.DataFrame
) -> np.ndarray:
    return _sigmoid(booster_margin(booster, encoder, frame))


def _catboost_params(trial: optuna.Trial, seed: int) -> dict[str, Any]:
    # Nightly scoring explains every CatBoost row exactly, at a cost that grows with the tree
    # count: at most 400 trees (a faster learning rate makes up for it) and depth 6 keep a
    # million customers within the scoring budget.
    return {
        "iterations": trial.suggest_int("iterations", 100, 400, step=50),
        "depth": trial.suggest_int("depth", 3, 6),
        "learning_rate": trial.suggest_float("learning_rate", 0.02, 0.3, log=True),
        "l2_leaf_reg": trial.suggest_float("l2_leaf_reg", 1.0, 20.0, log=True),
        "random_seed": seed,
    }


def fit_catboost(
    params: dict[str, Any], encoder: FeatureEncoder, train: pd.DataFrame
) -> catboost.CatBoostClassifier:
    model = catboost.CatBoostClassifier(
        **params,
        loss_function="Logloss",
        thread_count=THREADS,
        verbose=False,
        allow_writing_files=False,
    )
    model.fit(
        encoder.catboost_from_tree(encoder.tree_input(train)),
        labels_of(train),
        cat_features=list(encoder.categorical),
    )
    return model


def predict_catboost(
    model: catboost.CatBoostClassifier, encoder: FeatureEncoder, frame: pd.DataFrame
) -> np.ndarray:
    return _sigmoid(booster_margin(model, encoder, frame))


def _sigmoid(margin: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(margin, dtype=float)))


TREE_WEIGHTS: tuple[float, ...] = tuple(np.round(np.arange(0.5, 1.0001, 0.05), 2))


def choose_tree_weight(
    tree_margin: np.ndarray, linear_margin: np.ndarray, labels: np.ndarray
) -> float:
    """The weight of the tree model in a log-odds blend with the logistic model, chosen by
    log loss on validation data.

    On small tabular data such as Telco the linear model ranks about as well as the boosters;
    blending the two log-odds is steadier than either alone. The trees keep at least half of
    the weight: the model stays a tree model with a linear correction, not the baseline.
    Both parts are additive in log-odds, so explanations stay exact.
    """
    losses = {
        weight: log_loss(
            labels, _sigmoid(weight * tree_margin + (1 - weight) * linear_margin), labels=[0, 1]
        )
        for weight in TREE_WEIGHTS
    }
    return float(min(TREE_WEIGHTS, key=lambda weight: (losses[weight], -weight)))


def tune(
    kind: ModelKind,
    *,
    study_name: str,
    storage: str | optuna.storages.BaseStorage,
    encoder: FeatureEncoder,
    split: TrainingSplit,
    budget: TuningBudget,
    seed: int,
    on_trial: TrialCallback | None = None,
) -> TunedCandidate:
    """Run (or resume) an Optuna study for one model family, pruning hopeless trials.

    XGBoost reports validation AUC every ten boosting rounds; CatBoost reports the running
    mean AUC after each of three cross-validation folds on the training data. The study is
    stored (Postgres in the platform), so a second call with the same name continues it and
    several workers can share it: it records how to rebuild its objective
    (:class:`StudyRecipe`), and this run stops as soon as the study as a whole has finished
    its budget. ``on_trial`` hears (kind, trials done, trials budgeted) after every trial.
    """
    study = create_study(
        kind, study_name=study_name, storage=storage, split=split, budget=budget, seed=seed
    )
    started = time.perf_counter()
    finished = _count(study, optuna.trial.TrialState.COMPLETE)
    remaining = max(0, budget.trials - finished - _count(study, optuna.trial.TrialState.PRUNED))
    callbacks: list[Callable[[optuna.Study, optuna.trial.FrozenTrial], None]] = [
        optuna.study.MaxTrialsCallback(budget.trials, states=FINISHED)
    ]
    if on_trial:
        callbacks.append(lambda study, trial: on_trial(kind, len(study.trials), budget.trials))
    study.optimize(
        objective(kind, encoder, split, seed),
        n_trials=remaining,
        timeout=budget.timeout_s,
        n_jobs=1,
        callbacks=callbacks,
    )
    if _count(study, optuna.trial.TrialState.COMPLETE) == 0:
        raise TrainingDataError(f"no {kind} trial completed within the budget {budget}")
    timed_out = len(study.trials) < budget.trials
    if timed_out:
        logger.warning(
            "%s study stopped by its %.0f s timeout after %d of %d trials; the result depends "
            "on the machine's speed",
            kind, budget.timeout_s, len(study.trials), budget.trials,
        )  # fmt: skip
    return TunedCandidate(
        kind=kind,
        params=dict(study.best_params),
        best_value=float(study.best_value),
        trials=len(study.trials),
        pruned=_count(study, optuna.trial.TrialState.PRUNED),
        seconds=time.perf_counter() - started,
        history=[
            {"number": t.number, "state": t.state.name, "value": t.value, **t.params}
            for t in study.trials
        ],
        timed_out=timed_out,
    )


# The trial states that use up a study's budget: a failed trial leaves its place to another.
FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


@dataclass(frozen=True)
class StudyRecipe:
    """What a stored study records (as its user attributes) so that any process can rebuild
    its objective and join it: the model family, the seed of the split and of the models,
    the labelled snapshot dates the training data was read from, the study's trial budget,
    and a fingerprint of the split that a joining process must reproduce (its trials are
    only comparable with the others' if it trains and validates on the same rows)."""

    kind: ModelKind
    seed: int
    snapshot_dates: tuple[date, ...]
    trials_budget: int
    data_fingerprint: str

    @classmethod
    def of(
        cls, kind: ModelKind, split: TrainingSplit, *, seed: int, budget: TuningBudget
    ) -> StudyRecipe:
        dates = {
            pd.Timestamp(day).date()
            for part in (split.train, split.validation, split.test)
            if "snapshot_date" in part.columns
            for day in part["snapshot_date"].unique()
        }
        return cls(
            kind=kind,
            seed=seed,
            snapshot_dates=tuple(sorted(dates)),
            trials_budget=budget.trials,
            data_fingerprint=data_fingerprint(split),
        )

    def user_attrs(self) -> dict[str, Any]:
        """The recipe as JSON-friendly study user attributes."""
        return {
            "model_kind": self.kind,
            "seed": self.seed,
            "snapshot_dates": [day.isoformat() for day in self.snapshot_dates],
            "trials_budget": self.trials_budget,
            "data_fingerprint": self.data_fingerprint,
        }

    @classmethod
    def from_user_attrs(cls, attrs: dict[str, Any]) -> StudyRecipe:
        """The recipe a study recorded; KeyError names what a study created without one
        lacks."""
        kind = attrs["model_kind"]
        if kind not in ("xgboost", "catboost"):
            raise ValueError(f"unknown model kind {kind!r}")
        return cls(
            kind=kind,
            seed=int(attrs["seed"]),
            snapshot_dates=tuple(date.fromisoformat(day) for day in attrs["snapshot_dates"]),
            trials_budget=int(attrs["trials_budget"]),
            data_fingerprint=str(attrs["data_fingerprint"]),
        )


def data_fingerprint(split: TrainingSplit) -> str:
    """A digest of every row and column of the three parts, in order: equal when two
    processes read and split the same training data."""
    digest = hashlib.blake2b(digest_size=16)
    for part in (split.train, split.validation, split.test):
        digest.update(",".join(map(str, part.columns)).encode())
        digest.update(pd.util.hash_pandas_object(part, index=False).to_numpy().tobytes())
    return digest.hexdigest()


def study_pruner() -> optuna.pruners.BasePruner:
    """The pruner of every process that runs a study's trials (pruners are not stored)."""
    return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)


def create_study(
    kind: ModelKind,
    *,
    study_name: str,
    storage: str | optuna.storages.BaseStorage,
    split: TrainingSplit,
    budget: TuningBudget,
    seed: int,
) -> optuna.Study:
    """Create (or load) a family's stored study and record its :class:`StudyRecipe`, so
    that ``retention tune-worker`` processes can join it."""
    study = optuna.create_study(
        study_name=study_name,
        storage=storage,
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=study_pruner(),
        load_if_exists=True,
    )
    recipe = StudyRecipe.of(kind, split, seed=seed, budget=budget)
    for key, value in recipe.user_attrs().items():
        study.set_user_attr(key, value)
    logger.info(
        "study %s: more processes join it with `retention tune-worker --study %s --trials N`",
        study_name, study_name,
    )  # fmt: skip
    return study


def objective(
    kind: ModelKind, encoder: FeatureEncoder, split: TrainingSplit, seed: int
) -> Callable[[optuna.Trial], float]:
    """A family's objective: validation ROC AUC of a trial's parameters (higher is better)."""
    if kind == "xgboost":
        return _xgboost_objective(encoder, split, seed)
    return _catboost_objective(encoder, split, seed)


def _count(study: optuna.Study, state: optuna.trial.TrialState) -> int:
    return sum(trial.state == state for trial in study.trials)


def _xgboost_objective(
    encoder: FeatureEncoder, split: TrainingSplit, seed: int
) -> Callable[[optuna.Trial], float]:
    def objective(trial: optuna.Trial) -> float:
        booster = fit_xgboost(
            _xgb_params(trial, seed), encoder, split, callbacks=[_XGBoostPruning(trial)]
        )
        return float(booster.best_score)

    return objective


def _catboost_objective(
    encoder: FeatureEncoder, split: TrainingSplit, seed: int
) -> Callable[[optuna.Trial], float]:
    folds = list(
        StratifiedKFold(n_splits=3, shuffle=True, random_state=seed).split(
            split.train, labels_of(split.train)
        )
    )

    def objective(trial: optuna.Trial) -> float:
        params = _catboost_params(trial, seed)
        scores = []
        for step, (fit_rows, score_rows) in enumerate(folds):
            model = fit_catboost(params, encoder, split.train.iloc[fit_rows])
            held_out = split.train.iloc[score_rows]
            scores.append(
                roc_auc_score(labels_of(held_out), predict_catboost(model, encoder, held_out))
            )
            trial.report(float(np.mean(scores)), step=step)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned after fold {step + 1}")
        return float(np.mean(scores))

    return objective


Calibration = Literal["isotonic", "sigmoid"]
ISOTONIC_MARGIN = 0.001


@dataclass
class Calibrator:
    """Maps a model's raw score to a probability; fitted on validation data only, with
    scikit-learn, and kept in the model artefact as its fitted numbers (:meth:`to_part`)."""

    method: Calibration
    isotonic: IsotonicRegression | None = None
    sigmoid: LogisticRegression | None = None

    def __call__(self, scores: np.ndarray) -> np.ndarray:
        scores = np.asarray(scores, dtype=float)
        if self.method == "isotonic":
            assert self.isotonic is not None  # noqa: S101
            return np.clip(self.isotonic.predict(scores), 0.0, 1.0)
        assert self.sigmoid is not None  # noqa: S101
        return self.sigmoid.predict_proba(_logit(scores).reshape(-1, 1))[:, 1]

    def to_part(self) -> CalibratorPart:
        """The fitted calibrator as the model artefact keeps it."""
        fitted = self.isotonic if self.method == "isotonic" else self.sigmoid
        return CalibratorPart.from_fitted(self.method, fitted)


def _logit(scores: np.ndarray) -> np.ndarray:
    return logit(np.asarray(scores))


def fit_calibrator(method: Calibration, scores: np.ndarray, labels: np.ndarray) -> Calibrator:
    if method == "isotonic":
        isotonic = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0)
        isotonic.fit(scores, labels)
        return Calibrator(method="isotonic", isotonic=isotonic)
    sigmoid = LogisticRegression(C=1e6)
    sigmoid.fit(_logit(np.asarray(scores)).reshape(-1, 1), labels)
    return Calibrator(method="sigmoid", sigmoid=sigmoid)


def choose_calibrator(scores: np.ndarray, labels: np.ndarray, *, seed: int) -> Calibrator:
    """Isotonic or sigmoid, whichever has the lower cross-validated Brier score on the
    validation data; then fitted on all of it. Isotonic can overfit small data, which the
    cross-validation sees and in-sample fitting would not."""
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=seed)
    briers: dict[Calibration, float] = {}
    for method in ("sigmoid", "isotonic"):
        predictions = np.zeros(len(scores))
        for fit_rows, score_rows in folds.split(scores.reshape(-1, 1), labels):
            calibrator = fit_calibrator(method, scores[fit_rows], labels[fit_rows])
            predictions[score_rows] = calibrator(scores[score_rows])
        briers[method] = float(brier_score_loss(labels, predictions))
    # Isotonic steps tie scores together, which costs ranking quality (ROC AUC); it has to
    # earn that with a clearly better Brier score.
    best: Calibration = (
        "isotonic" if briers["isotonic"] < briers["sigmoid"] - ISOTONIC_MARGIN else "sigmoid"
    )
    logger.info("calibration Brier (cross-validated on validation): %s -> %s", briers, best)
    return fit_calibrator(best, scores, labels)
