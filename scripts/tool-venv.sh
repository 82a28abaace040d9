#!/usr/bin/env bash
# Build the environment of a tool that pins packages the service also uses (SQLAlchemy,
# FastAPI, pydantic, OpenTelemetry...), apart from the service's .venv:
#   scripts/tool-venv.sh airflow    .venv-airflow from orchestration/airflow/requirements.txt
#   scripts/tool-venv.sh prefect    .venv-prefect from orchestration/prefect/requirements.txt
#   scripts/tool-venv.sh bentoml    .venv-bento from deploy/bentoml/requirements.txt, plus this
#                                   package: the Bento loads the model in-process, so it needs
#                                   the classifier's code and the lock's versions of torch,
#                                   scikit-learn, MLflow... (all but the pins BentoML moves)
# Idempotent: does nothing when the requirements did not change since the last build.
# AIRFLOW_VENV / PREFECT_VENV / BENTO_VENV choose another folder.
set -euo pipefail
cd "$(dirname "$0")/.."
tool="${1:?usage: scripts/tool-venv.sh airflow|prefect|bentoml}"
case "$tool" in
  airflow) VENV="${AIRFLOW_VENV:-.venv-airflow}" REQUIREMENTS="orchestration/airflow/requirements.txt" ;;
  prefect) VENV="${PREFECT_VENV:-.venv-prefect}" REQUIREMENTS="orchestration/prefect/requirements.txt" ;;
  bentoml) VENV="${BENTO_VENV:-.venv-bento}" REQUIREMENTS="deploy/bentoml/requirements.txt" ;;
  *) echo "error: unknown tool $tool (airflow, prefect or bentoml)" >&2; exit 2 ;;
esac
PYTHON_BIN="${PYTHON_BIN:-python3.11}"
STAMP="$VENV/.installed"
LOCK="requirements/lock.txt"
if [[ -f "$STAMP" && "$STAMP" -nt "$REQUIREMENTS" && -x "$VENV/bin/$tool" ]] &&
  [[ $tool != bentoml || ("$STAMP" -nt "$LOCK" && "$STAMP" -nt pyproject.toml) ]]; then
  exit 0
fi
[[ -x "$VENV/bin/python" ]] || "$PYTHON_BIN" -m venv "$VENV"
if [[ $tool == bentoml ]]; then
  # The lock's pins, less those BentoML needs at other versions (certifi, OpenTelemetry).
  constraints="$VENV/constraints.txt"
  grep -vE '^(certifi|opentelemetry[-a-z]*)==' "$LOCK" >"$constraints"
  extra="$(scripts/pip-extra-index.sh "$VENV/bin/python" "$(grep -m1 '^torch==' "$LOCK")" \
    "${TORCH_INDEX_URL-https://download.pytorch.org/whl/cpu}")"
  if [[ -n $extra ]]; then export PIP_EXTRA_INDEX_URL="$extra"; fi
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -c "$constraints" -r "$REQUIREMENTS" -e .
else
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQUIREMENTS"
fi
touch "$STAMP"
dist=$tool
[[ $tool == airflow ]] && dist=apache-airflow
echo "$tool environment ready: $VENV ($("$VENV/bin/python" -c "import importlib.metadata as m; print(m.version('$dist'))"))"
