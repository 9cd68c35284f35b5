#!/usr/bin/env bash
# Debian's nix (2.8): enough to parse and evaluate flake.nix against a stand-in
# nixpkgs (tests/test_flake.py). It needs no daemon and no network.
set -euo pipefail
command -v nix >/dev/null && exit 0
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq nix-bin >/dev/null
nix --version
