#!/usr/bin/env bash
# Creates the project's three databases, each owned by its own login role:
#   airflow   (Airflow metadata + Celery result backend)  role airflow    password $AIRFLOW_DB_PASSWORD
#   mlflow    (MLflow tracking store + model registry)    role mlflow     password $MLFLOW_DB_PASSWORD
#   mlflow_auth (the MLflow server's users and permissions) owned by role mlflow
#   warehouse (the recsys warehouse)                      role warehouse  password $WAREHOUSE_DB_PASSWORD
#
# Run by the official postgres image from /docker-entrypoint-initdb.d, as $POSTGRES_USER against
# $POSTGRES_DB, once: only when the data volume (postgres-data) is empty. To re-run it after changing a
# password in .env, drop the volume (`docker compose down -v`) or ALTER ROLE ... PASSWORD by hand.
#
# Passwords are handed to psql as variables and quoted by psql (:'var'), never pasted into the SQL text.
set -euo pipefail

: "${POSTGRES_USER:?}"
: "${AIRFLOW_DB_PASSWORD:?AIRFLOW_DB_PASSWORD is not set}"
: "${MLFLOW_DB_PASSWORD:?MLFLOW_DB_PASSWORD is not set}"
: "${WAREHOUSE_DB_PASSWORD:?WAREHOUSE_DB_PASSWORD is not set}"

create_db() {
    local name="$1" password="$2"
    echo "recsys: creating role and database '${name}'"
    psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "${POSTGRES_DB:-$POSTGRES_USER}" \
        -v name="$name" -v password="$password" <<-'EOSQL'
	SELECT format('CREATE ROLE %I LOGIN PASSWORD %L', :'name', :'password')
	WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'name')
	\gexec
	SELECT format('ALTER ROLE %I LOGIN PASSWORD %L', :'name', :'password')
	\gexec
	SELECT format('CREATE DATABASE %I OWNER %I', :'name', :'name')
	WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'name')
	\gexec
	SELECT format('REVOKE ALL ON DATABASE %I FROM PUBLIC', :'name')
	\gexec
	SELECT format('GRANT ALL PRIVILEGES ON DATABASE %I TO %I', :'name', :'name')
	\gexec
EOSQL
}

create_db airflow "$AIRFLOW_DB_PASSWORD"
create_db mlflow "$MLFLOW_DB_PASSWORD"
create_db warehouse "$WAREHOUSE_DB_PASSWORD"

echo "recsys: creating database 'mlflow_auth' (owner mlflow)"
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "${POSTGRES_DB:-$POSTGRES_USER}" <<-'EOSQL'
	SELECT 'CREATE DATABASE mlflow_auth OWNER mlflow'
	WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'mlflow_auth')
	\gexec
	REVOKE ALL ON DATABASE mlflow_auth FROM PUBLIC;
	GRANT ALL PRIVILEGES ON DATABASE mlflow_auth TO mlflow;
EOSQL
