#!/usr/bin/env bash
# Make a local base image for the edgesim Dockerfile without a container registry.
#
# debootstrap a minimal Debian bookworm (python3, venv, iproute2, nftables, CA certificates) and
# import it with `docker import`. Takes about 3 minutes. Then build the lab image with
#   docker build --build-arg BASE_IMAGE=edgesim-base:bookworm -t edgesim:latest .
#
# Usage: scripts/make-base-image.sh [IMAGE_TAG]   (default edgesim-base:bookworm)
# Env:   DEBIAN_MIRROR (default http://deb.debian.org/debian), FORCE=1 to rebuild an existing tag.
set -euo pipefail

TAG=${1:-edgesim-base:bookworm}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
log() { printf 'make-base-image: %s\n' "$*" >&2; }

if [ "${FORCE:-0}" != 1 ] && docker image inspect "$TAG" >/dev/null 2>&1; then
    log "$TAG already exists (FORCE=1 to rebuild)"
    exit 0
fi
if ! command -v debootstrap >/dev/null 2>&1; then
    log "installing debootstrap"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq debootstrap >/dev/null
fi

ROOTFS=$(mktemp -d /tmp/edgesim-rootfs.XXXXXX)
trap 'rm -rf "$ROOTFS"' EXIT
log "debootstrap bookworm into $ROOTFS (about 3 minutes)"
debootstrap --variant=minbase \
    --include=python3,python3-venv,iproute2,nftables,ca-certificates \
    bookworm "$ROOTFS" "$MIRROR" >"$ROOTFS.log" 2>&1 || {
        log "debootstrap failed; last lines:"; tail -20 "$ROOTFS.log" >&2; exit 1; }
rm -f "$ROOTFS.log"
# Keep the image small: no apt lists or caches.
rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/*
log "docker import -> $TAG"
tar -C "$ROOTFS" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["/bin/bash"]' \
    - "$TAG" >/dev/null
log "done: $(docker image inspect --format '{{.Id}} {{.Size}} bytes' "$TAG")"
