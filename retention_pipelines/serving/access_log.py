"""uvicorn's access log without customer ids.

A request for a customer's stored risk has the id in its path (``/v1/customers/{id}/risk``),
and uvicorn's access log prints paths as they came. The filter below rewrites each access
record before any handler formats it: the id becomes its pseudonym (``~`` and the display
pseudonym), so an operator can still tell the requests for one customer apart, and a person
with warehouse access can map it back with ``retention lookup``. Anything else in a path or
query string that has the shape of a customer id is replaced the same way.
"""

from __future__ import annotations

import logging
import re
from typing import Final
from urllib.parse import unquote

from retention_pipelines.core.pseudonyms import display
from retention_pipelines.core.schemas import CUSTOMER_ID_PATTERN

ACCESS_LOGGER: Final = "uvicorn.access"
# What a pseudonym is prefixed with in a path: a mark that this is not the id itself.
MARK: Final = "~"
# uvicorn's access record: client, method, path with query string, HTTP version, status.
_PATH_ARG: Final = 2
_CUSTOMER_SEGMENT: Final = re.compile(r"^(/v1/customers/)([^/?]+)")
_ID_SHAPED: Final = re.compile(CUSTOMER_ID_PATTERN.removeprefix("^").removesuffix("$"))


def pseudonymous_path(path: str, key: bytes) -> str:
    """``path`` with the customer id of ``/v1/customers/{id}`` and anything shaped like an
    id replaced by ``~`` and its display pseudonym."""
    path = _CUSTOMER_SEGMENT.sub(
        lambda found: f"{found.group(1)}{MARK}{display(unquote(found.group(2)), key)}", path
    )
    return _ID_SHAPED.sub(lambda found: f"{MARK}{display(found.group(0), key)}", path)


class PseudonymousAccessLog(logging.Filter):
    """Rewrites the path of uvicorn's access records (it never drops one)."""

    def __init__(self, key: bytes) -> None:
        super().__init__()
        self.key = key

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) > _PATH_ARG and isinstance(args[_PATH_ARG], str):
            path = pseudonymous_path(args[_PATH_ARG], self.key)
            record.args = (*args[:_PATH_ARG], path, *args[_PATH_ARG + 1 :])
        return True


def install(key: bytes) -> PseudonymousAccessLog:
    """Put the filter on uvicorn's access logger, replacing one installed before (an app
    built again, with another key, in the same process)."""
    access = logging.getLogger(ACCESS_LOGGER)
    for old in [f for f in access.filters if isinstance(f, PseudonymousAccessLog)]:
        access.removeFilter(old)
    installed = PseudonymousAccessLog(key)
    access.addFilter(installed)
    return installed
