"""Pseudonyms: how customers are told apart outside the warehouse.

A pseudonym is an HMAC-SHA256 of the customer id under ``RETENTION_PSEUDONYM_KEY``, shown
shortened. Without the key nobody can compute one from an id or test a guessed id against it;
with warehouse access, :func:`lookup` maps one back. Dagster metadata and logs, MLflow
artefacts, reports and command output name customers this way, never by id.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Final

from psycopg import sql

from retention_pipelines.core.database import connect
from retention_pipelines.core.warehouse.tables import (
    CHURN_RISK_SCORES,
    CRM_OUTBOX,
    PREDICTION_LOG,
    RAW_REJECTS,
    RAW_SNAPSHOTS,
)

if TYPE_CHECKING:
    from retention_pipelines.settings import RetentionSettings

# 12 hex characters (48 bits): among a million customers two share one with a chance of
# about 1 in 500, and lookup lists every match.
DISPLAY_CHARS: Final = 12
_KEY_BYTES: Final = 32
# Every warehouse table that holds customer ids, where a pseudonym is looked up.
_ID_TABLES: Final = (RAW_SNAPSHOTS, RAW_REJECTS, CHURN_RISK_SCORES, PREDICTION_LOG, CRM_OUTBOX)
_LOOKUP_BATCH: Final = 50_000


class PseudonymKeyError(RuntimeError):
    """No key is configured where one is required."""


def pseudonym_key(settings: RetentionSettings) -> bytes:
    """The key: ``RETENTION_PSEUDONYM_KEY``; on the embedded default without it, the key
    generated once and kept (owner-readable) in ``home_dir/pseudonym.key``."""
    if settings.pseudonym_key is not None:
        key = settings.pseudonym_key.get_secret_value()
        if len(key) < 16:
            raise PseudonymKeyError("RETENTION_PSEUDONYM_KEY must be at least 16 characters")
        return key.encode("utf-8")
    if settings.database_url:
        raise PseudonymKeyError(
            "RETENTION_PSEUDONYM_KEY is required with RETENTION_DATABASE_URL: set it to a long "
            "random secret (e.g. `python -c 'import secrets; print(secrets.token_hex(32))'`), "
            "the same for every process of the platform, and keep it: pseudonyms shown before "
            "can be looked up only with the key that made them"
        )
    return _embedded_key(settings.pseudonym_key_file)


def _embedded_key(path: Path) -> bytes:
    """Read the key file, or create it: exclusively, so concurrent processes share one key."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(secrets.token_hex(_KEY_BYTES))
    key = path.read_text(encoding="utf-8").strip()
    if not key:  # another process created the file and is writing it
        raise PseudonymKeyError(f"the pseudonym key file {path} is empty")
    return key.encode("utf-8")


def pseudonym(customer_id: str, key: bytes) -> str:
    """The full pseudonym of ``customer_id`` (64 hex characters)."""
    return hmac.new(key, customer_id.encode("utf-8"), hashlib.sha256).hexdigest()


def display(customer_id: str, key: bytes) -> str:
    """The pseudonym as people see it: shortened to :data:`DISPLAY_CHARS`."""
    return pseudonym(customer_id, key)[:DISPLAY_CHARS]


def display_all(customer_ids: Iterable[str], key: bytes) -> list[str]:
    return [display(customer_id, key) for customer_id in customer_ids]


def lookup(url: str, shown: str, key: bytes) -> list[str]:
    """The customer ids in the warehouse whose pseudonym starts with ``shown`` (a display
    pseudonym or a full one, with or without the ``~`` that marks one in a logged path):
    usually one, several only when a short one is shared."""
    prefix = shown.strip().removeprefix("~").lower()
    if len(prefix) < DISPLAY_CHARS or any(char not in "0123456789abcdef" for char in prefix):
        raise ValueError(
            f"{shown!r} is not a pseudonym: {DISPLAY_CHARS} to 64 hexadecimal characters"
        )
    union = sql.SQL(" union ").join(
        sql.SQL("select customer_id from {}").format(sql.Identifier(*table.split(".")))
        for table in _ID_TABLES
    )
    found: list[str] = []
    with connect(url) as conn, conn.cursor(name="pseudonym_lookup") as cursor:
        cursor.itersize = _LOOKUP_BATCH
        cursor.execute(
            sql.SQL("select customer_id from ({}) ids where customer_id is not null").format(union)
        )
        for (customer_id,) in cursor:
            if pseudonym(customer_id, key).startswith(prefix):
                found.append(customer_id)
    return sorted(found)
