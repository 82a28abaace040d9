#!/usr/bin/env bash
# Build the Airflow environment `.venv-airflow` from orchestration/airflow/requirements.txt.
# Its own venv: Airflow pins packages (SQLAlchemy, FastAPI, ...) the service also uses.
# Idempotent: does nothing when the requirements did not change since the last build.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON_BIN="${PYTHON_BIN:-python3.11}"
VENV="${AIRFLOW_VENV:-.venv-airflow}"
REQUIREMENTS=orchestration/airflow/requirements.txt
STAMP="$VENV/.installed"
if [[ -f "$STAMP" && "$STAMP" -nt "$REQUIREMENTS" && -x "$VENV/bin/airflow" ]]; then
  exit 0
fi
[[ -x "$VENV/bin/python" ]] || "$PYTHON_BIN" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQUIREMENTS"
touch "$STAMP"
echo "Airflow environment ready: $VENV ($("$VENV/bin/airflow" version 2>/dev/null | tail -1))"
