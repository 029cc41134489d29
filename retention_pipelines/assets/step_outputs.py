"""Where a run's steps keep what they hand each other: the code location's IO manager.

Files under the instance's storage folder, pickled, as Dagster's own filesystem IO manager
keeps them; except a training split. The split is customers' rows (ids and personal
attributes), and those stay in the warehouse: its file holds a reference to them (the dates
and the rows' positions, see :mod:`retention_pipelines.core.training_reference`), and the
step that loads it reads the rows again from the warehouse.
"""

import pickle
from collections.abc import Callable
from typing import Any

import dagster as dg
from upath import UPath

from retention_pipelines.core.training import TrainingSplit
from retention_pipelines.core.training_reference import SplitReference, reference_to, resolve

# A reference is JSON (an object), a pickle starts with its protocol's opcode.
_REFERENCE_START = b"{"


class StepOutputIOManager(dg.UPathIOManager):
    """Pickles under ``base_path``, and training splits as references to warehouse rows."""

    def __init__(self, base_path: UPath, warehouse_url: Callable[[], str]) -> None:
        super().__init__(base_path=base_path)
        self._warehouse_url = warehouse_url

    def dump_to_path(self, context: dg.OutputContext, obj: Any, path: UPath) -> None:
        if isinstance(obj, TrainingSplit):
            path.write_text(reference_to(obj).to_json(), encoding="utf-8")
            return
        with path.open("wb") as file:
            pickle.dump(obj, file, pickle.HIGHEST_PROTOCOL)

    def load_from_path(self, context: dg.InputContext, path: UPath) -> Any:
        stored = path.read_bytes()
        if stored.startswith(_REFERENCE_START):
            return resolve(self._warehouse_url(), SplitReference.from_json(stored.decode()))
        return pickle.loads(stored)  # noqa: S301  (written by this class, in the instance's storage)


@dg.io_manager(
    required_resource_keys={"warehouse"},
    description=(
        "Step outputs pickled under the instance's storage folder; a training split stored as "
        "a reference to its warehouse rows, never as the rows."
    ),
)
def step_output_io_manager(init_context: dg.InitResourceContext) -> StepOutputIOManager:
    if init_context.instance is None:
        raise dg.DagsterInvariantViolationError("step outputs are stored in an instance's storage")
    return StepOutputIOManager(
        UPath(init_context.instance.storage_directory()), init_context.resources.warehouse.url
    )
