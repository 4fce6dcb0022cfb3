#!/usr/bin/env bash
# CI: everyday use, as a new user meets edgesim (issue #18). Runs as root on a fresh machine, after
# scripts/setup.sh --test.
#
# 1. A normal (non-root) user, in a fresh virtual environment of Debian's python3, runs the
#    README's first command in a copy of the checkout, then `edgesim scenario list` from a
#    directory outside it.
# 2. `docker compose up --build -d --wait` on a clean clone, with the local base image (no
#    registry), then `docker compose down`.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf '==> %s\n' "$*"; }
USER_NAME=edgesim-ci

SECONDS=0
say "as a normal user ($USER_NAME), in a fresh venv: the README's first command"
id -u "$USER_NAME" >/dev/null 2>&1 || useradd --create-home --shell /bin/bash "$USER_NAME"
home=$(getent passwd "$USER_NAME" | cut -d: -f6)
rm -rf "$home/edgesim" "$home/venv" "$home/elsewhere" "$home/.local"
git ls-files -z | tar --null -T - -c | { mkdir -p "$home/edgesim" && tar -x -C "$home/edgesim"; }
mkdir -p "$home/elsewhere"
chown -R "$USER_NAME:" "$home/edgesim" "$home/elsewhere"
first=$(sed -n 3p README.md | sed 's/#.*//')   # the README's first command, as written there
case "$first" in *"pip install . && edgesim run"*) ;; *) echo "README line 3 changed: $first" >&2; exit 1 ;; esac
runuser -u "$USER_NAME" -- env -i HOME="$home" PATH=/usr/local/bin:/usr/bin:/bin LANG=C.UTF-8 \
    COLUMNS=80 bash -euo pipefail -c "
        cd ~ && /usr/bin/python3 -m venv venv && . venv/bin/activate
        cd ~/edgesim && $first
        cd ~/elsewhere && edgesim scenario list | tee list.txt
        for name in \$(cd ~/edgesim/scenarios && ls [!_]*.py | sed 's/\\.py\$//; s/_/-/g'); do
            grep -q -- \"\$name\" list.txt || { echo \"scenario list misses \$name\" >&2; exit 1; }
        done
        test -f ~/edgesim/certs/secrets.json       # in a checkout: its certs/, as documented
        edgesim certs >/dev/null                   # elsewhere: the user's data directory
        test -f ~/.local/share/edgesim/certs/secrets.json
        test ! -e ~/elsewhere/certs"

say "normal user: passed in ${SECONDS} s"
SECONDS=0
say "docker compose up --build -d --wait on a clean clone (base edgesim-base:bookworm)"
clean=$(mktemp -d /tmp/edgesim-clean.XXXXXX)
trap 'docker compose --project-directory "$clean" down --remove-orphans --timeout 2 >/dev/null 2>&1 || true; rm -rf "$clean"' EXIT
git clone --quiet . "$clean"
(
    cd "$clean"
    export EDGESIM_BASE=edgesim-base:bookworm
    docker compose up --build -d --wait --wait-timeout 180
    docker compose ps --format '{{.Service}} {{.State}} {{.Health}}'
    docker compose down --remove-orphans --timeout 2
)
say "compose on a clean clone: passed in ${SECONDS} s"
