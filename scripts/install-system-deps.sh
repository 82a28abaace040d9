#!/usr/bin/env bash
# System packages the tests need (Debian). Idempotent: installs only what is missing,
# runs `apt-get update` only then; needs root for that, otherwise says what to run.
set -euo pipefail

PACKAGES=(
  postgresql-15  # the service store on PostgreSQL (tests/api)
  redis-server   # rate limits shared by several server processes (tests/api/test_ratelimit.py)
)

missing=()
for package in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$package")
  fi
done
if [ "${#missing[@]}" -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "missing system packages: ${missing[*]}" >&2
  echo "install them with: sudo apt-get update && sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
  exit 1
fi
apt-get update
DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
