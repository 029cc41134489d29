"""Keys of the prediction API: created, listed and revoked by people (``retention api-key``),
looked up by the API on every request.

A key is 32 random bytes, shown once when it is created; the warehouse keeps its SHA-256 and
a short prefix to tell keys apart in listings. A fast hash is right here, unlike for
passwords: a 256-bit random key cannot be found by guessing, and the API hashes it on every
request.

Creating and revoking a key are entries of the audit log, written in the transaction that
writes the key's row: a key never exists, or stops, without its entry.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Literal

from retention_pipelines.core import audit
from retention_pipelines.core.database import connect
from retention_pipelines.core.warehouse.tables import API_KEYS

Scope = Literal["predict", "read"]
SCOPES: Final[tuple[Scope, ...]] = ("predict", "read")
KEY_PREFIX: Final = "rtn_"
_PREFIX_SHOWN: Final = 12  # "rtn_" and 8 characters of the key, enough to tell keys apart
_NAME: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class ApiKeyError(ValueError):
    """A key that cannot be created or revoked as asked."""


@dataclass(frozen=True)
class ApiKey:
    """A live key as the API sees it: who it is and what it may do."""

    key_id: int
    name: str
    scopes: frozenset[str]


@dataclass(frozen=True)
class ApiKeyListing:
    key_id: int
    name: str
    scopes: tuple[str, ...]
    prefix: str
    created_at: datetime
    created_by: str
    revoked_at: datetime | None


def hash_key(raw_key: str) -> str:
    return hashlib.sha256(raw_key.encode("utf-8")).hexdigest()


def create_key(url: str, name: str, scopes: tuple[str, ...], *, actor: str) -> tuple[str, ApiKey]:
    """A new key named ``name`` with ``scopes``: the raw key (to show once) and its record."""
    if not _NAME.match(name):
        raise ApiKeyError(
            f"{name[:64]!r} is not a key name: use 1-64 letters, digits, '.', '_' or '-'"
        )
    unknown = sorted(set(scopes) - set(SCOPES))
    if not scopes or unknown:
        raise ApiKeyError(f"scopes must be among {', '.join(SCOPES)}; got {', '.join(scopes)}")
    raw_key = KEY_PREFIX + secrets.token_urlsafe(32)
    with connect(url) as conn:
        taken = conn.execute(
            f"select 1 from {API_KEYS} where name = %s and revoked_at is null", (name,)
        ).fetchone()
        if taken:
            raise ApiKeyError(f"a live key is already named {name!r}: revoke it first")
        row = conn.execute(
            f"insert into {API_KEYS} (name, scopes, key_prefix, key_hash, created_by)"
            " values (%s, %s, %s, %s, %s) returning key_id",
            (name, sorted(set(scopes)), raw_key[:_PREFIX_SHOWN], hash_key(raw_key), actor),
        ).fetchone()
        assert row is not None  # noqa: S101
        audit.record(
            conn,
            "api_key_created",
            name,
            actor=actor,
            details={"key_id": int(row[0]), "scopes": sorted(set(scopes))},
        )
    return raw_key, ApiKey(int(row[0]), name, frozenset(scopes))


def revoke_key(url: str, name: str, *, actor: str) -> int:
    """Revoke the live key named ``name``; return its id."""
    with connect(url) as conn:
        row = conn.execute(
            f"update {API_KEYS} set revoked_at = now(), revoked_by = %s"
            " where name = %s and revoked_at is null returning key_id",
            (actor, name),
        ).fetchone()
        if row is None:
            raise ApiKeyError(f"no live key is named {name[:64]!r}")
        audit.record(conn, "api_key_revoked", name, actor=actor, details={"key_id": int(row[0])})
    return int(row[0])


def list_keys(url: str, *, include_revoked: bool = False) -> list[ApiKeyListing]:
    """Keys, oldest first; never the keys themselves."""
    where = "" if include_revoked else " where revoked_at is null"
    with connect(url) as conn:
        rows = conn.execute(
            "select key_id, name, scopes, key_prefix, created_at, created_by, revoked_at"
            f" from {API_KEYS}{where} order by key_id"
        ).fetchall()
    return [ApiKeyListing(int(r[0]), r[1], tuple(r[2]), r[3], r[4], r[5], r[6]) for r in rows]


def live_keys(url: str, *, retry_s: float | None = None) -> dict[str, ApiKey]:
    """Every live key by its hash: what the API checks requests against."""
    with connect(url, retry_s=retry_s, connect_timeout=3) as conn:
        rows = conn.execute(
            f"select key_hash, key_id, name, scopes from {API_KEYS} where revoked_at is null"
        ).fetchall()
    return {r[0]: ApiKey(int(r[1]), r[2], frozenset(r[3])) for r in rows}


def find_live_key(url: str, key_hash: str) -> ApiKey | None:
    """The live key of ``key_hash``, or None: one indexed lookup."""
    with connect(url, retry_s=0, connect_timeout=3) as conn:
        row = conn.execute(
            f"select key_id, name, scopes from {API_KEYS}"
            " where key_hash = %s and revoked_at is null",
            (key_hash,),
        ).fetchone()
    return ApiKey(int(row[0]), row[1], frozenset(row[2])) if row else None
