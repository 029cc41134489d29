"""The API keys a request is checked against: the live keys, held in memory and re-read every
``RETENTION_API_KEY_REFRESH_S`` seconds, so a request never waits on Postgres for them and
keeps being authorised through a database outage (with the keys known before it)."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Final

from retention_pipelines.core import api_keys
from retention_pipelines.core.api_keys import ApiKey

logger = logging.getLogger(__name__)

# An unknown key re-reads the keys at most this often, so a key created a moment ago works at
# once and a flood of wrong keys cannot turn into a flood of queries.
_MISS_REFRESH_S: Final = 1.0


@dataclass
class KeyCache:
    url: str
    refresh_s: float = 5.0
    _keys: dict[str, ApiKey] = field(default_factory=dict)
    _loaded_at: float | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def loaded(self) -> bool:
        return self._loaded_at is not None

    def refresh(self) -> bool:
        """Re-read the live keys; False (keeping the known ones) when Postgres cannot say."""
        with self._lock:
            try:
                keys = api_keys.live_keys(self.url, retry_s=0)
            except Exception as error:
                logger.warning("cannot re-read the API keys, keeping the known ones: %s", error)
                return False
            self._keys = keys
            self._loaded_at = time.monotonic()
            return True

    def lookup(self, raw_key: str) -> ApiKey | None:
        """The live key ``raw_key`` is, or None."""
        digest = api_keys.hash_key(raw_key)
        found = self._keys.get(digest)
        if found is None and self._stale(_MISS_REFRESH_S) and self.refresh():
            found = self._keys.get(digest)
        return found

    def _stale(self, age_s: float) -> bool:
        return self._loaded_at is None or time.monotonic() - self._loaded_at >= age_s
