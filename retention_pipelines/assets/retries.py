"""Steps that read and write the warehouse try again after a lost database connection.

What these steps write is replaced whole in one transaction (a partition, a date's report),
so an attempt that dies midway leaves nothing behind and the next one starts clean. Only a
transient failure is retried: a connection refused or lost, a server restarting, a deadlock
(:func:`~retention_pipelines.core.database.transient_failure`). Any other error fails the step
at once, with its own message: running it again would fail the same way, only later.

The retry policy shapes the asset definitions, so its settings (``RETENTION_STEP_RETRIES``,
``RETENTION_STEP_RETRY_DELAY_S``) are read when the code location loads.
"""

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import dagster as dg

from retention_pipelines.core.database import transient_failure
from retention_pipelines.settings import get_settings

Compute = TypeVar("Compute", bound=Callable[..., Any])


def database_retry_policy() -> dg.RetryPolicy:
    """Up to ``step_retries`` more attempts, waiting ``step_retry_delay_s`` and then twice as
    long each time; each attempt's connections wait for the server themselves too
    (``RETENTION_DB_CONNECT_RETRY_S``)."""
    settings = get_settings()
    return dg.RetryPolicy(
        max_retries=settings.step_retries,
        delay=settings.step_retry_delay_s,
        backoff=dg.Backoff.EXPONENTIAL,
    )


def retried_only_when_transient(compute: Compute) -> Compute:
    """The asset function, its errors other than transient ones made final: the asset's own
    ``Failure`` as it is, any other error as a ``Failure`` with its message (the error stays
    its cause), neither of them retried."""

    @functools.wraps(compute)
    def attempt(*args: Any, **kwargs: Any) -> Any:
        try:
            return compute(*args, **kwargs)
        except (dg.DagsterError, dg.RetryRequested):
            raise
        except dg.Failure as failure:
            failure.allow_retries = transient_failure(failure)
            raise
        except Exception as error:
            if transient_failure(error):
                raise
            message = str(error) or type(error).__name__
            raise dg.Failure(description=message, allow_retries=False) from error

    return attempt  # type: ignore[return-value]
