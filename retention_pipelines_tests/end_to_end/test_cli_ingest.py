"""``retention ingest``: what a person landing a file by hand meets."""

from __future__ import annotations

import gzip
import os
from datetime import date, timedelta
from pathlib import Path

from typer.testing import CliRunner

from retention_pipelines.cli import app
from retention_pipelines.core.schemas import TELCO_COLUMNS
from retention_pipelines.settings import get_settings
from retention_pipelines_tests.landing_files import customer, write_rows

runner = CliRunner()


def _landing(day: str, suffix: str = "") -> Path:
    return get_settings().resolved_landing_dir / f"customers_{day}.csv{suffix}"


def _refusal(args: list[str]) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output
    [line] = [text for text in result.output.splitlines() if text.strip()]
    assert line.startswith("not landed: ")
    return line


def test_only_iso_dates_inside_the_partition_range_are_accepted(tmp_path: Path) -> None:
    source = write_rows(tmp_path / "export.csv", [customer(1)])
    assert "not a date written YYYY-MM-DD" in _refusal(
        ["ingest", str(source), "--date", "20250101"]
    )
    assert "before the first partition" in _refusal(["ingest", str(source), "--date", "1999-12-31"])
    far = (date.today() + timedelta(days=30)).isoformat()
    assert "is in the future" in _refusal(["ingest", str(source), "--date", far])
    assert not list(get_settings().resolved_landing_dir.glob("customers_1999*"))


def test_an_existing_landing_file_is_replaced_only_when_asked(tmp_path: Path) -> None:
    first = write_rows(tmp_path / "first.csv", [customer(1)])
    second = write_rows(tmp_path / "second.csv", [customer(1), customer(2)])
    assert runner.invoke(app, ["ingest", str(first), "--date", "2026-04-01"]).exit_code == 0
    line = _refusal(["ingest", str(second), "--date", "2026-04-01"])
    assert "already has a landing file" in line and "--replace" in line
    assert _landing("2026-04-01").read_bytes() == first.read_bytes()
    result = runner.invoke(app, ["ingest", str(second), "--date", "2026-04-01", "--replace"])
    assert result.exit_code == 0 and "replacing" in result.output
    assert _landing("2026-04-01").read_bytes() == second.read_bytes()


def test_landing_the_landing_file_onto_itself_says_so(tmp_path: Path) -> None:
    source = write_rows(tmp_path / "export.csv", [customer(1)])
    assert runner.invoke(app, ["ingest", str(source), "--date", "2026-04-02"]).exit_code == 0
    landed = _landing("2026-04-02")
    line = _refusal(["ingest", str(landed), "--date", "2026-04-02", "--replace"])
    assert "is already the landing file of 2026-04-02" in line
    assert landed.read_bytes() == source.read_bytes()


def test_a_fifo_and_a_missing_file_are_told_apart(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    assert "not a regular file" in _refusal(["ingest", str(fifo), "--date", "2026-04-03"])
    missing = _refusal(["ingest", str(tmp_path / "nope.csv"), "--date", "2026-04-03"])
    assert "missing file" in missing


def test_a_semicolon_cp1252_export_is_converted_to_the_landing_format(tmp_path: Path) -> None:
    source = tmp_path / "excel.csv"
    rows = [customer(1, PaymentMethod="Mailed check"), customer(2)]
    lines = [";".join(TELCO_COLUMNS), *(";".join(row.values()) for row in rows)]
    source.write_bytes(("\r\n".join(lines) + "\r\n").encode("cp1252") + "€".encode("cp1252"))
    hint = _refusal(["ingest", str(source), "--date", "2026-04-04"])
    assert "undecodable byte b'\\x80' on line 4" in hint and "--encoding cp1252" in hint
    hint = _refusal(["ingest", str(source), "--date", "2026-04-04", "--encoding", "cp1252"])
    assert "separated by ';'" in hint and "--delimiter ';'" in hint
    result = runner.invoke(
        app,
        ["ingest", str(source), "--date", "2026-04-04", "--delimiter", ";",
         "--encoding", "cp1252"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "converted from cp1252 ';'" in result.output
    landed = _landing("2026-04-04").read_text(encoding="utf-8").splitlines()
    assert landed[0] == ",".join(TELCO_COLUMNS)
    assert landed[1] == ",".join(rows[0].values())
    assert landed[3] == "€"  # a line that is not a record stays, to be quarantined


def test_a_gzip_file_lands_compressed_and_an_unknown_encoding_is_one_line(tmp_path: Path) -> None:
    plain = write_rows(tmp_path / "export.csv", [customer(1)])
    packed = tmp_path / "export.csv.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    result = runner.invoke(app, ["ingest", str(packed), "--date", "2026-04-05"])
    assert result.exit_code == 0, result.output
    assert _landing("2026-04-05", ".gz").read_bytes() == packed.read_bytes()
    assert not _landing("2026-04-05").exists()
    line = _refusal(["ingest", str(plain), "--date", "2026-04-06", "--encoding", "klingon"])
    assert "unknown encoding" in line
