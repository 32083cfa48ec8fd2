#!/bin/sh
# Install Debian's `chromium` package, which the dashboard's browser test drives
# headless over the DevTools protocol (tests/web/test_ui_browser.py).
#
# Idempotent: does nothing when `chromium` is already on PATH. Otherwise runs
# `apt-get update` once, then `apt-get install -y --no-install-recommends chromium`.
# Needs root (or sudo without a password). Exits non-zero with a message when the
# package cannot be installed; the browser test then skips (or fails, with
# COALMINE_REQUIRE_SERVICES=1).
set -eu

if command -v chromium >/dev/null 2>&1; then
    echo "install-chromium: $(command -v chromium) is already installed"
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
else
    echo "install-chromium: need root (or passwordless sudo) to run apt-get install chromium" >&2
    exit 1
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-chromium: apt-get not found; install Debian's 'chromium' package by hand" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
if ! $SUDO apt-get update; then
    echo "install-chromium: 'apt-get update' failed (no network or no package sources?)" >&2
    exit 1
fi
if ! $SUDO apt-get install -y --no-install-recommends chromium; then
    echo "install-chromium: 'apt-get install chromium' failed" >&2
    exit 1
fi
if ! command -v chromium >/dev/null 2>&1; then
    echo "install-chromium: the package installed but 'chromium' is not on PATH" >&2
    exit 1
fi
echo "install-chromium: installed $(chromium --version 2>&1 | head -n 1)"
