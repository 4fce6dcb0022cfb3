#!/usr/bin/env bash
# Make a local base image for the edgesim Dockerfile without a container registry.
#
# debootstrap a minimal Debian bookworm (python3, venv, iproute2, nftables, tcpdump, CA
# certificates), add the CA certificates this machine trusts locally
# (/usr/local/share/ca-certificates: a TLS-inspecting proxy's, say, so that pip reaches PyPI from
# inside `docker build` as it does here), and import it with `docker import`. Takes about 3
# minutes. Then, at the repository root:
#
#   EDGESIM_BASE=edgesim-base:bookworm docker compose up --build -d --wait
#
# Usage: scripts/make-base-image.sh [IMAGE_TAG]   (default edgesim-base:bookworm)
# Env:   DEBIAN_MIRROR (default http://deb.debian.org/debian), FORCE=1 to rebuild an existing tag.
set -euo pipefail

TAG=${1:-edgesim-base:bookworm}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
VERSION=2   # what the image holds; an image of an older version is rebuilt
log() { printf 'make-base-image: %s\n' "$*" >&2; }

if [ "${FORCE:-0}" != 1 ] &&
    [ "$(docker image inspect --format '{{index .Config.Labels "org.edgesim.base"}}' "$TAG" 2>/dev/null)" = "$VERSION" ]; then
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
trap 'rm -rf "$ROOTFS" "$ROOTFS.log"' EXIT
log "debootstrap bookworm into $ROOTFS (about 3 minutes)"
debootstrap --variant=minbase \
    --include=python3,python3-venv,iproute2,nftables,tcpdump,ca-certificates \
    bookworm "$ROOTFS" "$MIRROR" >"$ROOTFS.log" 2>&1 || {
        log "debootstrap failed; last lines:"; tail -20 "$ROOTFS.log" >&2; exit 1; }
shopt -s nullglob
local_cas=(/usr/local/share/ca-certificates/*.crt)
if [ ${#local_cas[@]} -gt 0 ]; then
    log "adding ${#local_cas[@]} locally trusted CA certificate(s)"
    cp "${local_cas[@]}" "$ROOTFS/usr/local/share/ca-certificates/"
    chroot "$ROOTFS" update-ca-certificates >/dev/null 2>&1
fi
# Keep the image small: no apt lists or caches.
rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/*
log "docker import -> $TAG"
tar -C "$ROOTFS" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change "LABEL org.edgesim.base=$VERSION" \
    --change 'CMD ["/bin/bash"]' \
    - "$TAG" >/dev/null
log "done: $(docker image inspect --format '{{.Id}} {{.Size}} bytes' "$TAG")"
