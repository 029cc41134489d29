"""The prediction API: one customer or a batch scored live with the champion, its reasons, and
the latest nightly score read back; FastAPI over ``core``, never Dagster."""
