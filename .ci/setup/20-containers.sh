#!/bin/sh
# A container engine for the kit's container cells and tests: Debian's docker.io
# with dockerd running, the CPU image's base made locally (no registry answers
# here: debootstrap + import) and a wheelhouse, so the image builds with no index.
# Idempotent: a second run finds each piece in place and does nothing.
set -eu
cd "$(dirname "$0")/../.."
say() { echo "20-containers: $*"; }

missing=""
command -v dockerd >/dev/null 2>&1 || missing="$missing docker.io"
command -v debootstrap >/dev/null 2>&1 || missing="$missing debootstrap"
if [ -n "$missing" ]; then
    say "installing$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # shellcheck disable=SC2086  # a list of package names
    apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

if ! docker info >/dev/null 2>&1; then
    say "starting dockerd (log: /var/log/dockerd.log)"
    nohup dockerd >/var/log/dockerd.log 2>&1 &
    tries=0
    until docker info >/dev/null 2>&1; do
        tries=$((tries + 1))
        if [ "$tries" -gt 60 ]; then
            tail -20 /var/log/dockerd.log >&2
            say "dockerd did not answer in 30 s" >&2
            exit 1
        fi
        sleep 0.5
    done
fi
say "docker $(docker info --format '{{.ServerVersion}}') answering"

docker/make-base-image.sh docker
docker/make-wheelhouse.sh
