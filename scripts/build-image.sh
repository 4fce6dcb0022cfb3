#!/usr/bin/env bash
# Build the edgesim lab image offline: wheels on the host, then `docker build`.
#
# Usage: scripts/build-image.sh [--base IMAGE] [--tag TAG]
#   --base  base image (default python:3.11-slim; edgesim-base:bookworm from
#           scripts/make-base-image.sh needs no registry)
#   --tag   image tag (default edgesim:latest, the one docker-compose.yml uses)
set -euo pipefail
cd "$(dirname "$0")/.."

BASE=python:3.11-slim
TAG=edgesim:latest
while [ $# -gt 0 ]; do
    case "$1" in
        --base) BASE=$2; shift 2 ;;
        --tag) TAG=$2; shift 2 ;;
        *) echo "usage: $0 [--base IMAGE] [--tag TAG]" >&2; exit 2 ;;
    esac
done
log() { printf 'build-image: %s\n' "$*" >&2; }

PY=${PYTHON:-python3}
rm -rf build/wheels
log "building wheels (the project and its dependencies) into build/wheels"
"$PY" -m pip wheel --quiet --wheel-dir build/wheels .
log "docker build --build-arg BASE_IMAGE=$BASE -t $TAG"
OLD=$(docker image inspect --format '{{.Id}}' "$TAG" 2>/dev/null || true)
docker build --quiet --build-arg "BASE_IMAGE=$BASE" -t "$TAG" . >/dev/null
NEW=$(docker image inspect --format '{{.Id}}' "$TAG")
if [ -n "$OLD" ] && [ "$OLD" != "$NEW" ]; then
    # The image this tag named before, now untagged: remove it unless a container still uses it.
    docker image rm "$OLD" >/dev/null 2>&1 || true
fi
log "done: $TAG ($(docker image inspect --format '{{.Size}}' "$TAG") bytes)"
