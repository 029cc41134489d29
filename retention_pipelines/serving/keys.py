"""The API keys a request is checked against: the live keys, held in memory and re-read every
``RETENTION_API_KEY_REFRESH_S`` seconds, so a request never waits on Postgres for them and
keeps being authorised through a database outage (with the keys known before it)."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Final

from retention_pipelines.core import api_keys
from retention_pipelines.core.api_keys import ApiKey

logger = logging.getLogger(__name__)

# Unknown keys are looked up in Postgres at most this many times a second, so a key created a
# moment ago works at once and a flood of wrong keys cannot become a flood of queries.
_MISS_LOOKUPS_PER_S: Final = 10


@dataclass
class KeyCache:
    url: str
    refresh_s: float = 5.0
    _keys: dict[str, ApiKey] = field(default_factory=dict)
    _loaded_at: float | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _lookups: deque[float] = field(default_factory=deque)
    _budget_lock: threading.Lock = field(default_factory=threading.Lock)

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
        """The live key ``raw_key`` is, or None. A key not held yet (created since the last
        re-read) is looked up on its own, within the budget of lookups a second."""
        digest = api_keys.hash_key(raw_key)
        found = self._keys.get(digest)
        if found is None and self._may_look_up():
            try:
                found = api_keys.find_live_key(self.url, digest)
            except Exception as error:
                logger.warning("cannot look up an API key: %s", error)
                return None
            if found is not None:
                self._keys = {**self._keys, digest: found}
        return found

    def _may_look_up(self) -> bool:
        now = time.monotonic()
        with self._budget_lock:
            while self._lookups and now - self._lookups[0] >= 1.0:
                self._lookups.popleft()
            if len(self._lookups) >= _MISS_LOOKUPS_PER_S:
                return False
            self._lookups.append(now)
            return True
