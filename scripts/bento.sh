#!/usr/bin/env bash
# The BentoML serving path (deploy/bentoml/), in .venv-bento:
#   scripts/bento.sh build         import BENTO_MODEL into BENTOML_HOME's model store (registry
#                                  version files checked against their digest) and build the
#                                  Bento; prints its tag on the last line
#   scripts/bento.sh serve         serve the latest Bento on BENTO_HOST:BENTO_PORT
#   scripts/bento.sh image         the latest Bento as an image, rakuten-mlops/bento (needs a
#                                  Docker engine; deploy/bentoml/Dockerfile on the local base)
# Settings: BENTO_MODEL (default models:/rakuten-product-classifier@champion, the registry of
# MLFLOW_TRACKING_URI; or a model folder), BENTOML_HOME (default .bentoml), BENTO_HOST
# (127.0.0.1), BENTO_PORT (3000), BENTO_VENV (.venv-bento).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${BENTO_VENV:-.venv-bento}"
BENTO_DIR=deploy/bentoml
BENTO_NAME=rakuten_product_classifier
export BENTOML_HOME="${BENTOML_HOME:-$PWD/.bentoml}"
export BENTOML_DO_NOT_TRACK=true

case "${1:-}" in
  build)
    bash scripts/tool-venv.sh bentoml
    echo "importing ${BENTO_MODEL:-models:/rakuten-product-classifier@champion} into $BENTOML_HOME"
    "$VENV/bin/python" "$BENTO_DIR/import_model.py" ${BENTO_MODEL:+"$BENTO_MODEL"}
    # The Bento installs this package's wheel and the exact versions of .venv-bento.
    rm -rf "$BENTO_DIR/build" && mkdir -p "$BENTO_DIR/build/wheels"
    "$VENV/bin/python" -m pip wheel --quiet --disable-pip-version-check --no-deps \
      --wheel-dir "$BENTO_DIR/build/wheels" .
    "$VENV/bin/python" -m pip freeze --exclude-editable --disable-pip-version-check |
      grep -vE '^(bentoml|rakuten-mlops|rakuten_mlops)[=@ ]' >"$BENTO_DIR/build/requirements.txt"
    "$VENV/bin/bentoml" build --output tag "$BENTO_DIR" | tail -1
    ;;
  serve)
    exec "$VENV/bin/bentoml" serve "$BENTO_NAME:latest" \
      --host "${BENTO_HOST:-127.0.0.1}" --port "${BENTO_PORT:-3000}"
    ;;
  image)
    # The Bento with its model (bentoml export), and its Python environment, where
    # deploy/bentoml/Dockerfile takes them.
    rm -rf build/bento && mkdir -p build/bento
    "$VENV/bin/bentoml" export "$BENTO_NAME:latest" "$PWD/build/bento/$BENTO_NAME.bento" >/dev/null
    bento_dir="$("$VENV/bin/bentoml" get "$BENTO_NAME:latest" -o path)"
    mkdir -p build/bento/env && cp -r "$bento_dir/env/python" build/bento/env/python
    "$VENV/bin/python" -c "import bentoml; print(bentoml.__version__)" \
      >build/bento/env/python/bentoml_version.txt
    exec bash scripts/build-images.sh bento
    ;;
  *)
    echo "usage: scripts/bento.sh build|serve|image" >&2
    exit 2
    ;;
esac
