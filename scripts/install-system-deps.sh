#!/usr/bin/env bash
# Installs the system packages the tests and the local stack need (Debian/Ubuntu).
# Idempotent: installs only what is missing, runs `apt-get update` only then.
# Usage: scripts/install-system-deps.sh [PACKAGE ...]   (default: every package below)
set -euo pipefail

# Real servers and tools the tests start themselves on 127.0.0.1.
DEFAULT_PACKAGES=(
  redis-server            # shared rate limits (security), the local stack
  prometheus              # scrape + alert rules (`promtool test rules`)
  chromium                # review console browser tests
  chromium-driver
  nginx-light             # load balancer of the local stack
  haproxy
  openjdk-17-jre-headless # Spark batch scoring
  postgresql-15           # service DB and MLflow backend on PostgreSQL
  docker-compose          # `docker-compose config` validates compose.yaml (no engine needed)
  docker.io               # the Docker engine: images built and run (tests/deploy/test_images.py)
  debootstrap             # the local Debian base image when no image registry answers
)
packages=("$@")
[ ${#packages[@]} -gt 0 ] || packages=("${DEFAULT_PACKAGES[@]}")

missing=()
for pkg in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
  [ "$status" = "install ok installed" ] || missing+=("$pkg")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "installing system packages: ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
  else
    echo "error: missing system packages (${missing[*]}); as root run:" >&2
    echo "  apt-get update && apt-get install -y --no-install-recommends ${missing[*]}" >&2
    exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
