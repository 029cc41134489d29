"""Landing files written by the tests: a valid template row and ways to break it."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

from retention_pipelines.core.schemas import TELCO_COLUMNS

VALID_ROW: dict[str, str] = {
    "customerID": "7590-VHVEG",
    "gender": "Female",
    "SeniorCitizen": "0",
    "Partner": "Yes",
    "Dependents": "No",
    "tenure": "12",
    "PhoneService": "Yes",
    "MultipleLines": "No",
    "InternetService": "DSL",
    "OnlineSecurity": "No",
    "OnlineBackup": "Yes",
    "DeviceProtection": "No",
    "TechSupport": "No",
    "StreamingTV": "No",
    "StreamingMovies": "No",
    "Contract": "Month-to-month",
    "PaperlessBilling": "Yes",
    "PaymentMethod": "Electronic check",
    "MonthlyCharges": "29.85",
    "TotalCharges": "358.20",
    "Churn": "No",
}


def customer(number: int, **changes: str) -> dict[str, str]:
    """A valid row with its own id (``0000-AAAAA`` + number) and the given changes."""
    letters = "".join(chr(ord("A") + (number // 26**i) % 26) for i in range(5))[::-1]
    return {**VALID_ROW, "customerID": f"{number:04d}-{letters}", **changes}


def write_rows(
    path: Path,
    rows: Sequence[dict[str, str] | list[str]],
    *,
    header: Sequence[str] = TELCO_COLUMNS,
    encoding: str = "utf-8",
) -> Path:
    """Write a CSV; a list row is written as is (to make ragged rows)."""
    with path.open("w", newline="", encoding=encoding) as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for row in rows:
            writer.writerow(row if isinstance(row, list) else [row.get(c, "") for c in header])
    return path
