#!/bin/sh
# Fill docker/wheelhouse with every wheel the images install, so building them
# needs no package index inside the container (air-gapped hosts, CI behind a
# proxy). Run on the host, from anywhere in the repo:
#
#   docker/make-wheelhouse.sh                 # torch==2.13.0 (the matrix's CPU pin)
#   TORCH=torch==2.11.0 docker/make-wheelhouse.sh
#
# The host's Python must match the image's (Debian 12: 3.11) for the few
# compiled wheels; vendor images use only the pure-Python ones. Idempotent:
# wheels already there are reused.
set -eu

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
PYTHON=${PYTHON:-python3}
TORCH=${TORCH:-torch==2.13.0}
OUT=${OUT:-$HERE/wheelhouse}

mkdir -p "$OUT"
# torch pinned in the same command, so an open range never pulls a CUDA build.
"$PYTHON" -m pip wheel -q --disable-pip-version-check --wheel-dir "$OUT" \
    --find-links "$OUT" "$TORCH" numpy "setuptools>=68" wheel "$ROOT"
# The harness itself is installed from the source tree at build time, never
# from a wheel that may be stale.
rm -f "$OUT"/dtensor_harness-*.whl
echo "make-wheelhouse: $(ls "$OUT"/*.whl | wc -l) wheels in $OUT ($(du -sh "$OUT" | cut -f1))"
