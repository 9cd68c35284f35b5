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
# it does nothing when torch and pyproject.toml are unchanged (FORCE=1 redoes it).
set -eu

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
PYTHON=${PYTHON:-python3}
TORCH=${TORCH:-torch==2.13.0}
OUT=${OUT:-$HERE/wheelhouse}

mkdir -p "$OUT"
# Same torch and same project requirements as last time: nothing to do.
stamp="$TORCH $(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1)"
if [ "$(cat "$OUT/.made-for" 2>/dev/null)" = "$stamp" ] && [ "${FORCE:-0}" != 1 ]; then
    echo "make-wheelhouse: $OUT is up to date ($TORCH); FORCE=1 remakes it"
    exit 0
fi
# torch pinned in the same command, so an open range never pulls a CUDA build.
"$PYTHON" -m pip wheel -q --disable-pip-version-check --wheel-dir "$OUT" \
    --find-links "$OUT" "$TORCH" numpy "setuptools>=68" wheel "$ROOT"
# The harness itself is installed from the source tree at build time, never
# from a wheel that may be stale.
rm -f "$OUT"/dtensor_harness-*.whl
echo "$stamp" >"$OUT/.made-for"
echo "make-wheelhouse: $(ls "$OUT"/*.whl | wc -l) wheels in $OUT ($(du -sh "$OUT" | cut -f1))"
