#!/usr/bin/env bash
# Builds the four images of docker/ (api, mlflow, trainer, airflow) and prints their sizes.
#   scripts/build-images.sh [ROLE ...]        (default: every role; `standins` when needed)
# Role `bento`: deploy/bentoml/Dockerfile, the Bento `scripts/bento.sh image` exported.
# Role `standins`: the third-party services of compose.yaml (postgres, redis, nginx,
# prometheus, alertmanager, s3) from Debian's packages (docker/standins/Dockerfile), for
# machines where the official images cannot be pulled; built by default only there
# (STANDINS=auto|1|0, see scripts/compose.sh).
# Base image: PYTHON_IMAGE (default python:3.11-slim-bookworm). When it is neither present
# nor pullable (no registry reachable), the local Debian base of scripts/build-base-image.sh
# is built (once) and used instead. BuildKit with the engine's own client (no buildx needed).
# Images: ${IMAGE_PREFIX:-rakuten-mlops}/<role>:${IMAGE_TAG:-latest}.
# Each rebuild after a code change leaves the previous runtime layers in BuildKit's cache (GBs
# for api and trainer): the cache is trimmed to BUILD_CACHE_KEEP (default 20GB, the most
# recently used kept, which holds the dependency layers) after the builds; 0 keeps it all.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian's docker.io client drives BuildKit itself; a newer client first on PATH may want
# the buildx plugin, which is not installed here.
DOCKER="${DOCKER:-$(command -v /usr/bin/docker || command -v docker)}"
export DOCKER DOCKER_BUILDKIT=1
PREFIX="${IMAGE_PREFIX:-rakuten-mlops}"
TAG="${IMAGE_TAG:-latest}"
LOCAL_BASE="${LOCAL_BASE_IMAGE:-rakuten-mlops/python:3.11-bookworm}"
roles=("$@")
[ ${#roles[@]} -gt 0 ] || roles=(api mlflow trainer airflow)
STANDIN_ROLES=(postgres redis nginx prometheus alertmanager s3)

"$DOCKER" info >/dev/null 2>&1 || { echo "error: no Docker engine answers (start dockerd)" >&2; exit 1; }

base="${PYTHON_IMAGE:-python:3.11-slim-bookworm}"
if ! "$DOCKER" image inspect "$base" >/dev/null 2>&1 \
    && ! timeout 60 "$DOCKER" pull -q "$base" >/dev/null 2>&1; then
  echo "$base cannot be pulled: using the local Debian base $LOCAL_BASE"
  bash scripts/build-base-image.sh "$LOCAL_BASE"
  base="$LOCAL_BASE"
fi

# Wheels that no index serves (pip's find-links, e.g. the CPU torch the lock pins).
mkdir -p build/wheels
links="$(python3 -m pip config get global.find-links 2>/dev/null || true)"
for folder in $links; do
  [ -d "$folder" ] && cp -u "$folder"/*.whl build/wheels/ 2>/dev/null || true
done
# A CPU torch among them: no need for (nor, often, a route to) PyTorch's own index.
extra=()
if ls build/wheels/torch-*.whl >/dev/null 2>&1; then
  extra=(--build-arg "TORCH_INDEX_URL=")
fi
# The CA bundle pip must trust (a TLS-inspecting network), passed as a build secret.
cert="${PIP_CERT:-$(python3 -m pip config get global.cert 2>/dev/null || true)}"
secret=()
[ -n "$cert" ] && [ -f "$cert" ] && secret=(--secret "id=pipcert,src=$cert")

# `standins` unless the official images are there (or pullable); STANDINS=1 forces them.
if [ "${STANDINS:-auto}" != 0 ] && [ $# -eq 0 ] \
    && { [ "${STANDINS:-auto}" = 1 ] || ! bash scripts/compose.sh official-images-present; }; then
  roles+=(standins)
fi
built=()
for role in "${roles[@]}"; do
  if [ "$role" = standins ]; then
    for target in "${STANDIN_ROLES[@]}"; do
      start=$(date +%s)
      echo "building $PREFIX/standin-$target:$TAG (base $base)..."
      "$DOCKER" build --progress=plain -f docker/standins/Dockerfile --target "$target" \
        --build-arg "PYTHON_IMAGE=$base" "${secret[@]}" -t "$PREFIX/standin-$target:$TAG" . \
        >"build/image-standin-$target.log" 2>&1 \
        || { tail -30 "build/image-standin-$target.log" >&2; exit 1; }
      echo "  done in $(( $(date +%s) - start )) s"
      built+=("standin-$target")
    done
    continue
  fi
  built+=("$role")
  dockerfile="docker/$role.Dockerfile"
  # Role `bento`: the Bento exported to build/bento/ by `scripts/bento.sh image`.
  [ "$role" = bento ] && dockerfile=deploy/bentoml/Dockerfile
  start=$(date +%s)
  echo "building $PREFIX/$role:$TAG (base $base)..."
  "$DOCKER" build --progress=plain -f "$dockerfile" \
    --build-arg "PYTHON_IMAGE=$base" "${extra[@]}" "${secret[@]}" -t "$PREFIX/$role:$TAG" . >"build/image-$role.log" 2>&1 \
    || { tail -30 "build/image-$role.log" >&2; exit 1; }
  echo "  done in $(( $(date +%s) - start )) s"
done
keep="${BUILD_CACHE_KEEP:-20GB}"
if [ "$keep" != 0 ]; then
  # The project's untagged images (replaced by this build), then the cache beyond `keep`.
  for title in rakuten-api rakuten-trainer rakuten-mlflow rakuten-airflow rakuten-bento; do
    "$DOCKER" image prune -f --filter "label=org.opencontainers.image.title=$title" >/dev/null 2>&1 || true
  done
  "$DOCKER" builder prune -f --keep-storage "$keep" >/dev/null 2>&1 || true
fi
echo "images:"
for role in "${built[@]}"; do
  "$DOCKER" image inspect -f '{{.Size}}' "$PREFIX/$role:$TAG" \
    | awk -v name="$PREFIX/$role:$TAG" '{printf "  %-32s %6.0f MB\n", name, $1/1e6}'
done
