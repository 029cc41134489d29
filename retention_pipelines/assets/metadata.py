"""Frames as Dagster metadata: the one place tables are rendered for the UI.

``core`` returns pandas frames; :func:`table` turns one into a ``MetadataValue.table`` with a
``TableSchema``, which the UI shows as a table with typed columns.
"""

from __future__ import annotations

import math
from datetime import date, datetime
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd

_TYPES = (("b", "bool"), ("i", "int"), ("u", "int"), ("f", "float"), ("M", "datetime"))


def table(frame: pd.DataFrame) -> dg.TableMetadataValue:
    """``frame`` as a table: a column per column, typed, a record per row."""
    schema = dg.TableSchema(
        columns=[
            dg.TableColumn(name=str(name), type=_column_type(frame[name].dtype))
            for name in frame.columns
        ]
    )
    records = [
        dg.TableRecord({str(name): _value(value) for name, value in row.items()})
        for row in frame.to_dict("records")
    ]
    return dg.MetadataValue.table(records=records, schema=schema)


def _column_type(dtype: Any) -> str:
    kind = getattr(dtype, "kind", "O")
    return next((name for code, name in _TYPES if kind == code), "string")


def _value(value: Any) -> str | int | float | bool | None:
    """A cell as a table record holds it: plain numbers, booleans and text."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return None
    if isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)
