#!/bin/sh
# Make the CPU image's base (debian:bookworm-slim) locally, for hosts that cannot
# pull from a registry: debootstrap a minimal Debian 12 from an apt mirror and
# import it under the tag the matrix names. Python 3 is included, so building
# the image needs no apt access inside the container.
#
#   sudo docker/make-base-image.sh                       # docker, debian:bookworm-slim
#   sudo docker/make-base-image.sh podman                # podman's image store
#   MIRROR=http://mirror.local/debian sudo docker/make-base-image.sh
#
# Needs root and debootstrap (`apt-get install -y debootstrap`). Idempotent: an
# existing image of that tag is kept (FORCE=1 remakes it).
set -eu

ENGINE=${1:-${HARNESS_CONTAINER_ENGINE:-docker}}
TAG=${TAG:-debian:bookworm-slim}
SUITE=${SUITE:-bookworm}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
INCLUDE=${INCLUDE:-python3,python3-venv,ca-certificates}

if [ "${FORCE:-0}" != 1 ] && "$ENGINE" image inspect "$TAG" >/dev/null 2>&1; then
    echo "make-base-image: $TAG already in $ENGINE; FORCE=1 remakes it"
    exit 0
fi
command -v debootstrap >/dev/null 2>&1 ||
    { echo "make-base-image: needs debootstrap: apt-get install -y debootstrap" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "make-base-image: debootstrap needs root; rerun with sudo" >&2; exit 2; }

ROOTFS=$(mktemp -d "${TMPDIR:-/tmp}/harness-rootfs.XXXXXX")
trap 'rm -rf "$ROOTFS"' EXIT INT TERM
echo "make-base-image: debootstrap $SUITE from $MIRROR into $ROOTFS"
debootstrap --variant=minbase --include="$INCLUDE" "$SUITE" "$ROOTFS" "$MIRROR" >"$ROOTFS.log" 2>&1 ||
    { tail -20 "$ROOTFS.log" >&2; rm -f "$ROOTFS.log"; echo "make-base-image: debootstrap failed" >&2; exit 1; }
rm -f "$ROOTFS.log"
# What a slim image leaves out: apt lists, docs, caches.
rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/*.bin \
    "$ROOTFS"/usr/share/doc/* "$ROOTFS"/usr/share/man/* "$ROOTFS"/usr/share/locale/*
tar -C "$ROOTFS" -c . | "$ENGINE" import --change 'CMD ["bash"]' - "$TAG" >/dev/null
echo "make-base-image: imported $TAG into $ENGINE"
