"""Asset checks that are not part of an asset's own code: data quality suites run in the same
run as the asset they judge."""
