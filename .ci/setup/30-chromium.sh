#!/bin/sh
# Headless Chromium for the certification report test (tests/test_report_html.py
# opens report.html in it). Debian 12's own package; idempotent: a second run
# finds it installed and does nothing.
set -eu

if command -v chromium >/dev/null 2>&1; then
    echo "30-chromium: $(chromium --version 2>/dev/null || echo chromium) already installed"
    exit 0
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
echo "30-chromium: installed $(chromium --version 2>/dev/null || echo chromium)"
