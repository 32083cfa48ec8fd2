#!/bin/sh
# Install Debian's `prometheus` package, which the alarm tests start on 127.0.0.1.
#
# Idempotent: does nothing when `prometheus` is already on PATH. Otherwise runs
# `apt-get update` once, then `apt-get install -y --no-install-recommends prometheus`.
# Needs root (or sudo without a password). Exits non-zero with a message when the
# package cannot be installed; the tests then skip (or fail, with
# COALMINE_REQUIRE_SERVICES=1).
#
# The package's own service is not used: on machines with systemd it may start
# one on :9090, which the tests neither need nor touch (they start their own
# process on a free port).
set -eu

if command -v prometheus >/dev/null 2>&1; then
    echo "install-prometheus: $(command -v prometheus) is already installed"
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
else
    echo "install-prometheus: need root (or passwordless sudo) to run apt-get install prometheus" >&2
    exit 1
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-prometheus: apt-get not found; install Debian's 'prometheus' package by hand" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
if ! $SUDO apt-get update; then
    echo "install-prometheus: 'apt-get update' failed (no network or no package sources?)" >&2
    exit 1
fi
if ! $SUDO apt-get install -y --no-install-recommends prometheus; then
    echo "install-prometheus: 'apt-get install prometheus' failed" >&2
    exit 1
fi
if ! command -v prometheus >/dev/null 2>&1; then
    echo "install-prometheus: the package installed but 'prometheus' is not on PATH" >&2
    exit 1
fi
echo "install-prometheus: installed $(prometheus --version 2>&1 | head -n 1)"
