#!/usr/bin/env bash
# Drives compose.yaml on this host (make compose-up / compose-train / compose-down).
#   scripts/compose.sh up      .env with random secrets when missing, secrets checked, the
#                              default profiles started, every service waited for (healthy)
#   scripts/compose.sh train   the one-shot trainer: sample -> champion in the stack's MLflow
#   scripts/compose.sh down    containers, networks and volumes removed (KEEP_VOLUMES=1 keeps volumes)
#   scripts/compose.sh ps | logs [SERVICE] | official-images-present
# Settings (environment, or .env for COMPOSE_STANDINS): ENV_FILE (.env), COMPOSE_PROFILES_UP
# (core monitoring, + grafana with the official images), COMPOSE_STANDINS=auto|1|0 (auto:
# deploy/compose/standins.yaml when the official images can be neither found nor pulled),
# COMPOSE_WAIT_S (300).
set -euo pipefail
cd "$(dirname "$0")/.."

DOCKER="${DOCKER:-$(command -v /usr/bin/docker || command -v docker)}"
export DOCKER DOCKER_BUILDKIT=1
ENV_FILE="${ENV_FILE:-.env}"
# The environment wins over .env, as in compose itself.
COMPOSE_STANDINS="${COMPOSE_STANDINS:-$( { sed -n 's/^COMPOSE_STANDINS=//p' "$ENV_FILE" 2>/dev/null || true; } | tail -1)}"
CLI="${CLI:-$( [ -x .venv/bin/rakuten-mlops ] && echo .venv/bin/rakuten-mlops || echo rakuten-mlops)}"
if command -v docker-compose >/dev/null 2>&1; then
  compose_cmd=(docker-compose)
else
  compose_cmd=("$DOCKER" compose)
fi

official_images_present() {
  # One probe stands for all: where postgres:15-bookworm is neither here nor pullable, no
  # registry answers.
  local image=postgres:15-bookworm
  "$DOCKER" image inspect "$image" >/dev/null 2>&1 && return 0
  timeout 30 "$DOCKER" pull -q "$image" >/dev/null 2>&1
}

use_standins() {
  case "${COMPOSE_STANDINS:-auto}" in
    1|true|yes) return 0 ;;
    0|false|no) return 1 ;;
    *) ! official_images_present ;;
  esac
}

files=(-f compose.yaml)
profiles=()
images="official images"
setup() {
  wanted="${COMPOSE_PROFILES_UP:-}"
  if use_standins; then
    files+=(-f deploy/compose/standins.yaml)
    images="stand-in images"
    wanted="${wanted:-core monitoring}"
  else
    wanted="${wanted:-core monitoring grafana}"
  fi
  for p in $wanted; do profiles+=(--profile "$p"); done
}

compose() {
  "${compose_cmd[@]}" --env-file "$ENV_FILE" "${files[@]}" "$@"
}

wait_healthy() {
  # Every running container of the project healthy (or without a health check), or fail with
  # the names and the last log lines of those that are not.
  local deadline=$(( $(date +%s) + ${COMPOSE_WAIT_S:-300} )) ids pending state
  while :; do
    ids="$(compose "${profiles[@]}" ps -q)"
    pending=()
    for id in $ids; do
      state="$("$DOCKER" inspect -f '{{.Name}} {{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}} {{.State.ExitCode}}' "$id")"
      set -- $state
      case "$2/$3" in
        running/healthy|running/none) ;;
        exited/*) [ "$4" = 0 ] || { echo "error: ${1#/} exited with code $4:" >&2; "$DOCKER" logs --tail 30 "$id" >&2; return 1; } ;;
        *) pending+=("${1#/}($2/$3)") ;;
      esac
    done
    [ ${#pending[@]} -eq 0 ] && return 0
    if [ "$(date +%s)" -ge "$deadline" ]; then
      echo "error: not healthy after ${COMPOSE_WAIT_S:-300} s: ${pending[*]}" >&2
      return 1
    fi
    sleep 3
  done
}

cmd="${1:-}"
shift || true
case "$cmd" in
  official-images-present)
    official_images_present ;;
  up)
    if [ ! -f "$ENV_FILE" ]; then
      "$CLI" secrets generate-env --env-file "$ENV_FILE" --template .env.example
    fi
    "$CLI" secrets check --env-file "$ENV_FILE"
    setup
    start=$(date +%s)
    compose "${profiles[@]}" up -d "$@"
    wait_healthy
    echo "stack healthy in $(( $(date +%s) - start )) s ($images; profiles: $wanted)"
    compose "${profiles[@]}" ps ;;
  train)
    setup
    start=$(date +%s)
    compose "${profiles[@]}" --profile train run --rm trainer
    echo "trained and registered in $(( $(date +%s) - start )) s" ;;
  down)
    setup
    volumes=(--volumes)
    [ -z "${KEEP_VOLUMES:-}" ] || volumes=()
    compose --profile core --profile monitoring --profile grafana --profile train \
      --profile orchestration down --remove-orphans "${volumes[@]}" ;;
  ps|logs)
    setup
    compose --profile core --profile monitoring --profile grafana "$cmd" "$@" ;;
  *)
    sed -n '2,10p' "$0" >&2
    exit 2 ;;
esac
