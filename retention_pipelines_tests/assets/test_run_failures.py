"""What the command line says of a failed run: the failed step and the first line of the
error its code raised, read through the wrappers Dagster puts around it."""

import dagster as dg

from retention_pipelines.local_runs import _first_failure


def test_an_error_is_read_through_dagsters_wrapper_to_its_own_first_line() -> None:
    @dg.asset
    def customer_lookup() -> None:
        try:
            int("seven")
        except ValueError as error:
            raise LookupError("no customer 7 in the snapshot\nchecked 3 tables") from error

    result = dg.materialize([customer_lookup], raise_on_error=False)
    assert _first_failure(result) == (
        "step customer_lookup failed: LookupError: no customer 7 in the snapshot"
    )


def test_a_failure_says_its_description_without_its_class() -> None:
    @dg.asset
    def landing() -> None:
        raise dg.Failure(description="No landing file for 2026-02-09: expected a file")

    result = dg.materialize([landing], raise_on_error=False)
    assert _first_failure(result) == (
        "step landing failed: No landing file for 2026-02-09: expected a file"
    )
