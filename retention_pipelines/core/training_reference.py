"""A training split kept as a reference to warehouse rows, never as the rows.

Dagster stores what one step hands the next (``training_set`` to the candidates, the
registration and the gate) as files of the instance's storage. The split is rows of
customers: ids and personal attributes, which stay in the warehouse. What is stored instead
is where they are: the labelled snapshot dates the rows were read from, and each part's
positions among those dates' labelled rows as :func:`read_labelled_on` orders them (by
customer id), with a fingerprint of the whole split. Positions are bare integers, meaningless
without the warehouse. The step that needs the split reads the rows again and checks the
fingerprint, so it trains on exactly the data the split was made of, or fails saying so.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date
from typing import Any, Final

from retention_pipelines.core.features import LABEL_COLUMN
from retention_pipelines.core.training import TrainingSplit, data_fingerprint
from retention_pipelines.core.warehouse.features import read_labelled_on

KIND: Final = "training_split_reference"
PARTS: Final = ("train", "validation", "test")


class StaleTrainingDataError(RuntimeError):
    """The warehouse no longer holds the rows a split was made of."""


@dataclass(frozen=True)
class SplitReference:
    snapshot_dates: tuple[date, ...]
    positions: dict[str, list[int]]  # part -> positions among the dates' labelled rows
    fingerprint: str

    def to_json(self) -> str:
        return json.dumps(
            {
                "kind": KIND,
                "snapshot_dates": [day.isoformat() for day in self.snapshot_dates],
                "positions": self.positions,
                "fingerprint": self.fingerprint,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> SplitReference:
        data: dict[str, Any] = json.loads(text)
        if data.get("kind") != KIND:
            raise ValueError(f"not a {KIND}: {str(data.get('kind'))[:64]!r}")
        return cls(
            snapshot_dates=tuple(date.fromisoformat(day) for day in data["snapshot_dates"]),
            positions={part: [int(p) for p in data["positions"][part]] for part in PARTS},
            fingerprint=str(data["fingerprint"]),
        )


def reference_to(split: TrainingSplit) -> SplitReference:
    """Where ``split``'s rows are: its parts' index positions, as ``split_training_set`` kept
    them from :func:`read_labelled_on`'s frame, and the snapshot dates they come from."""
    parts = {part: getattr(split, part) for part in PARTS}
    dates = sorted({day for frame in parts.values() for day in frame["snapshot_date"]})
    return SplitReference(
        snapshot_dates=tuple(date.fromisoformat(str(day)) for day in dates),
        positions={part: [int(p) for p in frame.index] for part, frame in parts.items()},
        fingerprint=data_fingerprint(split),
    )


def resolve(url: str, reference: SplitReference) -> TrainingSplit:
    """The split ``reference`` points to, read from the warehouse at ``url``.

    Raises :class:`StaleTrainingDataError` when the rows read are not the rows the split was
    made of (a date rebuilt, purged or a customer erased since).
    """
    frame = read_labelled_on(url, reference.snapshot_dates)
    wanted = [p for part in PARTS for p in reference.positions[part]]
    if wanted and (max(wanted) >= len(frame) or min(wanted) < 0):
        raise StaleTrainingDataError(_stale(reference, f"{len(frame):,} rows are left"))
    # The label as split_training_set types it (0 or 1), before the parts are taken.
    labelled = frame.take(sorted(wanted))
    labelled[LABEL_COLUMN] = labelled[LABEL_COLUMN].astype(bool).astype(int)
    split = TrainingSplit(**{part: labelled.loc[reference.positions[part]] for part in PARTS})
    if data_fingerprint(split) != reference.fingerprint:
        raise StaleTrainingDataError(_stale(reference, "their values changed"))
    return split


def _stale(reference: SplitReference, why: str) -> str:
    days = ", ".join(day.isoformat() for day in reference.snapshot_dates)
    return (
        f"the training rows of {days} are no longer those this run's training_set split "
        f"({why}): materialize the whole retrain_job again"
    )
