#!/usr/bin/env bash
# Build the environment of an orchestrator that pins packages the service also uses
# (SQLAlchemy, FastAPI, pydantic, ...), apart from the service's .venv:
#   scripts/tool-venv.sh airflow    .venv-airflow from orchestration/airflow/requirements.txt
#   scripts/tool-venv.sh prefect    .venv-prefect from orchestration/prefect/requirements.txt
# Idempotent: does nothing when the requirements did not change since the last build.
# AIRFLOW_VENV / PREFECT_VENV choose another folder.
set -euo pipefail
cd "$(dirname "$0")/.."
tool="${1:?usage: scripts/tool-venv.sh airflow|prefect}"
case "$tool" in
  airflow) VENV="${AIRFLOW_VENV:-.venv-airflow}" ;;
  prefect) VENV="${PREFECT_VENV:-.venv-prefect}" ;;
  *) echo "error: unknown tool $tool (airflow or prefect)" >&2; exit 2 ;;
esac
PYTHON_BIN="${PYTHON_BIN:-python3.11}"
REQUIREMENTS="orchestration/$tool/requirements.txt"
STAMP="$VENV/.installed"
if [[ -f "$STAMP" && "$STAMP" -nt "$REQUIREMENTS" && -x "$VENV/bin/$tool" ]]; then
  exit 0
fi
[[ -x "$VENV/bin/python" ]] || "$PYTHON_BIN" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQUIREMENTS"
touch "$STAMP"
echo "$tool environment ready: $VENV ($("$VENV/bin/$tool" version 2>/dev/null | grep -m1 -oE '[0-9]+\.[0-9]+\.[0-9]+' || true))"
