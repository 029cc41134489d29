"""The churn model: input columns in, calibrated churn probability and per-column reasons out.

``margin = tree_weight * booster log-odds + (1 - tree_weight) * logistic log-odds``; the
calibrator maps ``sigmoid(margin)`` to the probability. With ``tree_weight`` 1 (or no linear
part) it is the booster alone. Both parts are additive in log-odds, so the contributions of
the blend are exact.

On disk a model is a folder: ``churn_model.json`` (the format version, the encoder, the
logistic part, the calibrator, the blend weight) and the booster in its library's own file
format. Loading rebuilds the objects from that data, so a model saved by one release loads in
the next whatever the code around it became; a newer format is refused with a clear message.

Rows come as a DataFrame or as plain columns (:data:`FeatureColumns`); either way they are
encoded once with numpy and both parts read that encoding, so scoring one customer costs
little beyond the booster's own prediction and TreeSHAP (see
:meth:`ChurnModel.set_prediction_threads` for serving).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

import catboost
import numpy as np
import pandas as pd
import xgboost as xgb

from retention_pipelines.churn_model.encoding import EncodedRows, FeatureColumns, FeatureEncoder
from retention_pipelines.churn_model.parts import (
    Calibrator,
    LinearExplanation,
    LinearPart,
    TreeData,
    TreeModel,
    encoded_tree_data,
    tree_contributions,
    tree_margin,
)

FORMAT_VERSION: Final = 1
MODEL_FILE: Final = "churn_model.json"
_BOOSTER_FILES: Final = {"xgboost": "booster.ubj", "catboost": "booster.cbm"}
ModelKind = Literal["xgboost", "catboost"]


class ModelFormatError(ValueError):
    """A saved model this release cannot read."""


@dataclass(frozen=True)
class Scored:
    """What :meth:`ChurnModel.score` returns, row-aligned with its input."""

    probabilities: np.ndarray
    contributions: np.ndarray  # rows x model columns, log-odds
    exact: np.ndarray  # whether the row's contributions are exact TreeSHAP


@dataclass
class ChurnModel:
    """A fitted booster blended in log-odds with a logistic part, then calibrated."""

    kind: ModelKind
    encoder: FeatureEncoder
    booster: TreeModel
    calibrator: Calibrator
    linear: LinearPart | None = None
    tree_weight: float = 1.0
    # Threads a prediction uses; None: the libraries' defaults (see set_prediction_threads).
    prediction_threads: int | None = field(default=None, init=False, compare=False)

    @property
    def columns(self) -> tuple[str, ...]:
        """The input columns, in the order of :attr:`Scored.contributions`."""
        return self.encoder.columns

    @property
    def blended(self) -> bool:
        return self.linear is not None and self.tree_weight < 1.0

    def set_prediction_threads(self, threads: int) -> None:
        """Predict with ``threads`` threads from now on: XGBoost's ``nthread`` (the booster's
        and the input matrix's), CatBoost's ``thread_count``.

        Batch scoring keeps the defaults (every core). A server scoring one customer per
        request sets 1: starting threads for one row costs more than the row, and requests
        run side by side. The setting is not saved with the model."""
        if threads < 1:
            raise ValueError(f"a prediction needs at least one thread, got {threads}")
        self.prediction_threads = threads
        if isinstance(self.booster, xgb.Booster):
            self.booster.set_param({"nthread": threads})

    def margin(self, frame: FeatureColumns) -> np.ndarray:
        """Log-odds of churn before calibration."""
        encoded, data = self._encode(frame)
        margin = tree_margin(self.booster, data, threads=self.prediction_threads)
        linear = self._linear(encoded)
        if linear is None:
            return margin
        return self.tree_weight * margin + (1 - self.tree_weight) * linear.margin

    def predict_proba(self, frame: FeatureColumns) -> np.ndarray:
        """Calibrated churn probabilities for rows holding the model's input columns."""
        return self.calibrator(1.0 / (1.0 + np.exp(-self.margin(frame))))

    def contributions(self, frame: FeatureColumns) -> pd.DataFrame:
        """Per row and input column, the exact contribution to :meth:`margin` (indexed as
        ``frame`` when it is a DataFrame)."""
        scored = self.score(frame)
        index = frame.index if isinstance(frame, pd.DataFrame) else None
        return pd.DataFrame(scored.contributions, columns=list(self.columns), index=index)

    def score(
        self,
        frame: FeatureColumns,
        *,
        exact_from: float | None = None,
        exact_gap: float = float("inf"),
    ) -> Scored:
        """Probabilities and reasons in one pass over the encodings.

        ``None`` for ``exact_from`` explains every row with exact TreeSHAP. Otherwise an
        XGBoost booster's contributions come from the path approximation (see
        :func:`tree_contributions`), tens of times faster, and exact TreeSHAP is recomputed
        where the approximation could name the wrong top reason of a customer who matters
        most: rows whose calibrated probability is at least ``exact_from`` and whose
        approximate top two reasons lie within ``exact_gap`` log-odds of each other.
        CatBoost's approximate ShapValues measured no faster than its exact ones, so CatBoost
        rows are always exact. The linear part is always exact (it is cheap).
        """
        encoded, data = self._encode(frame)
        threads = self.prediction_threads
        margin = tree_margin(self.booster, data, threads=threads)
        linear = self._linear(encoded)
        if linear is not None:
            margin = self.tree_weight * margin + (1 - self.tree_weight) * linear.margin
        probabilities = self.calibrator(1.0 / (1.0 + np.exp(-margin)))

        def blend(tree_part: np.ndarray, rows: Any = slice(None)) -> np.ndarray:
            if linear is None:
                return tree_part
            return self.tree_weight * tree_part + (
                (1 - self.tree_weight) * linear.contributions[rows]
            )

        if exact_from is None or isinstance(self.booster, catboost.CatBoostClassifier):
            contributions = blend(tree_contributions(self.booster, data, threads=threads))
            exact = np.ones(len(encoded), dtype=bool)
        else:
            contributions = blend(tree_contributions(self.booster, data, approximate=True))
            exact = (probabilities >= exact_from) & (_top_gap(contributions) < exact_gap)
            rows = np.flatnonzero(exact)
            if rows.size:
                assert isinstance(data, xgb.DMatrix)  # noqa: S101
                contributions[rows] = blend(
                    tree_contributions(self.booster, data.slice(rows)), rows
                )
        return Scored(probabilities=probabilities, contributions=contributions, exact=exact)

    def _encode(self, frame: FeatureColumns) -> tuple[EncodedRows, TreeData]:
        missing = self.encoder.missing_columns(frame)
        if missing:
            raise ValueError(f"the input lacks the model's columns: {missing}")
        encoded = self.encoder.encode(frame)
        data = encoded_tree_data(
            self.booster, self.encoder, encoded, threads=self.prediction_threads
        )
        return encoded, data

    def _linear(self, encoded: EncodedRows) -> LinearExplanation | None:
        if not self.blended:
            return None
        assert self.linear is not None  # noqa: S101
        return self.linear.explain(
            self.encoder.design_matrix(encoded), self.encoder.design_grouping()
        )

    # --- on disk ---------------------------------------------------------------------------

    def save(self, folder: Path) -> Path:
        """Write the model into ``folder`` (created); return it."""
        folder.mkdir(parents=True, exist_ok=True)
        booster_file = _BOOSTER_FILES[self.kind]
        self.booster.save_model(str(folder / booster_file))
        description = {
            "format_version": FORMAT_VERSION,
            "kind": self.kind,
            "booster_file": booster_file,
            "encoder": self.encoder.to_dict(),
            "linear": self.linear.to_dict() if self.linear is not None else None,
            "tree_weight": self.tree_weight,
            "calibrator": self.calibrator.to_dict(),
        }
        (folder / MODEL_FILE).write_text(json.dumps(description, indent=1), encoding="utf-8")
        return folder

    @classmethod
    def load(cls, folder: Path) -> ChurnModel:
        """A model saved by :meth:`save`, of this format version or an earlier one."""
        path = folder / MODEL_FILE
        if not path.is_file():
            raise ModelFormatError(f"{folder} holds no {MODEL_FILE}: not a saved churn model")
        description = json.loads(path.read_text(encoding="utf-8"))
        version = description.get("format_version")
        if not isinstance(version, int) or not 1 <= version <= FORMAT_VERSION:
            raise ModelFormatError(
                f"{path} is churn model format {version!r}; this release reads formats 1 to "
                f"{FORMAT_VERSION}: load it with the release that saved it, or a newer one"
            )
        kind = description["kind"]
        return cls(
            kind=kind,
            encoder=FeatureEncoder.from_dict(description["encoder"]),
            booster=_load_booster(kind, folder / description["booster_file"]),
            calibrator=Calibrator.from_dict(description["calibrator"]),
            linear=(LinearPart.from_dict(description["linear"]) if description["linear"] else None),
            tree_weight=float(description["tree_weight"]),
        )


def _load_booster(kind: str, path: Path) -> TreeModel:
    if kind == "xgboost":
        booster = xgb.Booster()
        booster.load_model(str(path))
        return booster
    if kind == "catboost":
        model = catboost.CatBoostClassifier()
        model.load_model(str(path))
        return model
    raise ModelFormatError(f"unknown booster kind {kind!r}")


def _top_gap(contributions: np.ndarray) -> np.ndarray:
    """Per row, how far the largest contribution leads the second largest."""
    top_two = np.partition(contributions, -2, axis=1)[:, -2:]
    return top_two[:, 1] - top_two[:, 0]
