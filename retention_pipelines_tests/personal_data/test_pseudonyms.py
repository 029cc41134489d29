"""Pseudonyms: where the key comes from, what a pseudonym is, and ``retention lookup`` mapping
one back to the customer ids in the warehouse (real Postgres)."""

from __future__ import annotations

import stat
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

from retention_pipelines.cli import app
from retention_pipelines.core import pseudonyms
from retention_pipelines.core.pseudonyms import (
    DISPLAY_CHARS,
    PseudonymKeyError,
    display,
    display_all,
    lookup,
    pseudonym,
    pseudonym_key,
)
from retention_pipelines.settings import RetentionSettings
from retention_pipelines_tests.helpers import platform_settings

KEY = b"a-key-of-the-tests-for-pseudonyms"
IDS = ("7590-VHVEG", "5575-GNVDE", "3668-QPYBK")


def _settings(**values: object) -> RetentionSettings:
    return RetentionSettings(**values)  # type: ignore[arg-type]


def test_the_key_is_the_setting(tmp_path: Path) -> None:
    settings = _settings(
        pseudonym_key="s" * 32, database_url="postgresql://db.example/warehouse", home_dir=tmp_path
    )
    assert pseudonym_key(settings) == b"s" * 32
    assert not settings.pseudonym_key_file.exists()


def test_a_short_key_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PseudonymKeyError, match="at least 16 characters"):
        pseudonym_key(_settings(pseudonym_key="short", home_dir=tmp_path))


def test_a_database_url_without_a_key_is_a_clear_error(tmp_path: Path) -> None:
    settings = _settings(
        pseudonym_key=None, database_url="postgresql://db.example/warehouse", home_dir=tmp_path
    )
    with pytest.raises(PseudonymKeyError, match="RETENTION_PSEUDONYM_KEY is required"):
        pseudonym_key(settings)
    assert not settings.pseudonym_key_file.exists()


def test_the_embedded_default_generates_a_key_once_readable_by_its_owner_only(
    tmp_path: Path,
) -> None:
    settings = _settings(pseudonym_key=None, database_url=None, home_dir=tmp_path / "home")
    first = pseudonym_key(settings)
    path = settings.pseudonym_key_file
    assert path == tmp_path / "home" / "pseudonym.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(first) == 64 and int(first, 16)
    assert pseudonym_key(settings) == first  # kept and reused, not made again
    assert path.read_bytes().strip() == first
    elsewhere = _settings(pseudonym_key=None, database_url=None, home_dir=tmp_path / "other")
    assert pseudonym_key(elsewhere) != first


def test_a_pseudonym_is_keyed_stable_and_shown_shortened() -> None:
    full = pseudonym(IDS[0], KEY)
    assert len(full) == 64 and full == pseudonym(IDS[0], KEY)
    assert display(IDS[0], KEY) == full[:DISPLAY_CHARS]
    assert display(IDS[0], b"another-key-of-the-tests") != display(IDS[0], KEY)
    assert len(set(display_all(IDS, KEY))) == len(IDS)
    assert IDS[0] not in full


@pytest.fixture
def known_customers(database_url: str) -> str:
    """A warehouse whose prediction log holds :data:`IDS`."""
    with psycopg.connect(database_url) as conn, conn.cursor() as cursor:
        cursor.executemany(
            "insert into ml.prediction_log (request_id, row_index, predicted_at, customer_id,"
            " variant, served, model_name, model_version, churn_probability, risk_band,"
            " latency_ms) values (%s, 0, %s, %s, 'champion', true, 'churn-model', '1', 0.5,"
            " 'high', 1.0)",
            [(uuid.uuid4(), datetime.now(UTC), customer) for customer in IDS],
        )
    return database_url


def test_lookup_finds_the_id_of_a_shown_or_full_pseudonym(known_customers: str) -> None:
    shown = display(IDS[1], KEY)
    assert lookup(known_customers, shown, KEY) == [IDS[1]]
    assert lookup(known_customers, pseudonym(IDS[1], KEY), KEY) == [IDS[1]]
    assert lookup(known_customers, f" ~{shown.upper()} ", KEY) == [IDS[1]]  # as logged
    assert lookup(known_customers, display(IDS[1], b"another-key-of-the-tests"), KEY) == []
    assert lookup(known_customers, display("0000-NOONE", KEY), KEY) == []


@pytest.mark.parametrize("shown", ["abc123", "x" * DISPLAY_CHARS, "7590-VHVEG", ""])
def test_lookup_refuses_what_is_not_a_pseudonym(known_customers: str, shown: str) -> None:
    with pytest.raises(ValueError, match="is not a pseudonym"):
        lookup(known_customers, shown, KEY)


def test_lookup_lists_every_customer_sharing_a_shown_pseudonym(
    known_customers: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Shortened pseudonyms can coincide (rarely, at 12 characters): every match is listed.
    Shown at 3 characters, two of a thousand customers share one for certain."""
    monkeypatch.setattr(pseudonyms, "DISPLAY_CHARS", 3)
    candidates = [f"{number:04d}-SHARE" for number in range(1_000)]
    by_shown: dict[str, list[str]] = {}
    for customer in candidates:
        by_shown.setdefault(display(customer, KEY), []).append(customer)
    shared, sharing = next((shown, ids) for shown, ids in by_shown.items() if len(ids) > 1)
    with psycopg.connect(known_customers) as conn:
        for customer in sharing:
            conn.execute(
                "insert into ml.prediction_log (request_id, row_index, predicted_at, customer_id,"
                " variant, served, model_name, model_version, churn_probability, risk_band,"
                " latency_ms) values (%s, 0, now(), %s, 'champion', true, 'churn-model', '1',"
                " 0.5, 'high', 1.0)",
                (uuid.uuid4(), customer),
            )
    assert lookup(known_customers, shared, KEY) == sorted(sharing)


# --- retention lookup ---------------------------------------------------------------------


@pytest.fixture
def command_line(known_customers: str, server_url: str, tmp_path: Path) -> Iterator[str]:
    """The command line's settings pointed at the warehouse of :data:`IDS`, with a key."""
    with platform_settings(
        known_customers, server_url, tmp_path, env={"RETENTION_PSEUDONYM_KEY": KEY.decode()}
    ):
        yield known_customers


def test_retention_lookup_prints_the_customer_id(command_line: str) -> None:
    result = CliRunner().invoke(app, ["lookup", f"~{display(IDS[2], KEY)}"])
    assert result.exit_code == 0, result.output
    assert result.stdout.split() == [IDS[2]]


def test_retention_lookup_of_an_unknown_pseudonym_says_so_and_fails(command_line: str) -> None:
    result = CliRunner().invoke(app, ["lookup", display("0000-NOONE", KEY)])
    assert result.exit_code == 1
    assert "no customer in the warehouse has the pseudonym" in result.output
    assert "0000-NOONE" not in result.output


def test_retention_lookup_of_a_malformed_pseudonym_is_a_usage_error(command_line: str) -> None:
    result = CliRunner().invoke(app, ["lookup", "not-a-pseudonym"])
    assert result.exit_code == 2
    assert "is not a pseudonym" in result.output
    assert "hexadecimal" in result.output


def test_retention_lookup_without_a_key_says_which_setting(
    known_customers: str, server_url: str, tmp_path: Path
) -> None:
    with platform_settings(
        known_customers, server_url, tmp_path, env={"RETENTION_PSEUDONYM_KEY": ""}
    ):
        result = CliRunner().invoke(app, ["lookup", display(IDS[0], KEY)])
    assert result.exit_code == 1
    assert "RETENTION_PSEUDONYM_KEY is required" in result.output
