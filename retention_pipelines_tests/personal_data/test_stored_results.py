"""Data quality results recorded before values were left out lose their examples on upgrade."""

import json

import psycopg

from retention_pipelines.core import database

OLD_RESULTS = [
    {
        "expectation": "expect_column_values_to_be_unique",
        "column": "customer_id",
        "success": False,
        "observed": {
            "unexpected_count": 2,
            "unexpected_percent": 0.04,
            "unexpected_examples": ["7590-VHVEG"],
        },
    },
    {"expectation": "expect_column_mean_to_be_between", "success": True, "observed": 64.8},
]


def test_the_upgrade_drops_the_unexpected_values_earlier_results_kept(database_url: str) -> None:
    (migration,) = [m for m in database.available_migrations() if m.name.endswith("values")]
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "insert into monitoring.data_quality"
            " (snapshot_date, success, expectations, failed, results)"
            " values ('2026-01-01', false, 2, 1, %s)",
            (json.dumps(OLD_RESULTS),),
        )
        conn.execute(migration.sql)  # as the upgrade ran it over rows recorded before
        (results,) = conn.execute("select results from monitoring.data_quality").fetchone()
    assert "7590-VHVEG" not in json.dumps(results)
    assert results[0]["observed"] == {"unexpected_count": 2, "unexpected_percent": 0.04}
    assert results[1] == OLD_RESULTS[1]
