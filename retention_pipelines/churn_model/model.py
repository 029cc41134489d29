"""The churn model: input columns in, calibrated churn probability and per-column reasons out.

``margin = tree_weight * booster log-odds + (1 - tree_weight) * logistic log-odds``; the
calibrator maps ``sigmoid(margin)`` to the probability. With ``tree_weight`` 1 (or no linear
part) it is the booster alone. Both parts are additive in log-odds, so the contributions of
the blend are exact.

On disk a model is a folder: ``churn_model.json`` (the format version, the encoder, the
logistic part, the calibrator, the blend weight) and the booster in its library's own file
format. Loading rebuilds the objects from that data, so a model saved by one release loads in
the next whatever the code around it became; a newer format is refused with a clear message.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

import catboost
import numpy as np
import pandas as pd
import xgboost as xgb

from retention_pipelines.churn_model.encoding import FeatureEncoder
from retention_pipelines.churn_model.parts import (
    Calibrator,
    LinearExplanation,
    LinearPart,
    TreeData,
    TreeModel,
    tree_contributions,
    tree_data,
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

    @property
    def columns(self) -> tuple[str, ...]:
        """The input columns, in the order of :attr:`Scored.contributions`."""
        return self.encoder.columns

    @property
    def blended(self) -> bool:
        return self.linear is not None and self.tree_weight < 1.0

    def margin(self, frame: pd.DataFrame) -> np.ndarray:
        """Log-odds of churn before calibration."""
        tree, data = self._encode(frame)
        margin = tree_margin(self.booster, data)
        linear = self._linear(tree)
        if linear is None:
            return margin
        return self.tree_weight * margin + (1 - self.tree_weight) * linear.margin

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        """Calibrated churn probabilities for rows holding the model's input columns."""
        return self.calibrator(1.0 / (1.0 + np.exp(-self.margin(frame))))

    def contributions(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Per row and input column, the exact contribution to :meth:`margin`."""
        scored = self.score(frame)
        return pd.DataFrame(scored.contributions, columns=list(self.columns), index=frame.index)

    def score(
        self,
        frame: pd.DataFrame,
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
        tree, data = self._encode(frame)
        margin = tree_margin(self.booster, data)
        linear = self._linear(tree)
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
            contributions = blend(tree_contributions(self.booster, data))
            exact = np.ones(len(frame), dtype=bool)
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

    def _encode(self, frame: pd.DataFrame) -> tuple[pd.DataFrame, TreeData]:
        missing = self.encoder.missing_columns(frame)
        if missing:
            raise ValueError(f"the input lacks the model's columns: {missing}")
        tree = self.encoder.tree_input(frame)
        return tree, tree_data(self.booster, tree, self.encoder.categorical)

    def _linear(self, tree: pd.DataFrame) -> LinearExplanation | None:
        if not self.blended:
            return None
        assert self.linear is not None  # noqa: S101
        return self.linear.explain(self.encoder.linear_matrix(tree), self.encoder.design_grouping())

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
