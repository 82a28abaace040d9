#!/usr/bin/env bash
# Starts the Docker engine when none answers (apt installs it without starting it), in the
# background, logging to /tmp/rakuten-dockerd.log; its PID goes to /tmp/rakuten-dockerd.pid.
set -euo pipefail
DOCKER="${DOCKER:-$(command -v /usr/bin/docker || command -v docker)}"
if "$DOCKER" info >/dev/null 2>&1; then
  exit 0
fi
command -v dockerd >/dev/null || { echo "error: dockerd is missing (apt-get install docker.io)" >&2; exit 1; }
dockerd >/tmp/rakuten-dockerd.log 2>&1 &
echo $! >/tmp/rakuten-dockerd.pid
for _ in $(seq 1 60); do
  if "$DOCKER" info >/dev/null 2>&1; then
    echo "dockerd started (PID $(cat /tmp/rakuten-dockerd.pid))"
    exit 0
  fi
  sleep 0.5
done
echo "error: dockerd did not answer within 30 s; see /tmp/rakuten-dockerd.log" >&2
exit 1
