#!/bin/sh
# Install one of Debian's packages the tests need: install-debian-package.sh PACKAGE [COMMAND]
#
# Idempotent: does nothing when COMMAND (default: PACKAGE) is already on PATH.
# Otherwise runs `apt-get update` once, then `apt-get install -y
# --no-install-recommends PACKAGE`. Needs root (or sudo without a password).
# Exits non-zero with a message when the package cannot be installed; the tests
# that need it then skip (or fail, with COALMINE_REQUIRE_SERVICES=1).
set -eu

PACKAGE="$1"
COMMAND="${2:-$1}"
TAG="install-$PACKAGE"

if command -v "$COMMAND" >/dev/null 2>&1; then
    echo "$TAG: $(command -v "$COMMAND") is already installed"
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
else
    echo "$TAG: need root (or passwordless sudo) to run apt-get install $PACKAGE" >&2
    exit 1
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "$TAG: apt-get not found; install Debian's '$PACKAGE' package by hand" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
if ! $SUDO apt-get update; then
    echo "$TAG: 'apt-get update' failed (no network or no package sources?)" >&2
    exit 1
fi
if ! $SUDO apt-get install -y --no-install-recommends "$PACKAGE"; then
    echo "$TAG: 'apt-get install $PACKAGE' failed" >&2
    exit 1
fi
if ! command -v "$COMMAND" >/dev/null 2>&1; then
    echo "$TAG: the package installed but '$COMMAND' is not on PATH" >&2
    exit 1
fi
echo "$TAG: installed $("$COMMAND" --version 2>&1 | head -n 1)"
