"""The README's settings table names every setting the platform reads."""

import re
from pathlib import Path

from retention_pipelines.settings import RetentionSettings

README = Path(__file__).resolve().parents[2] / "README.md"
# A first cell: `RETENTION_API_HOST` / `_PORT` / `_WORKERS`, or one name.
_CELL = re.compile(r"^\| (`RETENTION_[A-Z0-9_]+`(?: / `[A-Z0-9_]+`)*) \|", re.MULTILINE)


def documented_variables(readme: str) -> set[str]:
    """Every variable a first cell names; ``_SUFFIX`` continues any prefix of the name before
    it (``RETENTION_API_LOG_BATCH_ROWS / _FLUSH_S`` names ``RETENTION_API_LOG_FLUSH_S``), so
    each reading is kept and the settings decide which exist."""
    found: set[str] = set()
    for match in _CELL.finditer(readme):
        first, *suffixes = [name.strip("`") for name in match[1].split(" / ")]
        found.add(first)
        for suffix in suffixes:
            if suffix.startswith("RETENTION_"):
                found.add(suffix)
                continue
            parts = first.split("_")
            found.update("_".join(parts[:cut]) + suffix for cut in range(1, len(parts)))
    return found


def test_every_setting_is_in_the_readme_settings_table() -> None:
    documented = documented_variables(README.read_text(encoding="utf-8"))
    missing = [
        f"RETENTION_{name.upper()}"
        for name in RetentionSettings.model_fields
        if f"RETENTION_{name.upper()}" not in documented
    ]
    assert missing == []


def test_a_setting_left_out_of_the_table_is_found() -> None:
    table = "| `RETENTION_API_HOST` / `_PORT` | x | y |\n| `RETENTION_EXPORTER_PORT` | x | y |\n"
    assert documented_variables(table) >= {
        "RETENTION_API_HOST",
        "RETENTION_API_PORT",
        "RETENTION_EXPORTER_PORT",
    }
    assert "RETENTION_API_WORKERS" not in documented_variables(table)
