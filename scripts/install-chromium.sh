#!/bin/sh
# Install Debian's `chromium` package, which the dashboard's browser test drives
# headless over the DevTools protocol (tests/web/test_ui_browser.py).
# Idempotent; see install-debian-package.sh.
set -eu
exec sh "$(dirname "$0")/install-debian-package.sh" chromium
