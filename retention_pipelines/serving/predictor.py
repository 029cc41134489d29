"""From customers as sent to answers: validated by the ingestion's rules, turned into the
feature contract in Python (the parity test holds it to dbt's), routed to a variant, and
scored with reasons. Plain Python over ``core``; the routes only translate."""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from retention_pipelines.core.features import feature_columns
from retention_pipelines.core.ingestion import validate_records
from retention_pipelines.core.records import quick_valid_row
from retention_pipelines.core.schemas import TELCO_COLUMNS
from retention_pipelines.core.scoring import LiveScores, RiskBands, score_live
from retention_pipelines.core.warehouse.prediction_log import LoggedPrediction
from retention_pipelines.serving.models import (
    LoadedModel,
    ModelHolder,
    Variant,
    in_challenger_share,
)

_TELCO_NAMES = frozenset(TELCO_COLUMNS)


class NoModelError(RuntimeError):
    """No champion is loaded: the API cannot answer yet."""


@dataclass(frozen=True)
class Answer:
    """One customer's answer from one model."""

    index: int
    customer_id: str
    probability: float
    band: str
    reasons: list[tuple[str, str, float]]  # feature, text, contribution
    model: LoadedModel
    served: bool = True


@dataclass(frozen=True)
class FieldError:
    field: str | None  # the landing column, None for a rule across columns
    message: str


@dataclass(frozen=True)
class Outcome:
    answers: list[Answer]
    errors: dict[int, list[FieldError]]
    shadow: list[Answer]


@dataclass
class Predictor:
    holder: ModelHolder
    bands: RiskBands
    challenger_share: float = 0.0
    shadow: bool = False
    max_field_chars: int = 4096
    batch_exact_gap: float = float("inf")

    def predict(self, records: Sequence[Mapping[str, Any]], *, batch: bool = False) -> Outcome:
        """Answer every valid record; report every invalid one by its position. One customer
        is explained with exact TreeSHAP; a ``batch`` as the nightly scorer explains a chunk
        (exact for high-band customers whose top reasons are within ``batch_exact_gap``)."""
        gap = self.batch_exact_gap if batch else None
        champion = self.holder.champion
        if champion is None:
            raise NoModelError("no champion model is loaded yet")
        positions, rows, errors = self._validate(records)
        if not rows:
            return Outcome([], errors, [])
        features = feature_columns({column: [row[column] for row in rows] for column in rows[0]})
        challenger = self.holder.challenger
        answers: list[Answer] = []
        for loaded, picked in self._route(features, champion, challenger):
            answers += _answers(loaded, _rows(features, picked), positions[picked], self.bands, gap)
        answers.sort(key=lambda answer: answer.index)
        shadow: list[Answer] = []
        if self.shadow and challenger is not None:
            by_champion = np.array([a.model is champion for a in answers], dtype=bool)
            if by_champion.any():
                shadow = _answers(
                    challenger, _rows(features, by_champion), positions[by_champion],
                    self.bands, gap, served=False,
                )  # fmt: skip
        return Outcome(answers, errors, shadow)

    def _validate(
        self, records: Sequence[Mapping[str, Any]]
    ) -> tuple[np.ndarray, list[dict[str, Any]], dict[int, list[FieldError]]]:
        """The valid records typed as raw rows (with their positions) and the others' errors.

        Each record first takes the quick path (:func:`quick_valid_row`); those it does not
        vouch for take the ingestion's full path, which decides and words the reasons."""
        quick = [
            quick_valid_row(record, self.max_field_chars) if isinstance(record, dict) else None
            for record in records
        ]
        slow = [position for position, row in enumerate(quick) if row is None]
        errors: dict[int, list[FieldError]] = {}
        if slow:
            validated = validate_records(
                [records[p] for p in slow], max_field_chars=self.max_field_chars
            )
            for index, reasons in validated.reasons.items():
                errors[slow[index]] = field_errors(reasons)
            valid = validated.valid.astype(object).where(validated.valid.notna(), None)
            for index, row in zip(valid.index, valid.to_dict("records"), strict=True):
                quick[slow[int(index)]] = row
        positions = [position for position, row in enumerate(quick) if row is not None]
        rows = [row for row in quick if row is not None]
        return np.asarray(positions, dtype=np.int64), rows, errors

    def _route(
        self, features: dict[str, np.ndarray], champion: LoadedModel, challenger: LoadedModel | None
    ) -> list[tuple[LoadedModel, np.ndarray]]:
        """Which rows each variant answers: by a stable hash of the customer id."""
        every = np.ones(len(features["customer_id"]), dtype=bool)
        if challenger is None or self.challenger_share <= 0:
            return [(champion, every)]
        to_challenger = np.array(
            [
                in_challenger_share(str(cid), self.challenger_share)
                for cid in features["customer_id"]
            ],
            dtype=bool,
        )
        groups = [(champion, ~to_challenger), (challenger, to_challenger)]
        return [(loaded, rows) for loaded, rows in groups if rows.any()]


def _rows(features: dict[str, np.ndarray], picked: np.ndarray) -> dict[str, np.ndarray]:
    return {column: values[picked] for column, values in features.items()}


def _answers(
    loaded: LoadedModel,
    features: dict[str, np.ndarray],
    positions: np.ndarray,
    bands: RiskBands,
    exact_gap: float | None,
    *,
    served: bool = True,
) -> list[Answer]:
    scores: LiveScores = score_live(loaded.model, features, bands, exact_gap=exact_gap)
    ids = features["customer_id"]
    reasons = scores.contributions.shape[1]
    return [
        Answer(
            index=int(position),
            customer_id=str(ids[row]),
            probability=float(scores.probabilities[row]),
            band=str(scores.bands[row]),
            reasons=[
                (
                    str(scores.reason_features[row, rank]),
                    str(scores.reason_texts[row, rank]),
                    float(scores.contributions[row, rank]),
                )
                for rank in range(reasons)
            ],
            model=loaded,
            served=served,
        )
        for row, position in enumerate(positions)
    ]


def field_errors(reasons: list[str]) -> list[FieldError]:
    """Ingestion's reasons with the landing column each names ("tenure: 'x' is not an
    integer" names ``tenure``); a rule across columns names none."""
    found = []
    for reason in reasons:
        column, _, _ = reason.partition(":")
        found.append(FieldError(column if column in _TELCO_NAMES else None, reason))
    return found


def log_rows(
    request_id: uuid.UUID,
    answers: Sequence[Answer],
    *,
    started: float,
    api_key_id: int | None,
) -> list[LoggedPrediction]:
    """The prediction-log rows of a request's answers (served and shadow)."""
    now = datetime.now(UTC)
    latency_ms = (time.perf_counter() - started) * 1000
    return [
        LoggedPrediction(
            request_id=request_id,
            row_index=answer.index,
            predicted_at=now,
            customer_id=answer.customer_id,
            variant=answer.model.variant,
            served=answer.served,
            model_name=answer.model.name,
            model_version=answer.model.version,
            churn_probability=answer.probability,
            risk_band=answer.band,
            latency_ms=latency_ms,
            api_key_id=api_key_id,
        )
        for answer in answers
    ]


def variants_of(answers: Sequence[Answer]) -> list[Variant]:
    return sorted({answer.model.variant for answer in answers})
