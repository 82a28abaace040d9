#!/usr/bin/env bash
# Build the Prefect environment `.venv-prefect` from orchestration/prefect/requirements.txt.
# Its own venv: Prefect pins packages (FastAPI, SQLAlchemy, pydantic, ...) the service also
# uses. Idempotent: does nothing when the requirements did not change since the last build.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON_BIN="${PYTHON_BIN:-python3.11}"
VENV="${PREFECT_VENV:-.venv-prefect}"
REQUIREMENTS=orchestration/prefect/requirements.txt
STAMP="$VENV/.installed"
if [[ -f "$STAMP" && "$STAMP" -nt "$REQUIREMENTS" && -x "$VENV/bin/prefect" ]]; then
  exit 0
fi
[[ -x "$VENV/bin/python" ]] || "$PYTHON_BIN" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQUIREMENTS"
touch "$STAMP"
echo "Prefect environment ready: $VENV ($("$VENV/bin/prefect" version 2>/dev/null | head -1 | tr -s ' '))"
