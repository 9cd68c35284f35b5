#!/bin/sh
# The one entrypoint of every dtensor-harness image.
#
#   <image> run cpu-2rank -- -k redistribute     -> harness run cpu-2rank ...
#   <image> doctor                                -> harness doctor (the default)
#   <image> bash                                  -> a program on PATH runs as given
set -e
[ "$#" -gt 0 ] || set -- doctor
case "$1" in
    -*) ;;
    *) if command -v "$1" >/dev/null 2>&1; then exec "$@"; fi ;;
esac
exec /opt/harness/bin/python -m harness "$@"
