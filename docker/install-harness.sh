#!/bin/sh
# Install dtensor-harness into an image, the same way for every accelerator.
#
# Called once from each docker/*.Dockerfile, as root, with the source in /src and
# an optional wheelhouse in /wheels (docker/make-wheelhouse.sh fills it on the
# host; with one present, pip never touches the network: the air-gapped path).
#
# Vendor images (VENDOR_TORCH=1) bring their own patched torch: it is asserted
# against the matrix's requirement and pinned, never reinstalled.
#
# Environment (build args): PYTHON, TORCH, PIP_ARGS, TORCH_INDEX, VENDOR_TORCH,
# HARNESS_UID.
set -eu

PYTHON=${PYTHON:-python3}
TORCH=${TORCH:-torch}
VENDOR_TORCH=${VENDOR_TORCH:-0}
HARNESS_UID=${HARNESS_UID:-1000}
VENV=/opt/harness
say() { printf 'install-harness: %s\n' "$*"; }
die() { printf 'install-harness: error: %s\n' "$*" >&2; exit 1; }

if ! command -v "$PYTHON" >/dev/null 2>&1; then
    # A plain Debian/Ubuntu base (debian:bookworm-slim) has no Python yet.
    command -v apt-get >/dev/null 2>&1 || die "$PYTHON not found and no apt-get to install it"
    say "installing $PYTHON with apt-get"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        python3 python3-venv ca-certificates >/dev/null
    rm -rf /var/lib/apt/lists/*
fi

# A venv that also sees the base image's packages, so a vendor torch stays the
# one in use. Where the base python has no venv module, install beside it.
if "$PYTHON" -m venv --system-site-packages "$VENV" 2>/dev/null; then
    PY="$VENV/bin/python"
else
    say "no venv module in $PYTHON; installing into its own site-packages"
    rm -rf "$VENV"
    mkdir -p "$VENV/bin"
    ln -s "$(command -v "$PYTHON")" "$VENV/bin/python"
    PY="$VENV/bin/python"
    export PIP_BREAK_SYSTEM_PACKAGES=1
fi

if [ "$VENDOR_TORCH" = 1 ]; then
    have=$("$PY" -c 'import torch; print(torch.__version__)') ||
        die "VENDOR_TORCH=1 but the base image's $PYTHON cannot import torch"
    want=$(printf '%s' "$TORCH" | sed -n 's/.*==[[:space:]]*\([0-9][0-9.]*\).*/\1/p')
    base=$(printf '%s' "$have" | sed 's/^\([0-9][0-9.]*[0-9]\).*/\1/')
    if [ -n "$want" ] && [ "$base" != "$want" ]; then
        die "the base image has torch $have, the matrix asks for $TORCH: pick the base image whose torch is $want (container.base_image), or change the accelerator's torch in matrix.toml"
    fi
    say "using the base image's torch $have (matrix asks $TORCH)"
    TORCH="torch==$have"  # pinned to what is there, so pip keeps it
    EXTRA=""
else
    EXTRA="numpy"  # torch warns on every import without it; vendor images have it
fi

PIP="$PY -m pip install --no-cache-dir --disable-pip-version-check -q"
if ls /wheels/*.whl >/dev/null 2>&1; then
    say "installing from the wheelhouse (no network)"
    set -- --no-index --find-links /wheels
elif [ "$VENDOR_TORCH" != 1 ]; then
    # torch alone first, with the accelerator's index (PIP_ARGS), so an
    # --index-url there never applies to the harness's other dependencies.
    # shellcheck disable=SC2086  # PIP_ARGS is a list of words
    set -- ${PIP_ARGS:-}
    if [ -n "${TORCH_INDEX:-}" ]; then
        # PyPI's torch for Linux is the CUDA build; this index's +cpu wheel of
        # the same version sorts above it, so pip takes the CPU one.
        set -- "$@" --extra-index-url "$TORCH_INDEX"
    fi
    say "installing torch from the index: pip install $* $TORCH"
    # shellcheck disable=SC2086  # PIP is a command line
    $PIP "$@" "$TORCH"
    set --
else
    set --
fi
# shellcheck disable=SC2086  # PIP is a command line, EXTRA a list of words
$PIP "$@" "$TORCH" $EXTRA /src
"$PY" -c 'import torch, harness; print("install-harness: torch", torch.__version__, "harness", harness.__version__)'

# The non-root user the image runs as (uid 1000, whatever its name: Ubuntu
# based vendor images already have one).
if ! getent passwd "$HARNESS_UID" >/dev/null; then
    useradd --uid "$HARNESS_UID" --user-group --create-home --shell /bin/sh harness
fi
mkdir -p /harness/results /harness/project
chown "$HARNESS_UID" /harness/results
chmod a+r /harness/matrix.toml
rm -rf /src /wheels
