"""``make stack``: the compose topology of ``docker/`` run as local processes, no container
engine needed.

The same services as ``docker/compose.yaml`` and the same commands: the Dagster code server
(gRPC), the webserver and the daemon loading their workspace from it, a read-only webserver,
MLflow's server over the platform's registry store, the API, the dashboard, the platform's
exporter and a real Prometheus with the project's scrape config and alert rules, all on the
platform's Postgres (``RETENTION_DATABASE_URL``, else the embedded server).

- :mod:`.services`: what runs (commands, ports, health checks, dependencies) and the config
  files generated for one machine (the workspace, Prometheus' config);
- :mod:`.health`: asking each service whether it serves;
- :mod:`.control`: ``retention stack up|status|down``, and the state file that lets a later
  command find and stop what ``up`` started.
"""
