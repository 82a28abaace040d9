#!/usr/bin/env bash
# Builds the local Python base image of the project's Dockerfiles from Debian's own packages,
# for machines that reach apt's mirror but no image registry. Idempotent: an existing image
# of that tag is kept.
#   scripts/build-base-image.sh [TAG]     (default: rakuten-mlops/python:3.11-bookworm)
# Then: make images PYTHON_IMAGE=<TAG> (what `make images` does when python:3.11-slim-bookworm
# cannot be pulled). Needs root (debootstrap) and a running Docker engine.
set -euo pipefail

TAG="${1:-${BASE_IMAGE:-rakuten-mlops/python:3.11-bookworm}}"
DOCKER="${DOCKER:-docker}"

if "$DOCKER" image inspect "$TAG" >/dev/null 2>&1; then
  echo "base image $TAG: present"
  exit 0
fi
command -v debootstrap >/dev/null || { echo "error: debootstrap is missing (apt-get install debootstrap)" >&2; exit 1; }

# The mirror apt already uses (deb822 or one-line sources), else Debian's.
mirror="$({ grep -shoE '^(URIs:|deb) +[^ ]+' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list || true; } \
  | grep -v security | head -1 | awk '{print $2}')"
mirror="${mirror:-http://deb.debian.org/debian}"
root="$(mktemp -d /tmp/rakuten-rootfs.XXXXXX)"
trap 'rm -rf "$root"' EXIT

echo "debootstrap bookworm from $mirror (a few minutes)..."
debootstrap --variant=minbase \
  --include=python3.11,python3.11-venv,python3-pip,ca-certificates,libgomp1,tzdata \
  bookworm "$root" "$mirror" >/dev/null
# What the official python image offers: `python`, UTF-8, no apt caches.
ln -sf /usr/bin/python3.11 "$root/usr/local/bin/python"
ln -sf /usr/bin/python3.11 "$root/usr/local/bin/python3"
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*

tar -C "$root" -c . | "$DOCKER" import \
  --change 'ENV LANG=C.UTF-8 PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'CMD ["python3"]' \
  - "$TAG" >/dev/null
echo "base image $TAG: built ($("$DOCKER" image inspect -f '{{.Size}}' "$TAG" | awk '{printf "%.0f MB", $1/1e6}'))"
