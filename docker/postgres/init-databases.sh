#!/usr/bin/env bash
# The platform's databases and logins, created once, when the Postgres container starts on an
# empty volume (the image runs /docker-entrypoint-initdb.d/* then, and never again).
#
#   database   owned by   used by
#   retention  retention  the platform: Dagster's runs, the API, the dashboard, the exporter
#   dagster    dagster    Dagster's webservers, daemon and user-code server (DAGSTER_POSTGRES_*)
#   mlflow     mlflow     the MLflow server (its backend store)
#
# The platform reaches MLflow's store and Dagster's runs through its own URL, as it does on a
# laptop (the same server, another database): its login is a member of `dagster` and `mlflow`
# and acts as them in their databases, so whatever it creates there belongs to the owner and
# the other services can use it. It may create roles (the platform keeps the read-only reader
# group and its login itself, on every migration) and nothing else: no superuser, no new
# databases. The MLflow server and Dagster's services can reach nothing but their own database.
#
# Names and passwords come from the environment (docker/compose.yaml passes them from
# docker/.env); psql quotes them, so a password may hold any character.
set -euo pipefail

: "${WAREHOUSE_DB:=retention}" "${WAREHOUSE_USER:=retention}"
: "${DAGSTER_DB:=dagster}" "${DAGSTER_USER:=dagster}"
: "${MLFLOW_DB:=mlflow}" "${MLFLOW_USER:=mlflow}"
: "${WAREHOUSE_PASSWORD:?the warehouse login needs a password}"
: "${DAGSTER_PASSWORD:?the dagster login needs a password}"
: "${MLFLOW_PASSWORD:?the mlflow login needs a password}"

psql -v ON_ERROR_STOP=1 --no-psqlrc --username "${POSTGRES_USER:-postgres}" \
    --dbname "${POSTGRES_DB:-postgres}" \
    -v warehouse_db="$WAREHOUSE_DB" -v warehouse_user="$WAREHOUSE_USER" \
    -v warehouse_password="$WAREHOUSE_PASSWORD" \
    -v dagster_db="$DAGSTER_DB" -v dagster_user="$DAGSTER_USER" \
    -v dagster_password="$DAGSTER_PASSWORD" \
    -v mlflow_db="$MLFLOW_DB" -v mlflow_user="$MLFLOW_USER" \
    -v mlflow_password="$MLFLOW_PASSWORD" <<'SQL'
create role :"dagster_user" login password :'dagster_password';
create role :"mlflow_user" login password :'mlflow_password';
create role :"warehouse_user" login createrole password :'warehouse_password';

create database :"dagster_db" owner :"dagster_user";
create database :"mlflow_db" owner :"mlflow_user";
create database :"warehouse_db" owner :"warehouse_user";

-- Nobody but its owner (and the platform, below) connects to a database of the platform.
revoke all on database :"dagster_db" from public;
revoke all on database :"mlflow_db" from public;
revoke all on database :"warehouse_db" from public;

grant :"dagster_user", :"mlflow_user" to :"warehouse_user";
alter role :"warehouse_user" in database :"dagster_db" set role = :'dagster_user';
alter role :"warehouse_user" in database :"mlflow_db" set role = :'mlflow_user';
SQL
