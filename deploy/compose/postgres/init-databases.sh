#!/bin/sh
# Creates the extra databases (MLflow backend store, Airflow metadata) beside the service
# database, on the first start of an empty data volume (docker-entrypoint-initdb.d).
set -eu
for db in ${POSTGRES_EXTRA_DBS:-}; do
  echo "creating database $db"
  psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    -c "CREATE DATABASE \"$db\" OWNER \"$POSTGRES_USER\""
done
